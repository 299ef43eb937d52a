"""What a job is doing, read from its folder alone: ``job.json``, ``run.json``, ``progress.jsonl``, the
LoRA files and whether its process lives. No in-memory state, so a restarted ComfyUI (or any script)
sees exactly what the previous one saw.

States:

- ``starting``: the process was started but has not written ``run.json`` yet;
- ``waiting``: alive, waiting for the device lock (another job of the same root is training);
- ``running``: alive and training; ``cancelling`` once a cancel was requested;
- ``finished``: the process ended with exit code 0, the final LoRA exists (written by this attempt) and
  ``progress.jsonl`` reached the requested steps. Nothing else is ever called finished;
- ``cancelled``: a cancel was requested and the process ended (its last checkpoint is kept);
- ``failed``: anything else that ended: a non-zero exit, a process that vanished without a word, or an
  exit code 0 with nothing trained. ``error`` says why; ``log`` holds the tail of ``train.log``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..progress import read_progress
from .files import JOB_FILE, LOG_FILE, OUT_DIR, RUN_FILE, log_tail, read_json
from .process import pid_alive

__all__ = ["STATES", "ENDED", "JobStatus", "read_status", "read_progress", "lora_files", "training_outcome",
           "job_output", "LORA"]

#: The output kind of the LoRA objectives (others: "scorer", "pose adapter").
LORA = "LoRA"

STATES = ("starting", "waiting", "running", "cancelling", "finished", "cancelled", "failed")
#: States of a job whose process has ended.
ENDED = ("finished", "cancelled", "failed")
_STEP_FILE = re.compile(r"(?P<name>.+)-step(?P<step>\d+)\.safetensors")


@dataclass
class JobStatus:
    """One job as the UI shows it (``to_dict`` is the HTTP/websocket payload).

    Attributes:
        id, state: the job id and one of :data:`STATES`. objective, name: what it trains.
        step, steps: optimizer steps done / requested. loss: the last step's loss (None before step 1).
        eta: seconds left as the trainer estimates (None when unknown). losses: ``[[step, loss], ...]``.
        lora: path of the newest LoRA file ('' when none yet). published: the final LoRA's copy in
        ``models/loras`` ('' until finished). error: why it failed ('' otherwise). log: tail of train.log.
        created: epoch seconds. attempt: 1, +1 per resume. pid: the job process (None once ended).
        data, base: the dataset and base model it trains on. output_kind: what the job writes ("LoRA",
        "scorer", "pose adapter"); ``lora`` and ``published`` are files of that kind.
    """

    id: str
    state: str
    objective: str = ""
    name: str = ""
    step: int = 0
    steps: int = 0
    loss: float | None = None
    eta: float | None = None
    losses: list = field(default_factory=list)
    lora: str = ""
    published: str = ""
    error: str = ""
    log: str = ""
    created: float = 0.0
    attempt: int = 1
    pid: int | None = None
    data: str = ""
    base: str = ""
    output_kind: str = LORA

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def to_dict(self, *, curve: bool = True, log: bool = True) -> dict:
        d = asdict(self)
        if not curve:
            d.pop("losses")
        if not log:
            d.pop("log")
        return d

    def summary(self) -> str:
        """One line, e.g. ``"20251012-…: running, step 2/3, loss 0.6931"``."""
        loss = f", loss {self.loss:.4g}" if isinstance(self.loss, float) and math.isfinite(self.loss) else ""
        return f"{self.id}: {self.state}, step {self.step}/{self.steps}{loss}"


def lora_files(out_dir: str | os.PathLike, name: str) -> dict:
    """The LoRA files of a trainer ``out`` folder: ``{N: path}`` for ``<name>-step<N>.safetensors`` and
    ``{"final": path}`` for ``<name>.safetensors``."""
    found: dict = {}
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return found
    for p in out_dir.iterdir():
        m = _STEP_FILE.fullmatch(p.name)
        if m and m.group("name") == name and p.is_file():
            found[int(m.group("step"))] = p
    final = out_dir / f"{name}.safetensors"
    if final.is_file():
        found["final"] = final
    return found


def job_output(job: dict) -> tuple[str, str]:
    """``(kind, file name)`` of what the job's trainer writes into its ``run/`` folder: the ``output`` the job
    was created with, else a LoRA ``<name>.safetensors``."""
    output = job.get("output") or {}
    name = job.get("settings", {}).get("name", "vitruvian")
    return str(output.get("kind", LORA)), str(output.get("file", f"{name}.safetensors"))


def training_outcome(job_dir: str | os.PathLike, job: dict, since: float) -> tuple[bool, str]:
    """Did the attempt that started at ``since`` train everything it was asked to?

    Returns ``(True, "")`` when the final output (see :func:`job_output`) exists, is not empty, was written
    at or after ``since`` and ``progress.jsonl`` reached ``steps``; else ``(False, reason)``.
    """
    out = Path(job_dir) / OUT_DIR
    steps = int(job.get("settings", {}).get("steps", 0))
    kind, file = job_output(job)
    records = read_progress(out / "progress.jsonl")
    done = records[-1]["step"] if records else 0
    final = out / file
    if not final.is_file() or final.stat().st_size == 0:
        return False, f"no {kind} was written ({final.name} is missing); {done}/{steps} steps in progress.jsonl"
    if final.stat().st_mtime < since - 1.0:
        return False, f"{final.name} is older than this run (left by an earlier one); nothing new was trained"
    if done < steps:
        return False, f"progress.jsonl reached step {done} of {steps}"
    return True, ""


def _newest_output(out: Path, name: str, job: dict) -> str:
    kind, file = job_output(job)
    files = list(lora_files(out, name).values())
    if file != f"{name}.safetensors":  # e.g. a scorer: <name>-scorer.safetensors, no step files
        files = [out / file] if (out / file).is_file() else []
    if not files:
        return ""
    return str(max(files, key=lambda p: p.stat().st_mtime_ns))


def read_status(job_dir: str | os.PathLike, *, log_lines: int = 30) -> JobStatus:
    """The status of the job in ``job_dir`` (see the module docstring for the states).

    Raises:
        FileNotFoundError: ``job_dir`` has no ``job.json``.
    """
    job_dir = Path(job_dir)
    job = read_json(job_dir / JOB_FILE)
    if not job:
        raise FileNotFoundError(f"read_status: job_dir must hold a {JOB_FILE}, got {str(job_dir)!r}")
    run = read_json(job_dir / RUN_FILE)
    settings = job.get("settings", {})
    out = job_dir / OUT_DIR
    name = settings.get("name", "vitruvian")
    records = read_progress(out / "progress.jsonl")
    losses = [[r["step"], r["loss"]] for r in records if isinstance(r.get("loss"), (int, float))]
    last = records[-1] if records else {}
    status = JobStatus(
        id=job.get("id", job_dir.name), state="starting", objective=job.get("objective", ""), name=name,
        step=int(last.get("step", 0)), steps=int(settings.get("steps", 0)),
        loss=float(last["loss"]) if isinstance(last.get("loss"), (int, float)) else None,
        eta=float(last["eta"]) if isinstance(last.get("eta"), (int, float)) else None, losses=losses,
        lora=_newest_output(out, name, job), created=float(job.get("created", 0.0)),
        attempt=int(job.get("attempt", 1)), data=str(settings.get("data", "")), base=str(settings.get("base", "")),
        output_kind=job_output(job)[0],
    )
    this_attempt = run if run.get("attempt") == status.attempt else {}
    cancel = job.get("cancel_requested") is not None
    if job.get("pid") is None:  # created, its process not started yet
        return status
    if pid_alive(job.get("pid"), job.get("pid_started")):
        status.pid = job.get("pid")
        phase = this_attempt.get("phase")
        status.state = ("cancelling" if cancel else "running") if phase in ("training", "done") else (
            "waiting" if phase == "waiting" else "starting")
        return status
    status.eta = None
    status.log = log_tail(job_dir / LOG_FILE, log_lines)
    code = this_attempt.get("returncode")
    if code is None:  # ended without writing its exit: killed hard, crashed, or the machine went down
        status.state = "cancelled" if cancel else "failed"
        if not cancel:
            status.error = ("the job process ended without reporting an exit code (killed, out of memory, or the "
                            "machine restarted); see the log; resume it to continue from its last checkpoint")
        return status
    ok, reason = training_outcome(job_dir, job, float(this_attempt.get("started", 0.0)))
    if code == 0 and ok:
        status.state = "finished"
        status.published = str(this_attempt.get("published", ""))
    elif cancel:
        status.state = "cancelled"
    else:
        status.state = "failed"
        detail = this_attempt.get("error") or reason
        status.error = f"exit code {code}: {detail}" if code != 0 else f"the trainer exited but {reason}"
    return status
