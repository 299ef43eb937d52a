"""``collate`` and ``make_loader``: an infinite, seeded, DDP-sharded, resumable stream of batches.

Batch layout (B items, N images per item; see ``trainers.data.items`` for one item)::

    key         list[str] (B)
    prompt      list[str] (B)
    pixels      (B, N, 3, R, R) float32 in [-1, 1]; [:, 0] chosen, [:, 1] rejected for pairs
    decoded     list (B) of bool: False where the pixels were not decoded (zeros; the latent cache holds the item)
    source      list[str] (B)
    face_boxes  list (B) of lists (N) of float32 (k, 4) tensors, pixels of the R x R crop
    hand_boxes  same
    quality     (B, N, 1, R, R) float32 in [0, 1], or None when no item has a map (missing maps = ones)
    pose        PoseBatch (B frames on the R x R crop) when every item has a pose, None when none has,
                else a list (B) of PoseFrame or None
    aug         list (B) of (flip, crop_x, crop_y)

Map-style datasets: epoch e visits ``permutation_e = default_rng((seed, e)).permutation(n)``; rank r
takes ``permutation_e[r::world_size]`` cut to ``n // world_size`` samples (so every rank has the same
epoch length and the ranks' samples are disjoint). The per-process stream is those shards, epoch after
epoch; ``start_index`` samples are skipped without loading, so a resumed run sees exactly the batches
the uninterrupted run would have. Iterable (parquet) datasets do the same through ``stream``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ...core.errors import DatasetError

__all__ = ["collate", "make_loader", "EpochSampler"]


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch (layout in the module docstring)."""
    if not items:
        raise ValueError("collate: items must be a non-empty list of dataset items, got []")
    n = {tuple(it["pixels"].shape) for it in items}
    if len(n) != 1:
        raise ValueError(f"collate: every item's pixels must have the same (N, 3, R, R) shape, got {sorted(n)}")
    quality = None
    if any(it["quality"] is not None for it in items):
        ones = torch.ones_like(items[0]["pixels"][:, :1])
        quality = torch.stack([ones if it["quality"] is None else it["quality"] for it in items])
    return {
        "key": [it["key"] for it in items],
        "prompt": [it["prompt"] for it in items],
        "pixels": torch.stack([it["pixels"] for it in items]),
        "source": [it["source"] for it in items],
        "face_boxes": [it["face_boxes"] for it in items],
        "hand_boxes": [it["hand_boxes"] for it in items],
        "quality": quality,
        "pose": _poses([it.get("pose") for it in items]),
        "aug": [it["aug"] for it in items],
        "decoded": [it.get("decoded", True) for it in items],
    }


def _poses(frames: list) -> Any:
    from ...core.pose import PoseBatch

    if all(f is None for f in frames):
        return None
    return PoseBatch(tuple(frames)) if all(f is not None for f in frames) else frames


class EpochSampler(Sampler):
    """Infinite ``(epoch, index)`` stream of one DDP rank, starting after ``start_index`` samples."""

    def __init__(self, n: int, *, seed: int, start_index: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.start_index, self.rank, self.world_size = n, seed, start_index, rank, world_size
        self.per_epoch = n // world_size
        if self.per_epoch == 0:
            raise DatasetError(f"make_loader: the dataset must hold at least world_size ({world_size}) samples, "
                               f"got {n}; fix: add samples or train on fewer processes")

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start_index, self.per_epoch)
        while True:
            order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            shard = order[self.rank::self.world_size][:self.per_epoch]
            for i in shard[offset:]:
                yield epoch, int(i)
            epoch, offset = epoch + 1, 0


def make_loader(dataset: Any, *, batch_size: int, seed: int, start_index: int = 0, rank: int = 0,
                world_size: int = 1, num_workers: int = 0) -> Iterator[dict[str, Any]]:
    """An infinite iterator of collated batches of this process's shard, from sample ``start_index``.

    ``start_index`` is the number of samples this process already consumed (steps x grad_accum x
    batch_size). Deterministic given (seed, start_index, rank, world_size) and, for parquet streams,
    num_workers: the batches equal the tail of an uninterrupted run's.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                             ("start_index", start_index, 0), ("num_workers", num_workers, 0), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"make_loader: {name} must be an integer >= {low}, got {value!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"make_loader: rank must be in [0, world_size={world_size}), got {rank!r}")
    # its own generator: starting the loader (at the first batch) must not draw from torch's global RNG, which a
    # resumed run restores from its checkpoint (items are seeded by (seed, epoch, index), not by worker seeds)
    common = dict(batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                  persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed * 1000 + rank))
    if isinstance(dataset, IterableDataset):
        place = dict(seed=seed, start_index=start_index, rank=rank, world_size=world_size, batch_size=batch_size,
                     num_workers=num_workers)
        dataset.stream(**place)  # its checks now; the loader streams a fresh copy when the first batch is drawn
        return _Batches(lambda: DataLoader(dataset.stream(**place), **common))
    sampler = EpochSampler(len(dataset), seed=seed, start_index=start_index, rank=rank, world_size=world_size)
    return _Batches(lambda: DataLoader(dataset, sampler=sampler, **common))


class _Batches:
    """The batch iterator ``make_loader`` returns: the DataLoader (and its workers, which copy the dataset) starts
    when the first batch is drawn, so dataset settings made after ``make_loader`` (the trainer's
    ``decode_pixels = False`` after its latent-cache pass) reach every worker."""

    def __init__(self, make: Callable[[], DataLoader]):
        self._make, self._it = make, None

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = iter(self._make())
        return next(self._it)
