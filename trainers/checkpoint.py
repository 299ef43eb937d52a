"""Resumable checkpoints: nothing is lost, nothing half-written is ever read.

Layout (``<out>/checkpoints/step-<N>/``)::

    state.json              step, samples consumed per process, world size, the resolved config
    lora.safetensors        the LoRA (the family's ``save_lora``: kohya keys for SD, ``transformer.*`` + ``.alpha`` for the
                            transformer families; fp32, restores bit-exactly); absent
                            when the objective trains its own modules instead
    <export>                those modules, as the objective exports them (e.g. ``pose_adapter.safetensors``,
                            a pose-adapter file, fp32: restores bit-exactly)
    optimizer.pt            optimizer state_dict (tensors + numbers; read with weights_only=True)
    scheduler.pt            LR scheduler state_dict (same)
    scaler.pt               fp16 only: the GradScaler state (same)
    rng-rank<r>.safetensors per process: torch CPU/CUDA and noise-generator states as tensors, the
                            python and numpy states as JSON in the metadata

A checkpoint is written into ``checkpoints/.step-<N>.tmp`` and renamed into place in one
``os.replace`` (atomic on POSIX), then ``checkpoints/latest`` (the directory's name) is rewritten
atomically, and the LoRA (or the objective's export) is copied atomically to
``<out>/<name>-step<N>.safetensors``. A run killed
at any moment leaves the previous checkpoint and ``latest`` intact; a leftover ``.tmp`` directory
is never read and is removed by the next run.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import atomic_copy, atomic_write_text
from ..core.errors import ConfigError

__all__ = [
    "CHECKPOINT_DIR",
    "LORA_FILE",
    "Checkpoint",
    "checkpoint_dirs",
    "clean_stale",
    "resolve_resume",
    "save_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "restore_trainable",
    "load_torch_state",
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
LORA_FILE = "lora.safetensors"
_STEP_RE = re.compile(r"step-(\d+)")
_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk (``state.json`` read)."""

    path: Path
    step: int
    samples_consumed: int
    world_size: int
    config: dict


def checkpoint_dirs(out: str | os.PathLike) -> list[Checkpoint]:
    """Every complete checkpoint under ``<out>/checkpoints``, oldest step first."""
    root = Path(out) / CHECKPOINT_DIR
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and _STEP_RE.fullmatch(d.name) and (d / "state.json").is_file():
                found.append(load_checkpoint(d))
    return sorted(found, key=lambda c: c.step)


def clean_stale(out: str | os.PathLike) -> list[Path]:
    """Remove temp files/dirs a killed run left in ``<out>/checkpoints`` and ``<out>``; returns them."""
    removed = []
    for folder in (Path(out) / CHECKPOINT_DIR, Path(out)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p)
    return removed


def resolve_resume(out: str | os.PathLike, resume: str) -> Checkpoint | None:
    """The checkpoint ``resume`` names: ``""`` → None, ``"latest"`` → the newest in ``<out>`` (None if
    there is none yet), a path → that checkpoint folder.

    Raises:
        ConfigError: a path that is not a complete checkpoint folder.
    """
    if not resume:
        return None
    if resume == LATEST:
        root = Path(out) / CHECKPOINT_DIR
        pointer = root / LATEST
        if pointer.is_file():
            target = root / pointer.read_text(encoding="utf-8").strip()
            if (target / "state.json").is_file():
                return load_checkpoint(target)
        found = checkpoint_dirs(out)  # pointer missing or stale: fall back to the newest complete one
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        hint = " (a leftover of an interrupted save; use an earlier step)" if path.name.endswith(".tmp") else ""
        raise ConfigError(
            f"resume: must be '', 'latest' or a checkpoint folder containing state.json, got {resume!r}{hint}; "
            f"fix: --set resume=latest or --set resume=<out>/checkpoints/step-<N>"
        )
    return load_checkpoint(path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read ``state.json`` of a checkpoint folder."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return Checkpoint(path=path, step=int(state["step"]), samples_consumed=int(state["samples_consumed"]),
                      world_size=int(state["world_size"]), config=dict(state["config"]))


def save_checkpoint(
    accelerator,
    out: str | os.PathLike,
    *,
    step: int,
    samples_consumed: int,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    generator: torch.Generator,
    config: dict,
    name: str,
    exports: Mapping[str, Callable[[Path], Any]] | None = None,
    publish: str = LORA_FILE,
) -> Path:
    """Write checkpoint ``step`` atomically (collective: every process must call it).

    Args:
        accelerator: the run's ``accelerate.Accelerator`` (barriers, rank, main process).
        out: the run's output folder. step: optimizer steps done.
        samples_consumed: samples each process has taken from its loader (the data position).
        optimizer / lr_scheduler: their states.
        generator: the noise generator of this process. config: resolved config (``to_dict()``).
        name: output file stem; the published file is also copied to ``<out>/<name>-step<N>.safetensors``.
        exports: file name → writer(path) for what trains (the LoRA as ``lora.safetensors``, in the family's
            format; an objective's own modules), called on the main process with a path inside the checkpoint
            folder being written.
        publish: the file of the checkpoint copied to ``<out>/<name>-step<N>.safetensors``.

    Returns:
        The checkpoint folder ``<out>/checkpoints/step-<N>``.
    """
    from safetensors.torch import save_file

    root = Path(out) / CHECKPOINT_DIR
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    rank = accelerator.process_index
    tensors, meta = _rng_state(generator)
    save_file(tensors, str(tmp / f"rng-rank{rank}.safetensors"), metadata=meta)
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        for file_name, write in (exports or {}).items():
            write(tmp / file_name)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        if getattr(accelerator, "scaler", None) is not None:  # fp16: the GradScaler's scale and growth tracker
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        state = {"format": _FORMAT, "step": step, "samples_consumed": samples_consumed,
                 "world_size": accelerator.num_processes, "config": config}
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
        _fsync_dir_files(tmp)
        if final.exists():  # re-saving a step (e.g. the final step of a resumed run): swap it out
            old = root / f".step-{step}.old.tmp"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        atomic_write_text(root / LATEST, final.name + "\n")
        atomic_copy(final / publish, Path(out) / f"{name}-step{step}.safetensors")
    accelerator.wait_for_everyone()
    return final


def restore_trainable(unet: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Copy the checkpoint's LoRA weights into ``unet`` in place (fp32 file: bit-exact).

    Raises:
        ConfigError: the LoRA layers differ (rank, targets or base model changed).
    """
    from .models import apply_lora_state, load_lora_state

    apply_lora_state(unet, load_lora_state(ckpt.path / LORA_FILE).unet)


def load_torch_state(path: Path, device: torch.device | str = "cpu") -> Any:
    """An optimizer/scheduler state_dict, loaded without pickle code execution."""
    return torch.load(path, map_location=device, weights_only=True)


def restore_rng(ckpt: Checkpoint, rank: int, generator: torch.Generator) -> None:
    """Restore torch (CPU, CUDA), numpy, python and the noise generator's states for ``rank``."""
    from safetensors import safe_open

    path = ckpt.path / f"rng-rank{rank}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]),
    }
    return tensors, meta


def _fsync_dir_files(folder: Path) -> None:
    """Flush every file of ``folder`` to disk before the rename publishes it."""
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
