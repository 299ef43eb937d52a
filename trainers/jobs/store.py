"""``JobStore``: training jobs as folders under one root, each run by its own Python process.

A job is created (a new folder with ``job.json``), started (``python -c BOOTSTRAP <pack> 
vitruvian.trainers.jobs.launcher <job dir>``, no shell), watched (:func:`~.status.read_status`),
cancelled (SIGTERM: the trainer saves a checkpoint) and resumed (``resume=latest`` in the same
folder). Everything is on disk, so another process (a restarted ComfyUI) can list, cancel and resume
the same jobs. Job ids are unique by ``mkdir``; read-modify-writes of ``job.json`` hold a per-job lock.

Example (headless)::

    store = JobStore("out/jobs")
    job = store.create("dpo", {"base": "model.safetensors", "data": "pairs/", "steps": 3, "resolution": 64})
    store.start(job)
    status = store.wait(job)          # JobStatus; .state == "finished", .lora is the LoRA file
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

from .files import (
    JOB_FILE, JOB_ID_RE, LOG_FILE, OUT_DIR, check_job_id, new_job_id, read_json, write_json,
)
from .process import PACKAGE, module_command, pid_alive, process_start_time, spawn, terminate
from .status import LORA, JobStatus, lora_files, read_status

__all__ = ["JobStore", "JobNotFoundError", "JobStateError", "LAUNCHER", "PACK_DIR", "format_setting"]

#: The module a job process runs (relative to the package the pack is imported as).
LAUNCHER = f"{PACKAGE}.trainers.jobs.launcher"
#: This pack's folder (the one holding the top ``__init__.py``).
PACK_DIR = Path(__file__).resolve().parents[2]
_REQUIRED = ("base", "data", "steps")


class JobNotFoundError(LookupError):
    """No job with that id under the store's root."""


class JobStateError(RuntimeError):
    """The job is not in a state that allows the request (e.g. resuming a running job)."""


