"""Engine test kit: synthetic image datasets (real PNG + metadata.jsonl folders) and tiny configs.

``make_pair_folder``: pairs whose winner has a visible property: winners are bright and red,
losers dark and blue; every image carries its own random blobs so no two images are equal; the
prompt of a pair is the same for both images. ``make_single_folder``: single-image records.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPTS = ("a photo of a person", "a portrait of a woman", "a man smiling", "a photo of a face")


def _image(rng: np.random.Generator, size: int, base_rgb: tuple[float, float, float]) -> np.ndarray:
    """(size, size, 3) uint8: a colour field with a few random soft blobs (texture)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.ones((size, size, 3)) * np.asarray(base_rgb)
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = img + 0.25 * blob * rng.uniform(-1, 1, size=3)
    img = img + rng.normal(0, 0.03, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_pair_folder(root, n: int = 8, *, size: int = 64, seed: int = 0, start: int = 0) -> Path:
    """Write ``n`` [chosen = bright red, rejected = dark blue] pairs to ``root``; returns ``root``.

    ``start`` offsets the pair numbering and the random stream (held-out sets use another start).
    """
    from PIL import Image

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, start))
    lines = []
    for i in range(start, start + n):
        win = _image(rng, size, (0.85, 0.25, 0.2))
        lose = _image(rng, size, (0.1, 0.15, 0.45))
        Image.fromarray(win).save(root / "img" / f"{i:04d}_w.png")
        Image.fromarray(lose).save(root / "img" / f"{i:04d}_l.png")
        lines.append({"prompt": PROMPTS[i % len(PROMPTS)], "chosen": f"img/{i:04d}_w.png",
                      "rejected": f"img/{i:04d}_l.png"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def make_single_folder(root, n: int = 4, *, size: int = 64, seed: int = 0) -> Path:
    """Write ``n`` single-image records to ``root``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        Image.fromarray(_image(rng, size, (0.6, 0.5, 0.4))).save(root / "img" / f"{i:04d}.png")
        lines.append({"prompt": PROMPTS[i % len(PROMPTS)], "image": f"img/{i:04d}.png"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def tiny_config(tmp, data, objective: str = "dpo", **overrides):
    """A ``TrainConfig`` for the tiny sd15 model at 64 px, writing to ``<tmp>/out`` unless ``out`` is given."""
    from vitruvian.trainers.config import TrainConfig

    from ..tiny import tiny_diffusers_folder

    values = dict(objective=objective, base=str(tiny_diffusers_folder()), data=str(data), out=str(Path(tmp) / "out"),
                  steps=3, resolution=64, learning_rate=1e-3, checkpoint_every=100, log_every=1)
    values.update(overrides)
    return TrainConfig(**values)
