"""Pick-a-Pic style preference pairs streamed from ``*.parquet`` files, one row group at a time.

Columns used: ``jpg_0``, ``jpg_1`` (image bytes), ``label_0`` (1 = jpg_0 won, 0 = jpg_1 won, 0.5 = tie)
and ``caption``; other columns are never read. Ties are dropped and the winner is put first.

Stream order. The unit of reading is a row group. Each epoch shuffles the list of all row groups
(seeded by ``(seed, epoch)``); DDP rank r takes every ``world_size``-th unit from offset r, and DataLoader
worker role w takes every W-th of those; rows of each pyarrow batch are shuffled too. Only
``read_rows`` rows are materialised at a time (``ParquetFile.iter_batches``). With W workers the
DataLoader asks worker j % W for batch j, so a worker's own stream is its consecutive batches; a resume
at ``start_index`` (samples consumed by this process) skips exactly what each worker role had produced
and rotates the roles so batch ``start_index / batch_size`` comes first. The stream depends on
(seed, world_size, num_workers, batch_size), so resume with the same values.
"""
from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ...core.errors import DatasetError
from .items import make_item

__all__ = ["PickapicDataset", "COLUMNS"]

COLUMNS = ("jpg_0", "jpg_1", "label_0", "caption")


@dataclass(frozen=True)
class _Unit:
    """One row group: ``first_row`` is the global index of its first row over all files."""

    path: str
    row_group: int
    rows: int
    first_row: int


class PickapicDataset(IterableDataset):
    """Infinite stream of pair items (layout in ``trainers.data.items``) from parquet files.

    Iterating the dataset directly gives rank 0 of 1 from sample 0; ``make_loader`` calls ``stream``
    to place it in a DDP run and resume it. ``rows_read`` counts rows pulled from pyarrow in this
    process (a probe for tests and logs: it grows by at most ``read_rows`` at a time).
    """

    images_per_sample = 2

    def __init__(self, files: Sequence[str | Path], *, resolution: int, random_flip: bool, random_crop: bool,
                 seed: int, read_rows: int = 64):
        self.files = [str(f) for f in files]
        self.units = _scan(self.files)
        self.resolution, self.random_flip, self.random_crop, self.seed = resolution, random_flip, random_crop, seed
        self.read_rows = read_rows
        self.decode_pixels = True  # False once the trainer's latent cache holds every item (``make_item``)
        self.order_seed, self.start_index, self.rank, self.world_size = seed, 0, 0, 1
        self.batch_size, self.num_workers = 1, 0
        self.rows_read = 0
        self._kept: dict[int, int] = {}

    def stream(self, *, seed: int, start_index: int, rank: int, world_size: int, batch_size: int,
               num_workers: int) -> PickapicDataset:
        """A copy that yields this process's share, from sample ``start_index`` on."""
        roles = max(1, num_workers)
        if len(self.units) < world_size * roles:
            raise DatasetError(f"PickapicDataset: the parquet files must have at least world_size x workers = "
                               f"{world_size * roles} row groups, got {len(self.units)}; fix: lower num_workers or "
                               "rewrite the files with smaller row groups (pq.write_table(..., row_group_size=...))")
        if roles > 1 and start_index % batch_size:
            raise ValueError(f"PickapicDataset.stream: start_index must be a multiple of batch_size ({batch_size}) "
                             f"with {num_workers} workers, got {start_index}")
        out = copy.copy(self)
        out.order_seed, out.start_index, out.rank, out.world_size = seed, start_index, rank, world_size
        out.batch_size, out.num_workers, out._kept = batch_size, num_workers, {}
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        roles = max(1, self.num_workers if info is None or self.num_workers else info.num_workers)
        worker = 0 if info is None else info.id
        if roles == 1:
            return self._iter_role(0, 1, self.start_index)
        done = self.start_index // self.batch_size  # batches the DataLoader already returned
        role = (worker + done) % roles  # so that the first batch asked of worker 0 is batch `done`
        return self._iter_role(role, roles, len(range(role, done, roles)) * self.batch_size)

    def _iter_role(self, role: int, roles: int, skip: int) -> Iterator[dict[str, Any]]:
        epoch = 0
        while True:
            order = np.random.default_rng((self.order_seed, epoch)).permutation(len(self.units))
            mine = [int(u) for u in order[self.rank::self.world_size][role::roles]]
            kept_total = 0
            for u in mine:
                if skip and u in self._kept and skip >= self._kept[u]:  # skip a whole row group unread
                    skip -= self._kept[u]
                    kept_total += self._kept[u]
                    continue
                kept = 0
                for load in self._iter_unit(u, epoch):
                    kept += 1
                    if skip:
                        skip -= 1  # skipped rows are never decoded
                    else:
                        yield load()
                self._kept[u] = kept
                kept_total += kept
            if kept_total == 0:
                raise DatasetError(f"PickapicDataset: the row groups of this shard (rank {self.rank}, worker "
                                   f"{role}) must hold some non-tie pairs, got only ties or no rows in "
                                   f"{len(mine)} row groups of {self.files}")
            epoch += 1

    def _iter_unit(self, index: int, epoch: int) -> Iterator[Callable[[], dict[str, Any]]]:
        """One loader per kept row of row group ``index`` (winner first, ties dropped), in shuffled order."""
        import pyarrow.parquet as pq

        unit = self.units[index]
        with pq.ParquetFile(unit.path) as pf:
            batches = pf.iter_batches(batch_size=self.read_rows, row_groups=[unit.row_group], columns=list(COLUMNS),
                                      use_threads=False)
            for b, batch in enumerate(batches):
                self.rows_read += batch.num_rows
                labels = batch.column("label_0").to_pylist()
                perm = np.random.default_rng((self.order_seed, epoch, index, b)).permutation(batch.num_rows)
                for r in map(int, perm):
                    winner = _winner(labels[r], unit.path, unit.row_group, b * self.read_rows + r)
                    if winner is not None:
                        row = unit.first_row + b * self.read_rows + r
                        yield functools.partial(self._item, batch, r, winner, epoch, row)

    def _item(self, batch: Any, r: int, winner: int, epoch: int, row: int) -> dict[str, Any]:
        caption = batch.column("caption")[r].as_py() or ""
        blobs = [batch.column(f"jpg_{winner}")[r].as_py(), batch.column(f"jpg_{1 - winner}")[r].as_py()]
        return make_item(
            text=json.dumps({"prompt": caption}, ensure_ascii=False), prompt=caption, source="generated",
            images=blobs, boxes={}, quality=[None, None], resolution=self.resolution,
            rng=np.random.default_rng((self.seed, epoch, row)), random_flip=self.random_flip,
            random_crop=self.random_crop, decode=self.decode_pixels)