def format_setting(value) -> str:
    """A setting as the trainer's ``--set key=value`` reads it (bools lower-case, lists comma-joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_setting(v) for v in value)
    return str(value)


class JobStore:
    """The jobs under ``root`` (ComfyUI: ``output/vitruvian/jobs``).

    Args:
        root: the jobs folder (created).
        pack_dir: the pack folder the job process imports (default: this pack).
        python: the interpreter for job processes (default: ``sys.executable``, the one running now).
    """

    def __init__(self, root: str | os.PathLike, *, pack_dir: str | os.PathLike | None = None,
                 python: str | None = None):
        self.root = Path(root)
        self.pack_dir = Path(pack_dir) if pack_dir is not None else PACK_DIR
        self.python = python or sys.executable
        self._procs: dict[str, subprocess.Popen] = {}

    # -- finding -----------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The folder of job ``job_id``; ValueError for a malformed id, JobNotFoundError for an unknown one."""
        check_job_id(job_id, "JobStore")
        folder = self.root / job_id
        if not (folder / JOB_FILE).is_file():
            raise JobNotFoundError(f"JobStore: job {job_id!r} does not exist in {self.root}; "
                                   f"existing jobs: {', '.join(self.ids()[:5]) or 'none'}")
        return folder

    def ids(self) -> list[str]:
        """Every job id, newest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if JOB_ID_RE.fullmatch(p.name) and (p / JOB_FILE).is_file()]
        return sorted(found, key=lambda i: (read_json(self.root / i / JOB_FILE).get("created", 0.0), i), reverse=True)

    def latest(self) -> str | None:
        """The id of the newest job, or None when there is none."""
        ids = self.ids()
        return ids[0] if ids else None

    def status(self, job_id: str, *, log_lines: int = 30) -> JobStatus:
        """The job's :class:`~.status.JobStatus` (reaps its process when this store started it)."""
        folder = self.job_dir(job_id)
        proc = self._procs.get(job_id)
        if proc is not None and proc.poll() is not None:
            self._procs.pop(job_id, None)  # pop: ComfyUI asks from its worker and its HTTP threads
        return read_status(folder, log_lines=log_lines)

    def list(self) -> list[JobStatus]:
        """Every job's status, newest first."""
        out = []
        for job_id in self.ids():
            try:
                out.append(self.status(job_id, log_lines=0))
            except (JobNotFoundError, FileNotFoundError):
                continue  # removed meanwhile
        return out

    def lora_path(self, job_id: str, step: int | str = "newest") -> Path:
        """A LoRA file of the job: ``"newest"`` (the last written) or step ``N`` (``<name>-step<N>``, or the
        final file when N is the last step). Raises FileNotFoundError saying what exists."""
        status = self.status(job_id, log_lines=0)
        if status.output_kind != LORA:
            raise JobStateError(f"job {job_id} trains a {status.output_kind} ({status.objective}), not a LoRA; "
                                f"its file is {status.lora or 'not written yet'}"
                                + (f" (published as {status.published})" if status.published else ""))
        files = lora_files(self.job_dir(job_id) / OUT_DIR, status.name)
        if step == "newest":
            if not files:
                raise FileNotFoundError(
                    f"job {job_id} has no LoRA yet ({status.state}, step {status.step}/{status.steps}); the first "
                    "one is written at its first checkpoint (checkpoint_every) or when it finishes")
            return max(files.values(), key=lambda p: p.stat().st_mtime_ns)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ValueError(f"lora_path: step must be 'newest' or a step number >= 1, got {step!r}")
        if step in files:
            return files[step]
        if step == status.steps and "final" in files:
            return files["final"]
        have = sorted(k for k in files if isinstance(k, int))
        raise FileNotFoundError(f"job {job_id} has no LoRA for step {step}; it has steps "
                                f"{', '.join(map(str, have)) or 'none'}{' and the final one' if 'final' in files else ''}")

    # -- creating, starting, stopping --------------------------------------------------------------

    def create(self, objective: str, settings: Mapping, *, publish: str | os.PathLike | None = None,
               exclusive: bool = True, origin: str = "", output: Mapping | None = None) -> str:
        """A new job folder with its ``job.json``; returns the job id. Nothing runs until :meth:`start`.

        Args:
            objective: the trainer objective (``dpo``, ``sft``, ...).
            settings: ``TrainConfig`` keys → values (JSON scalars or lists); must hold base, data and
                steps; ``out`` is set to the job's ``run/`` folder and ``name`` defaults to "vitruvian".
            publish: where the final LoRA is copied when the job finishes (e.g. ``models/loras/vitruvian/
                <name>-<id>.safetensors``); '{id}' in it is replaced by the job id.
            exclusive: wait for the root's device lock, so that jobs train one at a time.
            output: ``{"kind": ..., "file": ...}``, what the trainer writes in ``run/`` when it is not a LoRA
                ``<name>.safetensors`` (a scorer: ``<name>-scorer.safetensors``); checked and published.
        """
        if not isinstance(objective, str) or not objective:
            raise ValueError(f"JobStore.create: objective must be a trainer objective name, got {objective!r}")
        missing = [k for k in _REQUIRED if k not in settings]
        if missing:
            raise ValueError(f"JobStore.create: settings must include {', '.join(_REQUIRED)}, got no {', '.join(missing)}")
        if "out" in settings:
            raise ValueError("JobStore.create: settings must not set out; the store puts it in the job's folder")
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            job_id = new_job_id()
            try:
                (self.root / job_id).mkdir()
                break
            except FileExistsError:
                continue
        folder = self.root / job_id
        values = {"name": "vitruvian", **dict(settings), "out": str((folder / OUT_DIR).resolve())}
        write_json(folder / JOB_FILE, {
            "format": 1, "id": job_id, "created": time.time(), "objective": objective, "settings": values,
            "publish": str(publish).replace("{id}", job_id) if publish else "", "exclusive": bool(exclusive),
            "origin": origin, "output": dict(output) if output else None, "attempt": 1, "pid": None, "pid_started": None, "cancel_requested": None,
        })
        return job_id

    def start(self, job_id: str, *, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start the job's process (the launcher; see ``launcher``) and record its pid and start time."""
        folder = self.job_dir(job_id)
        with self._locked(folder):
            job = read_json(folder / JOB_FILE)
            if pid_alive(job.get("pid"), job.get("pid_started")):
                raise JobStateError(f"JobStore.start: job {job_id} is already running (pid {job['pid']})")
            argv = module_command(LAUNCHER, str(folder.resolve()), pack_dir=self.pack_dir, python=self.python)
            with open(folder / LOG_FILE, "ab") as log:
                log.write(f"\n=== attempt {job.get('attempt', 1)} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            proc = spawn(argv, cwd=folder, log_path=folder / LOG_FILE, env=dict(env) if env is not None else None)
            job.update(pid=proc.pid, pid_started=process_start_time(proc.pid))
            write_json(folder / JOB_FILE, job)
        self._procs[job_id] = proc
        return proc

    def cancel(self, job_id: str) -> JobStatus:
        """Ask the job to stop: SIGTERM (the trainer ends its step, saves a checkpoint and exits; a job
        still waiting or loading exits at once). Returns the status right after; an ended job is unchanged."""
        folder = self.job_dir(job_id)
        with self._locked(folder):
            job = read_json(folder / JOB_FILE)
            if not pid_alive(job.get("pid"), job.get("pid_started")) and job.get("pid") is not None:
                return self.status(job_id)
            job["cancel_requested"] = time.time()
            write_json(folder / JOB_FILE, job)
        terminate(job.get("pid"), job.get("pid_started"))
        return self.status(job_id)

    def resume(self, job_id: str, *, steps: int | None = None, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start an ended job again in its folder with ``resume=latest`` (from its newest checkpoint);
        ``steps`` raises the step target. A finished job only resumes with more steps."""
        folder = self.job_dir(job_id)
        status = self.status(job_id, log_lines=0)
        if not status.ended:
            raise JobStateError(f"JobStore.resume: job {job_id} is {status.state}; only an ended job can resume "
                                "(cancel it first)")
        with self._locked(folder):
            job = read_json(folder / JOB_FILE)
            settings = job["settings"]
            if steps is not None:
                if not isinstance(steps, int) or steps < status.step:
                    raise ValueError(f"JobStore.resume: steps must be an int >= the {status.step} steps already "
                                     f"done, got {steps!r}")
                settings["steps"] = steps
            if status.state == "finished" and int(settings["steps"]) <= status.step:
                raise JobStateError(f"JobStore.resume: job {job_id} already finished its {status.step} steps; pass "
                                    "more steps to train further")
            settings["resume"] = "latest"
            job.update(attempt=int(job.get("attempt", 1)) + 1, cancel_requested=None, pid=None, pid_started=None)
            write_json(folder / JOB_FILE, job)
        return self.start(job_id, env=env)

    def wait(self, job_id: str, *, poll: float = 0.5, timeout: float | None = None,
             on_update: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Poll until the job ends (or ``timeout`` seconds pass: TimeoutError); ``on_update(status)`` is
        called at each poll and may raise to stop waiting (the job keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if on_update is not None:
                on_update(status)
            if status.ended:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"JobStore.wait: job {job_id} did not end within {timeout:.0f} s "
                                   f"({status.summary()})")
            time.sleep(poll)

    @contextmanager
    def _locked(self, folder: Path):
        from filelock import FileLock

        with FileLock(str(folder / ".job.lock"), timeout=30):
            yield
