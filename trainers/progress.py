"""Training progress: ``<out>/progress.jsonl`` (one JSON object per optimizer step) and a tqdm bar.

Each line: ``{"step", "loss", "lr", "metrics": {...}, "seconds", "eta"}`` where ``seconds`` is that
step's wall time and ``eta`` the estimated seconds left (mean of the last 20 step times × steps left).
Lines are appended and flushed one at a time, so a killed run leaves at most one torn last line,
which :func:`truncate_progress` drops on resume together with the steps after the checkpoint.

On a terminal the bar shows the step, loss and ETA; otherwise (a log file, CI) a plain line is
printed every ``log_every`` steps. :class:`PassProgress` is the same for a pass before the first step
(the latent cache): a tqdm bar on a terminal, else a line at every tenth of the pass.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from pathlib import Path

from ..core.atomic import atomic_write_text

__all__ = ["PROGRESS_FILE", "Progress", "PassProgress", "read_progress", "truncate_progress"]

PROGRESS_FILE = "progress.jsonl"


def read_progress(path: str | os.PathLike) -> list[dict]:
    """The well-formed records of a progress file (a torn last line is skipped)."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:  # missing, or unreadable for a moment
        return records
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
    return records


def truncate_progress(path: str | os.PathLike, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (atomic rewrite); no file → nothing to do."""
    p = Path(path)
    if not p.exists():
        return
    keep = [r for r in read_progress(p) if r["step"] <= last_step]
    atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in keep))


class Progress:
    """Writes progress.jsonl and drives the bar; only the main process should have ``enabled=True``.

    Args:
        path: the progress.jsonl file (appended to).
        total: the last step of the run. start: steps already done (a resumed run).
        enabled: False on non-main processes (writes and prints nothing).
        log_every: print period in steps when stderr is not a terminal.
    """

    def __init__(self, path: str | os.PathLike, *, total: int, start: int = 0, enabled: bool = True,
                 log_every: int = 10, desc: str = "train"):
        self.path = Path(path)
        self.total = total
        self.enabled = enabled
        self.log_every = max(1, int(log_every))
        self._times: deque[float] = deque(maxlen=20)
        self._file = None
        self._bar = None
        if not enabled:
            return
        self._file = open(self.path, "a", encoding="utf-8")
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, step: int, *, loss: float, lr: float, metrics: dict[str, float], seconds: float) -> dict:
        """Record optimizer step ``step`` (1-based); returns the JSON record written."""
        self._times.append(seconds)
        eta = (self.total - step) * (sum(self._times) / len(self._times))
        record = {
            "step": step,
            "loss": _finite_or_str(loss),
            "lr": lr,
            "metrics": {k: _finite_or_str(v) for k, v in metrics.items()},
            "seconds": round(seconds, 6),
            "eta": round(eta, 3),
        }
        if not self.enabled:
            return record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            self._bar.update(1)
        elif step % self.log_every == 0 or step == self.total:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"step {step}/{self.total} loss={loss:.6g} lr={lr:.3g} {shown} "
                  f"({seconds:.2f}s/step, eta {_clock(eta)})", flush=True)
        return record

    def write(self, message: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None


class PassProgress:
    """Progress of a pass over ``total`` items before training; prints nothing when not ``enabled``.

    A tqdm bar when stderr is a terminal; otherwise ``"<desc>: i/total (s elapsed)"`` lines at every tenth.
    """

    def __init__(self, total: int, *, desc: str, enabled: bool = True, unit: str = "item"):
        import time

        self.total, self.desc, self.enabled, self.done = max(1, int(total)), desc, enabled, 0
        self._clock, self._t0, self._next = time.perf_counter, time.perf_counter(), 0
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (self.done >= self._next or self.done >= self.total):
            print(f"{self.desc}: {self.done}/{self.total} ({self._clock() - self._t0:.1f} s)", flush=True)
            self._next = self.done + max(1, self.total // 10)

    def close(self) -> float:
        """Close the bar; returns the seconds the pass took."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return self._clock() - self._t0


def _finite_or_str(x: float):
    """JSON has no NaN/inf: write those as strings ("nan", "inf") so the file stays valid JSON."""
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
