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


def test_an_objective_of_the_common_loop():
    """The scorer is the objective's own module and no diffusion model is loaded: the loop's hooks, not a loop of
    its own."""
    from vitruvian.trainers.objectives import ObjectiveContext
    from vitruvian.trainers.objectives.base import OwnsModules

    obj = get_objective("train-scorer")
    assert isinstance(obj, OwnsModules) and obj.needs_base is False and obj.modules == {}
    params = obj.setup(None)
    assert params and set(obj.modules) == {"scorer"}
    out = obj({"pixels": torch.rand(3, 2, 3, 64, 64) * 2 - 1}, ObjectiveContext(
        unet=None, scheduler=None, generator=torch.Generator(), modules=obj.modules))
    assert out.loss.shape == () and out.per_sample.shape == (3,) and 0 <= out.metrics["pair_acc"] <= 1


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
    # the common loop's checkpoints: the scorer at each step, resumable
    assert (tmp_path / "out" / "checkpoints" / "step-30" / "scorer.safetensors").is_file()
    from vitruvian.trainers.objectives.train_scorer import tiny_scorer_config

    model = load_facescore(path, config=tiny_scorer_config())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1,)


@pytest.mark.slow
def test_single_images_refused(tmp_path):
    data = make_single_folder(tmp_path / "data", n=2)
    assert run_cli("train-scorer", data, tmp_path / "out") == 2


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    """3 steps + resume to 5 equals 5 straight: scorer training gained checkpoints and exact resume."""
    import json

    from safetensors.torch import load_file

    from vitruvian.trainers import train

    from .engine_kit import tiny_config

    data = make_pair_folder(tmp_path / "data", n=4)
    common = dict(batch_size=2, checkpoint_every=3, learning_rate=3e-3, seed=1)
    train(tiny_config(tmp_path, data, "train-scorer", out=str(tmp_path / "a"), steps=5, **common))
    train(tiny_config(tmp_path, data, "train-scorer", out=str(tmp_path / "b"), steps=3, **common))
    res = train(tiny_config(tmp_path, data, "train-scorer", out=str(tmp_path / "b"), steps=5, resume="latest", **common))
    assert res.lora_path == tmp_path / "b" / "vitruvian-scorer.safetensors" and res.output_kind == "scorer"
    la, lb = ([json.loads(x)["loss"] for x in (tmp_path / d / "progress.jsonl").read_text().splitlines()] for d in "ab")
    assert la == pytest.approx(lb, rel=1e-6) and len(la) == 5
    wa, wb = (load_file(str(tmp_path / d / "vitruvian-scorer.safetensors")) for d in "ab")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)
