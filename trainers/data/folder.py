"""Map-style dataset over a validated ``metadata.jsonl`` folder (pairs or single images)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .items import make_item
from .records import Record

__all__ = ["JsonlDataset"]


class JsonlDataset(Dataset):
    """Items built from ``records`` (see ``validate_dataset``); layout in ``trainers.data.items``.

    ``dataset[i]`` or ``dataset[(epoch, i)]``: the augmentation is drawn from ``(seed, epoch, i)``, so an
    item is the same whenever and wherever (main process or DataLoader worker) it is loaded.
    """

    def __init__(self, records: Sequence[Record], *, resolution: int, random_flip: bool, random_crop: bool,
                 seed: int):
        self.records = list(records)
        self.resolution = resolution
        self.random_flip = random_flip
        self.random_crop = random_crop
        self.seed = seed
        self.decode_pixels = True  # False once the trainer's latent cache holds every item (``make_item``)

    @property
    def images_per_sample(self) -> int:
        """N: 2 for pairs, 1 for single images."""
        return len(self.records[0].images) if self.records else 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = index if isinstance(index, tuple) else (0, index)
        if not -len(self.records) <= i < len(self.records):
            raise IndexError(f"JsonlDataset: index must be in [0, {len(self.records)}), got {i}")
        i %= len(self.records)
        rec = self.records[i]
        rng = np.random.default_rng((self.seed, epoch, i))
        return make_item(
            text=rec.text, prompt=rec.prompt, source=rec.source,
            images=[Path(p).read_bytes() for p in rec.images],
            boxes=rec.boxes,
            quality=[(Path(q).read_bytes(), Path(q).name) if q else None for q in rec.quality],
            pose=Path(rec.pose).read_bytes() if rec.pose else rec.pose_json,
            resolution=self.resolution, rng=rng, random_flip=self.random_flip, random_crop=self.random_crop,
            decode=self.decode_pixels)