def _winner(label: Any, path: str, row_group: int, row: int) -> int | None:
    """0 if jpg_0 won, 1 if jpg_1 won, None for a tie."""
    if label == 0.5:
        return None
    if label in (0, 1):
        return 0 if label == 1 else 1
    raise DatasetError(f"PickapicDataset: label_0 must be 1 (jpg_0 won), 0 (jpg_1 won) or 0.5 (tie), got {label!r} "
                       f"in {path} row group {row_group} row {row}")


def _scan(files: Sequence[str]) -> list[_Unit]:
    """Row groups of every file, after checking each file's schema; one DatasetError for all bad files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"jpg_0": (pa.types.is_binary, pa.types.is_large_binary), "jpg_1": (pa.types.is_binary,
             pa.types.is_large_binary), "label_0": (pa.types.is_floating, pa.types.is_integer),
             "caption": (pa.types.is_string, pa.types.is_large_string)}
    units, problems, first_row = [], [], 0
    for path in files:
        try:
            with pq.ParquetFile(path) as pf:
                schema, meta = pf.schema_arrow, pf.metadata
        except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError), OSError, and others
            problems.append(f"{path}: cannot read as parquet ({type(e).__name__}: {e})")
            continue
        bad = [f"{c} (missing)" if c not in schema.names else f"{c} ({schema.field(c).type})"
               for c in COLUMNS if c not in schema.names or not any(k(schema.field(c).type) for k in kinds[c])]
        if bad:
            problems.append(f"{path}: columns must be jpg_0, jpg_1 (binary), label_0 (number), caption (string), "
                            f"got bad {', '.join(bad)}")
            continue
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                units.append(_Unit(path, g, rows, first_row))
                first_row += rows
    if problems:
        raise DatasetError("PickapicDataset: every parquet file must follow the Pick-a-Pic layout, got:\n  "
                           + "\n  ".join(problems))
    if not units:
        raise DatasetError(f"PickapicDataset: the parquet files must hold some rows, got none in {list(files)}")
    return units

