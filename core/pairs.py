"""Preference pairs from scored images, appended to a trainer dataset (``metadata.jsonl`` + images).

Choosing: :func:`choose_pairs` turns one batch's per-image scores into (winner, loser) index pairs;
:func:`choose_real_pairs` makes real photos the winners against the worst generated images (HG-DPO);
:func:`choose_same_index_pairs` pairs real image i with generated image i, e.g. a real face crop with
the same crop inpainted at low quality (the FaceScore scorer's pairs).

Writing: :func:`append_pairs` stores each image once, as ``images/<content hash>.png`` (the hash of
the 8-bit pixels that are saved, so the same image is the same file however often it comes), quality
maps as 16-bit greyscale ``quality/<hash>.png``, and appends one record per new pair to
``metadata.jsonl`` in the trainer's schema (``vitruvian.trainers.data.records``): prompt, chosen,
rejected, chosen_source, face_boxes / hand_boxes as ``{"chosen": [...], "rejected": [...]}`` (MPD) and
chosen_quality / rejected_quality (PatchDPO). A pair already in the file (same prompt, chosen and
rejected content) is skipped. Files are written before the record that names them, each through a
temp file + ``os.replace``, and ``metadata.jsonl`` is replaced whole under a lock: a reader (a trainer
starting now) sees the old file or the new one, and two writers never lose each other's records.

Shape:
    - images: ``(3, H, W)`` float in [0, 1]; quality maps: ``(H, W)`` float in [0, 1].
    - boxes: ``(x0, y0, x1, y1)`` pixels of their image.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .atomic import atomic_path, atomic_write_text

__all__ = ["PAIRINGS", "SAME_INDEX", "SOURCES", "PairRecord", "AppendResult", "choose_pairs", "choose_real_pairs",
           "choose_same_index_pairs", "image_hash", "append_pairs", "METADATA"]

#: ``extremes``: i-th best against i-th worst (disjoint pairs); ``best_vs_rest``: the best against each other.
PAIRINGS = ("extremes", "best_vs_rest")
#: Real image i against generated image i (:func:`choose_same_index_pairs`); needs real images.
SAME_INDEX = "same_index"
#: Where a winner came from (the trainer's ``chosen_source``).
SOURCES = ("generated", "real", "reconstructed")
METADATA = "metadata.jsonl"


# ----------------------------------------------------------------------------------------- choosing


def _ranked(scores: Sequence[float | None], higher_is_better: bool, where: str) -> list[int]:
    """Indices of the scored images, best first (ties keep batch order)."""
    values = list(scores)
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{where}: scores must be finite numbers or None, got {v!r} at index {i}")
    scored = [i for i, v in enumerate(values) if v is not None]
    return sorted(scored, key=lambda i: -values[i] if higher_is_better else values[i])


def choose_pairs(scores: Sequence[float | None], *, pairing: str = "extremes", max_pairs: int = 0,
                 min_margin: float = 0.0, higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(winner, loser)`` batch indices from per-image scores (None = not scored: never paired).

    Args:
        scores: one value per image of the batch.
        pairing: one of :data:`PAIRINGS`.
        max_pairs: at most this many pairs (0 = no limit), the widest margins first.
        min_margin: a pair's scores must differ by at least this much (and by more than 0).
        higher_is_better: False when a lower score is better (an error, a distance).

    Example:
        >>> choose_pairs([0.2, 0.9, 0.5, 0.1])
        [(1, 3), (2, 0)]
        >>> choose_pairs([0.2, 0.9, 0.5, 0.1], pairing="best_vs_rest", min_margin=0.5)
        [(1, 3), (1, 0)]
    """
    where = "choose_pairs"
    if pairing not in PAIRINGS:
        raise ValueError(f"{where}: pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    if not (isinstance(min_margin, (int, float)) and min_margin >= 0):
        raise ValueError(f"{where}: min_margin must be a number >= 0, got {min_margin!r}")
    ranked = _ranked(scores, higher_is_better, where)
    values = list(scores)
    if pairing == "extremes":
        candidates = [(ranked[i], ranked[-1 - i]) for i in range(len(ranked) // 2)]
    else:
        candidates = [(ranked[0], j) for j in reversed(ranked[1:])] if ranked else []
    pairs = [(w, l) for w, l in candidates if abs(values[w] - values[l]) >= min_margin and values[w] != values[l]]
    return pairs[:max_pairs] if max_pairs else pairs


def choose_real_pairs(scores: Sequence[float | None], n_real: int, *, max_pairs: int = 0,
                      higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(real index, generated index)``: real photos win against the generated images, worst first.

    Real images are used in turn (real 0, 1, …, 0, 1, …). Generated images without a score are losers
    only when no image has a score. ``max_pairs`` 0 = one pair per (scored) generated image.

    Example:
        >>> choose_real_pairs([0.2, 0.9, 0.5], 2, max_pairs=2)
        [(0, 0), (1, 2)]
    """
    where = "choose_real_pairs"
    if not isinstance(n_real, int) or n_real < 1:
        raise ValueError(f"{where}: n_real must be >= 1 (connect real images), got {n_real!r}")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    ranked = _ranked(scores, higher_is_better, where)
    losers = list(reversed(ranked)) if ranked else list(range(len(scores)))
    if max_pairs:
        losers = losers[:max_pairs]
    return [(k % n_real, j) for k, j in enumerate(losers)]


def choose_same_index_pairs(scores: Sequence[float | None], n_real: int, *,
                            real_scores: Sequence[float | None] | None = None, max_pairs: int = 0,
                            min_margin: float = 0.0, higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(i, i)``: real image i wins against generated image i (the same face, degraded).

    Without scores (every entry None) every index is paired, in order. With the generated images'
    scores, unscored images are not paired and the worst come first, so ``max_pairs`` keeps the most
    degraded. Where ``real_scores`` also scores real image i, the pair is kept only when the real image
    is better by more than 0 and by at least ``min_margin`` (a degradation the score cannot see is no
    preference); ``min_margin`` > 0 needs ``real_scores``.

    Example:
        >>> choose_same_index_pairs([None, None, None], 3)
        [(0, 0), (1, 1), (2, 2)]
        >>> choose_same_index_pairs([0.5, 0.1, None], 3, max_pairs=1)
        [(1, 1)]
        >>> choose_same_index_pairs([0.5, 0.1, 0.3], 3, real_scores=[0.9, 0.2, 0.3], min_margin=0.2)
        [(0, 0)]
    """
    where = "choose_same_index_pairs"
    values = list(scores)
    if not isinstance(n_real, int) or n_real != len(values):
        raise ValueError(f"{where}: n_real must equal the number of generated images ({len(values)}): same_index "
                         f"pairs real image i with generated image i, got {n_real!r}; give one real image per "
                         "generated one, in the same order")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    if not (isinstance(min_margin, (int, float)) and min_margin >= 0):
        raise ValueError(f"{where}: min_margin must be a number >= 0, got {min_margin!r}")
    if min_margin and real_scores is None:
        raise ValueError(f"{where}: min_margin compares real and generated scores, got min_margin {min_margin!r} "
                         "without real_scores; score the real images too, or set min_margin to 0")
    ranked = _ranked(values, higher_is_better, where)
    order = list(reversed(ranked)) if ranked else list(range(len(values)))
    if real_scores is not None:
        real = list(real_scores)
        if len(real) != len(values):
            raise ValueError(f"{where}: real_scores must hold one score (or None) per real image ({len(values)}), "
                             f"got {len(real)}")
        _ranked(real, higher_is_better, where + " real_scores")
        sign = 1.0 if higher_is_better else -1.0

        def better(i: int) -> bool:
            if real[i] is None or values[i] is None:
                return True  # nothing to compare: the pair stands on how it was made
            margin = sign * (real[i] - values[i])
            return margin > 0 and margin >= min_margin

        order = [i for i in order if better(i)]
    if max_pairs:
        order = order[:max_pairs]
    return [(i, i) for i in order]


# ----------------------------------------------------------------------------------------- writing


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
