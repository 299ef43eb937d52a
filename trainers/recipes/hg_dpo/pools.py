"""HG-DPO pair sources: image pools from the current model, ranked by a scorer, and SDEdit reconstructions.

The "current model" of a stage is the base with the previous stages' LoRAs merged in; a diffusers
pipeline is built from those components (no second copy of the weights). Everything a stage
generates is written under its folder (``pool/<record>/<k>.png``, ``scores.json``, ``recon.png``) as
it goes, so an interrupted stage resumes without regenerating what exists.

Scorers (``hg_scorer``): ``"sharpness"`` (variance of the Laplacian of the grey image, kornia via
``core.scoring.sharpness``; a cheap proxy for "not blurry"), or ``"module:function"`` naming a
callable ``f(images (B, 3, H, W) float in [0, 1], prompts: list[str]) -> (B,)`` (e.g. a PickScore or
FaceScore wrapper); higher is better.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ....core.atomic import atomic_path, atomic_write_json
from ...callables import import_callable

__all__ = ["resolve_scorer", "sharpness_score", "build_pipelines", "load_square", "to_tensor", "save_png"]

Scorer = Callable[[torch.Tensor, list], torch.Tensor]


def sharpness_score(images: torch.Tensor, prompts: list) -> torch.Tensor:
    """(B,) variance of the Laplacian of each (B, 3, H, W) image in [0, 1] (grey)."""
    from ....core.scoring.sharpness import laplacian_variance

    grey = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])[:, None]
    return laplacian_variance(grey.float()).float()


def resolve_scorer(name: str) -> Scorer:
    """``"sharpness"`` or ``"module:function"`` → the scoring callable; ConfigError otherwise."""
    if name == "sharpness":
        return sharpness_score
    return import_callable(name, key="hg_scorer", example="my_pkg.rewards:pickscore")


def build_pipelines(base, *, device) -> tuple:
    """(text-to-image, image-to-image) diffusers pipelines sharing ``base``'s modules (the family's samplers)."""
    t2i, i2i = base.family.pipelines(base)
    for p in (t2i, i2i):
        p.to(device)
        p.set_progress_bar_config(disable=True)
    return t2i, i2i


def load_square(path: str | os.PathLike, size: int):
    """The image at ``path`` as an RGB PIL image, shorter side resized to ``size``, centre-cropped."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))


def to_tensor(images) -> torch.Tensor:
    """PIL images → (B, 3, H, W) float32 in [0, 1]."""
    return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) for im in images])


def save_png(image, path: Path) -> None:
    """Write a PIL image atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_json(path: Path, value) -> None:
    atomic_write_json(path, value)
