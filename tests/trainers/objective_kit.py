"""Test kit for the seed objectives: pair folders with face/hand boxes and quality maps, CLI runs.

Builds on ``engine_kit`` (real PNG folders); adds ``face_boxes`` / ``hand_boxes`` and quality maps
(``.npy``) to every record, and a helper running ``vitruvian-train <objective>`` in-process with an
example config from ``trainers/configs``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .engine_kit import make_pair_folder, make_single_folder

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "trainers" / "configs"
FACE = [8.0, 8.0, 32.0, 32.0]   # top-left quarter of a 64 px image
HAND = [44.0, 40.0, 60.0, 60.0]


def add_regions(root, *, quality: bool = True, hands: bool = True) -> Path:
    """Rewrite ``root/metadata.jsonl`` (pairs or singles) with face/hand boxes and, for pairs, quality maps.

    Quality maps: the rejected image is bad (0) inside the face box and good elsewhere; chosen all good.
    """
    root = Path(root)
    lines = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines() if x.strip()]
    (root / "q").mkdir(exist_ok=True)
    for i, rec in enumerate(lines):
        rec["face_boxes"] = [FACE]
        if hands:
            rec["hand_boxes"] = [HAND]
        if quality and "chosen" in rec:
            q = np.ones((64, 64), np.float32)
            q[8:32, 8:32] = 0.0
            np.save(root / "q" / f"{i:04d}_l.npy", q)
            rec["rejected_quality"] = f"q/{i:04d}_l.npy"
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def region_pairs(root, n: int = 4, **kw) -> Path:
    return add_regions(make_pair_folder(root, n=n), **kw)


def region_singles(root, n: int = 4, **kw) -> Path:
    return add_regions(make_single_folder(root, n=n), **kw)


def run_cli(objective: str, data, out, *extra: str) -> int:
    """``vitruvian-train <objective> --config trainers/configs/<objective>.toml`` on the tiny model, 2 steps."""
    from vitruvian.trainers.cli import main

    from ..tiny import tiny_diffusers_folder

    args = [objective, "--config", str(CONFIGS / f"{objective}.toml"), "--set", f"base={tiny_diffusers_folder()}",
            "--set", f"data={data}", "--set", f"out={out}", "--set", "steps=2", "--set", "resolution=64",
            "--set", "batch_size=1", "--set", "grad_accum=1", "--set", "mixed_precision=no",
            "--set", "learning_rate=1e-3", "--set", "log_every=1", *extra]
    return main(args)
