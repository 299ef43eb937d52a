"""Training data: validated ``metadata.jsonl`` folders and Pick-a-Pic parquet streams.

- ``validate_dataset(folder)``: check a whole dataset before any model loads (``records`` for jsonl).
- ``open_dataset(folder, ...)``: a map-style ``JsonlDataset`` or an iterable ``PickapicDataset``.
- ``collate`` / ``make_loader``: batches, infinite, seeded, DDP-sharded and resumable (``loader``).
- Keypoints: single-image records may carry a ``pose`` (file or inline JSON), warped and flipped with the
  image (``poses``).

Item and batch layouts are documented in ``items`` and ``loader``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ...core.errors import DatasetError
from .folder import JsonlDataset
from .items import content_key, make_item
from .loader import EpochSampler, collate, make_loader
from .parquet import PickapicDataset
from .records import METADATA, PAIR_KEYS, SINGLE_KEYS, SOURCES, Record, validate_jsonl

__all__ = ["Record", "validate_dataset", "validate_jsonl", "open_dataset", "JsonlDataset", "PickapicDataset", "collate",
           "make_loader", "EpochSampler", "content_key", "make_item", "METADATA", "PAIR_KEYS", "SINGLE_KEYS",
           "SOURCES"]


def validate_dataset(folder: str | os.PathLike) -> list[Record]:
    """Check the dataset in ``folder`` before any model loads; one DatasetError lists every problem.

    A ``metadata.jsonl`` folder is checked line by line (``records.validate_jsonl``) and its records
    returned. A parquet folder has every file's schema checked (metadata only) and returns ``[]``: its
    rows are streamed, never listed (a bad ``label_0`` value is reported when its row is read).
    """
    kind, root, files = _detect(folder, "validate_dataset")
    if kind == "jsonl":
        return validate_jsonl(root)
    PickapicDataset(files, resolution=8, random_flip=False, random_crop=False, seed=0)  # scans the schemas
    return []


def open_dataset(folder: str | os.PathLike, *, resolution: int, random_flip: bool, random_crop: bool,
                 seed: int) -> JsonlDataset | PickapicDataset:
    """The dataset in ``folder``: ``metadata.jsonl`` (validated whole first) or ``*.parquet`` files.

    Raises DatasetError when the folder is missing, holds neither kind (saying what it holds), holds
    both, or fails validation.
    """
    kind, root, files = _detect(folder, "open_dataset")
    options = dict(resolution=resolution, random_flip=random_flip, random_crop=random_crop, seed=seed)
    if kind == "jsonl":
        return JsonlDataset(validate_jsonl(root), **options)
    return PickapicDataset(files, **options)


def _detect(folder: str | os.PathLike, where: str) -> tuple[str, Path, list[Path]]:
    """``("jsonl", root, [])`` or ``("parquet", root, files)``; DatasetError otherwise."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        found = "a file, not a folder" if root.exists() else "not found"
        raise DatasetError(f"{where}: data must be an existing folder, got {str(root)!r} ({found}); fix: --set "
                           "data=<the folder holding metadata.jsonl or *.parquet>")
    has_meta = (root / METADATA).is_file()
    parquets = sorted(root.glob("*.parquet"))
    if has_meta and parquets:
        raise DatasetError(f"{where}: data must hold either {METADATA} or *.parquet files, got both in "
                           f"{str(root)!r}; fix: move one kind to its own folder")
    if has_meta:
        return "jsonl", root, []
    if parquets:
        return "parquet", root, parquets
    names = sorted(p.name for p in root.iterdir())
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} entries)" if len(names) > 10 else "")
    raise DatasetError(f"{where}: data must be a folder with {METADATA} (image pairs or single images) or "
                       f"Pick-a-Pic style *.parquet files, got {str(root)!r} containing "
                       f"{shown or 'nothing'}; fix: see vitruvian.trainers.data.records for the layout")
