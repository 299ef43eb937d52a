"""The losses of sft, dpo, mpd and patch-dpo on the tiny model, pinned bit for bit.

A refactor of the trainer (families, objectives, recipes, the run state) must not change a single bit of what
it computes: three steps of each objective with a fixed seed give exactly the losses recorded in
``pinned_losses.json``. Re-record (only for a change that is meant to change the numbers, said in its commit)
with ``VITRUVIAN_PIN_LOSSES=1 pytest tests/trainers/test_pinned_losses.py``. The values depend on torch's CPU
kernels: with another torch version than the recorded one they are compared to 1e-5 instead.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from .engine_kit import tiny_config
from .objective_kit import region_pairs, region_singles

PINS = Path(__file__).with_name("pinned_losses.json")
RUNS = {
    "sft": dict(data="singles"),
    "dpo": dict(data="pairs", proportion_empty_prompts=0.25, random_flip=True),
    "mpd": dict(data="singles"),
    "mpd-every2": dict(objective="mpd", data="singles", mpd_every=2),
    "patch-dpo": dict(data="pairs"),
    "patch-dpo-dpo": dict(objective="patch-dpo", data="pairs", patch_form="dpo"),
}


def _losses(tmp_path: Path, name: str) -> list[float]:
    from vitruvian.trainers import train

    settings = dict(RUNS[name])
    kind = settings.pop("data")
    objective = settings.pop("objective", name)
    data = (region_pairs if kind == "pairs" else region_singles)(tmp_path / "data", n=4)
    cfg = tiny_config(tmp_path, data, objective, steps=3, batch_size=2, seed=7, rank=4, alpha=4, **settings)
    train(cfg)
    return [json.loads(line)["loss"] for line in (tmp_path / "out" / "progress.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_losses_are_pinned(tmp_path, name):
    got = _losses(tmp_path, name)
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {"torch": torch.__version__, "losses": {}}
    if os.environ.get("VITRUVIAN_PIN_LOSSES") == "1":
        pins["torch"] = torch.__version__
        pins["losses"][name] = got
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {name}: {got}")
    assert name in pins["losses"], f"no pinned losses for {name}; record them with VITRUVIAN_PIN_LOSSES=1"
    expected = pins["losses"][name]
    assert len(got) == len(expected) == 3 and len(set(got)) > 1
    if pins["torch"] == torch.__version__:
        assert got == expected, f"{name}: losses changed bit for bit: {got} != {expected}"
    else:
        assert got == pytest.approx(expected, rel=1e-5), name
