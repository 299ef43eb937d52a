"""The losses of sft, dpo, mpd and patch-dpo on the tiny model, pinned bit for bit.

A refactor of the trainer (families, objectives, recipes, the run state) must not change a single bit of what
it computes: three steps of each objective with a fixed seed give exactly the losses recorded in
``pinned_losses.json``. Re-record (only for a change that is meant to change the numbers, said in its commit)
with ``VITRUVIAN_PIN_LOSSES=1 pytest tests/trainers/test_pinned_losses.py``. The values depend on torch's CPU
kernels, so each recording is keyed by the torch version and the kernel set torch picked on that CPU
(``torch.backends.cpu.get_cpu_capability()``: an AVX2 and an AVX-512 machine differ in the last bit): with a
recording of this machine's key the losses must match bit for bit, and every recording to 1e-3 (dpo's β = 2500
multiplies last-bit differences of the errors: the AVX2 and AVX-512 recordings differ by 2e-4 in dpo's step 2).
To pin a new machine's key, record it at a commit whose numbers are the agreed ones, then check out the change.
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


def _machine_key() -> str:
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


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
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {}
    key = _machine_key()
    if os.environ.get("VITRUVIAN_PIN_LOSSES") == "1":
        pins.setdefault(key, {})[name] = got
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {name} for {key}: {got}")
    recorded = {k: v[name] for k, v in pins.items() if name in v}
    assert recorded, f"no pinned losses for {name}; record them with VITRUVIAN_PIN_LOSSES=1"
    assert len(got) == 3 and len(set(got)) > 1
    if key in recorded:
        assert got == recorded[key], f"{name}: losses changed bit for bit on {key}: {got} != {recorded[key]}"
    for other, expected in recorded.items():
        assert got == pytest.approx(expected, rel=1e-3), f"{name}: {got} vs the recording of {other}: {expected}"
