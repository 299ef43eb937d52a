"""The files of a job folder and how they are written: atomically, so a reader never sees half a file.

Layout of ``<jobs root>/<job id>/``::

    job.json      the request (objective, settings, publish path), the pid and its start time, a cancel
                  request; written by the side that starts and cancels jobs (ComfyUI or a script)
    run.json      written only by the job process (``launcher``): phase (waiting → training → done),
                  its pid, start and end times, exit code, the published LoRA, an error line
    train.log     the job process's stdout and stderr
    run/          the trainer's ``out`` folder: progress.jsonl, <name>-step<N>.safetensors,
                  <name>.safetensors, checkpoints/, config.json

Each JSON file has one writer, and every write is a temp file + ``os.replace``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time

from ...core.atomic import atomic_copy, atomic_write_json

__all__ = [
    "JOB_FILE", "RUN_FILE", "LOG_FILE", "OUT_DIR", "DEVICE_LOCK", "JOB_ID_RE", "new_job_id", "check_job_id",
    "write_json", "read_json", "atomic_copy", "log_tail",
]

JOB_FILE = "job.json"
RUN_FILE = "run.json"
LOG_FILE = "train.log"
OUT_DIR = "run"
#: In the jobs root: held by the job that trains, so jobs of one root train one at a time.
DEVICE_LOCK = ".device.lock"
#: ``YYYYmmdd-HHMMSS-xxxxxx`` (local time of creation + 6 random hex digits).
JOB_ID_RE = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


def new_job_id(now: float | None = None) -> str:
    """A fresh id: sortable by creation time, unique by its random tail (checked by ``mkdir``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def check_job_id(job_id, where: str) -> str:
    """``job_id`` if it is a job id, else ValueError (ids are never paths: no ``/``, no ``..``).

    >>> check_job_id("20251012-153000-a1b2c3", "f")
    '20251012-153000-a1b2c3'
    """
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise ValueError(f"{where}: job id must look like 20251012-153000-a1b2c3 (date-time-6 hex digits), "
                         f"got {job_id!r}")
    return job_id


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON atomically (temp file in the same folder, fsync, ``os.replace``)."""
    atomic_write_json(path, data)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or ``{}`` when it is missing or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def log_tail(path: str | os.PathLike, lines: int = 30, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (reading at most ``max_bytes`` from its end); '' when absent.

    Progress-bar carriage returns are resolved (only the text after the last ``\\r`` of a line is kept).
    """
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read()
    except OSError:
        return ""
    text = raw.decode("utf-8", errors="replace")
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    kept = [line for line in kept if line.strip()]
    return "\n".join(kept[-lines:])
