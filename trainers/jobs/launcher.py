"""The job process: ``python -c BOOTSTRAP <pack> vitruvian.trainers.jobs.launcher <job dir>``.

1. Writes ``run.json`` (phase ``waiting``) and, for an exclusive job, waits for the root's device lock,
   so the jobs of one root train one at a time (a second job queued while one trains waits its turn).
2. Phase ``training``: runs the trainer CLI (``trainers.cli.main``) in this process with the job's objective and
   settings as ``--set key=value``. A cancel (SIGTERM; on Windows ``CTRL_BREAK_EVENT``, arriving as SIGBREAK) is only
   recorded by the handler (:class:`~vitruvian.core.signals.StopRequest`): while waiting for the lock it
   ends the wait, recorded as exit code 143; while the trainer loads, the trainer's own handler adopts it
   and stops after its first step with a checkpoint; while it trains, it finishes the step, checkpoints
   and exits 0; afterwards the launcher still publishes and writes ``run.json``.
3. Checks the outcome (:func:`~.status.training_outcome`: never "finished" when nothing trained),
   copies the final LoRA atomically to the job's ``publish`` path, and writes ``run.json`` (phase
   ``done``, exit code, error, published path). Exits with the trainer's code.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ...core.signals import StopRequest
from .files import DEVICE_LOCK, JOB_FILE, RUN_FILE, atomic_copy, read_json, write_json
from .status import job_output, training_outcome

__all__ = ["main", "trainer_argv"]

_TERMINATED = 128 + 15
#: What a job's cancel sends: SIGTERM, or on Windows CTRL_BREAK_EVENT, which arrives as SIGBREAK.
CANCEL_SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGBREAK", None)) if s is not None)


def trainer_argv(job: dict) -> list[str]:
    """``[objective, "--set", "k=v", ...]`` for the trainer CLI, from ``job.json``."""
    from .store import format_setting

    argv = [job["objective"]]
    for key, value in job["settings"].items():
        argv += ["--set", f"{key}={format_setting(value)}"]
    return argv


def _device_lock(folder: Path):
    from filelock import FileLock

    return FileLock(str(folder.parent / DEVICE_LOCK))


def _acquire(lock, stop: StopRequest, poll: float = 0.2) -> bool:
    """Wait for ``lock`` (None: no lock) until it is ours (True) or a cancel was recorded (False)."""
    from filelock import Timeout

    while not stop.signum:
        if lock is None:
            return True
        try:
            lock.acquire(timeout=poll)
            return True
        except Timeout:
            continue
    return False


def _run_trainer(job: dict) -> int:
    """The trainer CLI in this process (imported here: waiting for the lock needs no torch); its exit status."""
    from ..cli import main as train_cli

    return train_cli(trainer_argv(job))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m vitruvian.trainers.jobs.launcher <job folder>", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    job = read_json(folder / JOB_FILE)
    if not job:
        print(f"launcher: job folder must hold {JOB_FILE}, got {str(folder)!r}", file=sys.stderr)
        return 2
    stop = StopRequest(CANCEL_SIGNALS)  # records only; the trainer adopts a cancel that came while it loaded
    stop.install()
    run = {"attempt": job.get("attempt", 1), "pid": os.getpid(), "started": time.time(), "phase": "waiting"}
    write_json(folder / RUN_FILE, run)
    code, error = 1, ""
    try:
        lock = _device_lock(folder) if job.get("exclusive", True) else None
        if lock is not None:
            print(f"launcher: waiting for {lock.lock_file} (one training job at a time)", flush=True)
        if _acquire(lock, stop):
            try:
                run.update(phase="training", training_started=time.time())
                write_json(folder / RUN_FILE, run)
                print(f"launcher: training job {job.get('id')} (attempt {run['attempt']})", flush=True)
                code = _run_trainer(job)
            finally:
                if lock is not None:
                    lock.release()
        else:
            code, error = _TERMINATED, f"stopped by {stop.name} before training started"
            print(f"launcher: {error}", flush=True)
    except BaseException as e:  # a crash inside the trainer: keep the traceback in the log, and say it
        traceback.print_exc()
        code, error = 1, f"{type(e).__name__}: {e}"
    finally:
        stop.uninstall()
    published = ""
    ok, reason = training_outcome(folder, job, run["started"])
    if code == 0 and ok and job.get("publish"):
        try:
            kind, file = job_output(job)
            published = str(atomic_copy(Path(job["settings"]["out"]) / file, job["publish"]))
            print(f"launcher: published {published}", flush=True)
        except OSError as e:
            code, error = 1, f"could not copy the {kind} to {job['publish']}: {e}"
    elif code != 0 and not error:
        error = _last_error_line(folder)
    elif code == 0 and not ok:
        error = reason
    run.update(phase="done", returncode=code, finished=time.time(), error=error, published=published)
    write_json(folder / RUN_FILE, run)
    return code


def _last_error_line(folder: Path) -> str:
    """The trainer CLI's ``vitruvian-train: error: ...`` message (with its continuation lines), else the
    last line of the log (a traceback's exception line)."""
    from .files import LOG_FILE, log_tail

    lines = log_tail(folder / LOG_FILE, 200).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("vitruvian-train: error:")]
    if starts:
        return "\n".join(lines[starts[-1]:starts[-1] + 20]).removeprefix("vitruvian-train: error: ")
    return lines[-1].strip() if lines else "the trainer failed without a message; see the log"


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    raise SystemExit(main())
