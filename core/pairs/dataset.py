"""Preference pairs appended to a trainer dataset (``metadata.jsonl`` + images).

:func:`append_pairs` stores each image once, as ``images/<content hash>.png`` (the hash of the 8-bit
pixels that are saved, so the same image is the same file however often it comes), quality maps as
16-bit greyscale ``quality/<hash>.png``, and appends one record per new pair to ``metadata.jsonl`` in the
trainer's schema (``vitruvian.trainers.data.records``): prompt, chosen, rejected, chosen_source,
face_boxes / hand_boxes as ``{"chosen": [...], "rejected": [...]}`` (MPD) and chosen_quality /
rejected_quality (PatchDPO). A pair already in the file (same prompt, chosen and rejected content) is
skipped. Files are written before the record that names them, each through a temp file +
``os.replace``, and ``metadata.jsonl`` is replaced whole under a lock: a reader (a trainer starting now)
sees the old file or the new one, and two writers never lose each other's records.

Shape:
    - images: ``(3, H, W)`` float in [0, 1]; quality maps: ``(H, W)`` float in [0, 1].
    - boxes: ``(x0, y0, x1, y1)`` pixels of their image.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..atomic import atomic_path, atomic_write_text

__all__ = ["SOURCES", "METADATA", "PairRecord", "AppendResult", "image_hash", "append_pairs"]

#: Where a winner came from (the trainer's ``chosen_source``).
SOURCES = ("generated", "real", "reconstructed")
METADATA = "metadata.jsonl"


@dataclass
class PairRecord:
    """One pair to write.

    Attributes:
        prompt: the prompt both images answer. chosen, rejected: ``(3, H, W)`` float in [0, 1].
        chosen_source: one of :data:`SOURCES` ("real" for HG-DPO winners).
        face_boxes, hand_boxes: ``{"chosen": [(x0, y0, x1, y1), ...], "rejected": [...]}`` in each image's
            pixels (MPD), or None.
        chosen_quality, rejected_quality: ``(H, W)`` float in [0, 1] patch-quality maps (PatchDPO), or None.
    """

    prompt: str
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_source: str = "generated"
    face_boxes: dict | None = None
    hand_boxes: dict | None = None
    chosen_quality: torch.Tensor | None = None
    rejected_quality: torch.Tensor | None = None


@dataclass
class AppendResult:
    """What :func:`append_pairs` did: ``added`` new records (also in ``records``), ``duplicates`` skipped,
    ``total`` records now in the file, ``folder`` the dataset."""

    folder: Path
    added: int = 0
    duplicates: int = 0
    total: int = 0
    records: list = field(default_factory=list)


def _to_uint8(image: torch.Tensor, what: str):
    import numpy as np

    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"append_pairs: {what} must be a (3, H, W) image in [0, 1], got {shape}")
    if not torch.isfinite(image).all():
        raise ValueError(f"append_pairs: {what} must be finite, got NaN or inf")
    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(arr.permute(1, 2, 0).numpy())


def image_hash(image: torch.Tensor) -> str:
    """20 hex digits of the SHA-256 of the 8-bit image as saved (``(3, H, W)`` in [0, 1]); equal for equal
    pixels.

    >>> image_hash(torch.zeros(3, 2, 2)) == image_hash(torch.zeros(3, 2, 2) + 1e-4)
    True
    """
    arr = _to_uint8(image, "image")
    return hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()[:20]


def _store_image(folder: Path, image: torch.Tensor, what: str) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    arr = _to_uint8(image, what)
    name = f"images/{hashlib.sha256(f'{arr.shape}'.encode() + arr.tobytes()).hexdigest()[:20]}.png"
    path = folder / name
    if not path.is_file():
        with atomic_path(path) as tmp:
            Image.fromarray(arr, "RGB").save(tmp, format="PNG")
    return name, (arr.shape[1], arr.shape[0])


def _store_quality(folder: Path, q: torch.Tensor, what: str) -> str:
    import numpy as np
    from PIL import Image

    if not isinstance(q, torch.Tensor) or q.ndim != 2:
        shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"append_pairs: {what} must be an (H, W) quality map in [0, 1], got {shape}")
    q = q.detach().float().cpu()
    if not torch.isfinite(q).all() or q.min() < 0 or q.max() > 1:
        raise ValueError(f"append_pairs: {what} values must be in [0, 1], got [{float(q.min())}, {float(q.max())}]")
    arr = np.ascontiguousarray((q * 65535).round().numpy().astype(np.uint16))
    name = f"quality/{hashlib.sha256(f'{arr.shape}'.encode() + arr.tobytes()).hexdigest()[:20]}.png"
    path = folder / name
    if not path.is_file():
        with atomic_path(path) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")
    return name


def _boxes(boxes, size: tuple[int, int], what: str) -> list[list[float]]:
    """Boxes clipped to the image, rounded to 1/1000 px; degenerate ones dropped."""
    w, h = size
    out = []
    for box in boxes or ():
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, y0, x1, y1 = (round(min(max(v, 0.0), lim), 3) for v, lim in ((x0, w), (y0, h), (x1, w), (y1, h)))
        if x1 > x0 and y1 > y0:
            out.append([x0, y0, x1, y1])
    return out


def _record(folder: Path, pair: PairRecord, index: int) -> dict:
    where = f"pair {index}"
    if not isinstance(pair.prompt, str):
        raise ValueError(f"append_pairs: {where} prompt must be a string, got {type(pair.prompt).__name__}")
    if pair.chosen_source not in SOURCES:
        raise ValueError(f"append_pairs: {where} chosen_source must be one of {', '.join(SOURCES)}, "
                         f"got {pair.chosen_source!r}")
    chosen, chosen_size = _store_image(folder, pair.chosen, f"{where} chosen")
    rejected, rejected_size = _store_image(folder, pair.rejected, f"{where} rejected")
    record = {"prompt": pair.prompt, "chosen": chosen, "rejected": rejected, "chosen_source": pair.chosen_source}
    for key, boxes in (("face_boxes", pair.face_boxes), ("hand_boxes", pair.hand_boxes)):
        if boxes:
            sides = {"chosen": _boxes(boxes.get("chosen"), chosen_size, key),
                     "rejected": _boxes(boxes.get("rejected"), rejected_size, key)}
            if sides["chosen"] or sides["rejected"]:
                record[key] = sides
    for key, q in (("chosen_quality", pair.chosen_quality), ("rejected_quality", pair.rejected_quality)):
        if q is not None:
            record[key] = _store_quality(folder, q, f"{where} {key}")
    return record


def _pair_key(record: dict) -> tuple:
    return record.get("prompt"), record.get("chosen"), record.get("rejected")


def append_pairs(folder: str | os.PathLike, pairs: Sequence[PairRecord]) -> AppendResult:
    """Store the pairs' images and append their records to ``<folder>/metadata.jsonl`` (created).

    A pair whose chosen and rejected images are identical, or that the file already holds, is counted
    in ``duplicates`` and not written. Existing lines are kept byte for byte (even malformed ones: the
    trainer's validation reports those).
    """
    from filelock import FileLock  # declared in pyproject.toml and requirements.txt

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if any(p.chosen_quality is not None or p.rejected_quality is not None for p in pairs):
        (folder / "quality").mkdir(exist_ok=True)
    result = AppendResult(folder=folder)
    meta = folder / METADATA
    with FileLock(str(folder / f".{METADATA}.lock"), timeout=60):
        old = meta.read_text(encoding="utf-8") if meta.is_file() else ""
        seen = set()
        for line in old.splitlines():
            try:
                seen.add(_pair_key(json.loads(line)))
            except (ValueError, AttributeError):
                continue
        new_lines = []
        for i, pair in enumerate(pairs):
            record = _record(folder, pair, i)
            key = _pair_key(record)
            if record["chosen"] == record["rejected"] or key in seen:
                result.duplicates += 1
                continue
            seen.add(key)
            new_lines.append(json.dumps(record))
            result.records.append(record)
        if new_lines:
            text = old if not old or old.endswith("\n") else old + "\n"
            text += "".join(line + "\n" for line in new_lines)
            atomic_write_text(meta, text)
        result.added = len(new_lines)
        result.total = sum(1 for line in (meta.read_text(encoding="utf-8") if meta.is_file() else "").splitlines()
                           if line.strip())
    return result
