"""train-scorer: the pairwise fine-tune of a FaceScore-style head ranks good crops above bad ones."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.errors import ConfigError
from vitruvian.trainers.objectives import get_objective
from vitruvian.trainers.objectives.train_scorer import prepare_crops

from .engine_kit import make_pair_folder, make_single_folder
from .objective_kit import run_cli


def test_prepare_crops():
    x = prepare_crops(torch.zeros(2, 3, 64, 64), 32)
    assert x.shape == (2, 3, 32, 32)
    assert torch.allclose(x[:, 0], torch.full((2, 32, 32), (0.5 - 0.48145466) / 0.26862954), atol=1e-5)


def test_not_a_batch_objective():
    with pytest.raises(ConfigError, match="drive"):
        get_objective("train-scorer")({}, None)


@pytest.mark.slow
def test_cli_learns_to_rank(tmp_path):
    """Bright-red winners vs dark-blue losers: after training the head ranks every pair right."""
    import json

    from safetensors.torch import load_file

    from vitruvian.core.scoring.facescore import load_facescore

    data = make_pair_folder(tmp_path / "data", n=8)
    assert run_cli("train-scorer", data, tmp_path / "out", "--set", "steps=30", "--set", "batch_size=4",
                   "--set", "learning_rate=3e-3") == 0
    path = tmp_path / "out" / "vitruvian-scorer.safetensors"
    records = [json.loads(x) for x in (tmp_path / "out" / "progress.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["metrics"]["pair_acc"] == 1.0
    assert len(load_file(str(path))) > 0
    from vitruvian.trainers.objectives.train_scorer import tiny_scorer_config

    model = load_facescore(path, config=tiny_scorer_config())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1,)


@pytest.mark.slow
def test_single_images_refused(tmp_path):
    data = make_single_folder(tmp_path / "data", n=2)
    assert run_cli("train-scorer", data, tmp_path / "out") == 2
