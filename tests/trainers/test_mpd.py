"""mpd (FairHuman): masked global/face/hand losses and the α-fair combiner on real autograd."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.objectives.mpd import fair_weights, fixed_point_residual, gram
from vitruvian.trainers.objectives import MPD, ObjectiveContext, get_objective
from vitruvian.trainers.objectives.mpd import MultiTaskOutput, task_gradients

from ..tiny import tiny_scheduler
from .objective_kit import FACE, HAND, region_singles, run_cli
from .test_objectives import lora_unet, make_batch


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def toy_run(accelerator, combiner: str, every: int = 1, steps: int = 60) -> dict[str, float]:
    """A linear model with 3 conflicting least-squares tasks of scales 100 : 1 : 0.01 (SGD).

    Returns each task's final / initial loss (smaller = improved more).
    """
    g = torch.Generator().manual_seed(0)
    X = [torch.randn(32, 16, generator=g) for _ in range(3)]
    Y = [torch.randn(32, generator=g) for _ in range(3)]
    scales = (100.0, 1.0, 0.01)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 1)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    obj = MPD(combiner=combiner, every=every)

    def losses():
        return {n: s * ((model(x)[:, 0] - y) ** 2).mean() for n, s, x, y in zip(("global", "face", "hand"), scales, X, Y)}

    start = {k: v.item() for k, v in losses().items()}
    for step in range(steps):
        tasks = losses()
        obj.backward(MultiTaskOutput(loss=sum(tasks.values()), per_sample=torch.zeros(1), tasks=tasks), params,
                     accelerator, step=step)
        opt.step()
        opt.zero_grad()
    return {k: v.item() / start[k] for k, v in losses().items()}


class TestToyFairness:
    def test_worst_task_improves_more_than_sum(self, accelerator):
        plain, fair = toy_run(accelerator, "sum"), toy_run(accelerator, "mpd")
        assert max(plain.values()) > 1.0  # the plain sum sacrifices a small-scale task entirely
        assert max(fair.values()) < 1.0   # MPD improves every task
        assert max(fair.values()) < max(plain.values()) - 0.05

    def test_every_n_keeps_the_effect(self, accelerator):
        plain, cheap = toy_run(accelerator, "sum"), toy_run(accelerator, "mpd", every=5)
        assert max(cheap.values()) < 1.0 and max(cheap.values()) < max(plain.values()) - 0.05


def test_empty_task_official_vs_drop(accelerator):
    """A micro-batch without hands: FairHuman's code still multiplies K·G·w by K = 3; ``drop`` uses the 2 tasks
    present, so the official gradient is exactly 1.5× — on a solve step and between solves (mpd_every)."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(2, 32, 16, generator=g), torch.randn(2, 32, generator=g)
    grads = {}
    for mode in ("official", "drop"):
        torch.manual_seed(0)
        model = torch.nn.Linear(16, 1)
        params = list(model.parameters())
        obj = MPD(every=2, empty_task=mode)
        for step in (0, 1):  # a solve, then a step with the solve's weights
            tasks = {n: ((model(X[i])[:, 0] - Y[i]) ** 2).mean() for i, n in enumerate(("global", "face"))}
            obj.backward(MultiTaskOutput(loss=sum(tasks.values()), per_sample=torch.zeros(1), tasks=tasks), params,
                         accelerator, step=step)
            grads[mode, step] = torch.cat([p.grad.reshape(-1) for p in params]).clone()
            for p in params:
                p.grad = None
    for step in (0, 1):
        assert torch.allclose(grads["official", step], 1.5 * grads["drop", step], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"empty_task must be one of \('official', 'drop'\), got 'keep'"):
        MPD(empty_task="keep")


@pytest.mark.slow  # tiny-UNet forwards + K backward passes: ~10 s each on a loaded 2-core CPU
class TestObjective:
    def batch(self, hands=True):
        batch = make_batch(2)
        batch["latents"] = batch["latents"][:, :1]
        batch["face_boxes"] = [[torch.tensor([FACE])], [torch.zeros(0, 4)]]
        batch["hand_boxes"] = [[torch.tensor([HAND])] if hands else [torch.zeros(0, 4)], [torch.zeros(0, 4)]]
        return batch

    def test_losses_and_official_normalisation(self):
        unet = lora_unet(random_b=True)
        ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        out = MPD(dilate=0.0)(self.batch(), ctx)
        assert set(out.tasks) == {"global", "face", "hand"}
        # face box 8..32 px of 64 → latent cells 1..3 (3×3 of 8×8) in sample 0, none in sample 1;
        # l_face = 25·Σ_M(err)/(C·h·w), averaged over the batch: below 25·l_global·(9/64)·(1/2)·(a few)
        assert 0 < out.tasks["face"].item() < 25 * out.tasks["global"].item()

    def test_absent_task_dropped(self):
        unet = lora_unet(random_b=True)
        ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        out = MPD()(self.batch(hands=False), ctx)
        assert set(out.tasks) == {"global", "face"}

    def test_backward_writes_K_G_w_into_lora_grads(self, accelerator):
        unet = lora_unet(random_b=True)
        params = [p for p in unet.parameters() if p.requires_grad]
        frozen = [p for p in unet.parameters() if not p.requires_grad]
        ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        obj = MPD()
        out = obj(self.batch(), ctx)
        G = task_gradients(list(out.tasks.values()), params)  # reference computed independently
        out = obj(self.batch(), ObjectiveContext(unet=unet, scheduler=tiny_scheduler(),
                                                 generator=torch.Generator().manual_seed(0)))
        metrics = obj.backward(out, params, accelerator, step=0)
        w = torch.tensor([metrics[f"w_{n}"].item() for n in out.tasks], dtype=torch.float64)
        assert fixed_point_residual(gram(G), w) < 1e-5
        expected = 3 * (w.float() @ G)
        got = torch.cat([p.grad.reshape(-1) for p in params])
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-8)
        assert all(p.grad is None for p in frozen)
        assert torch.allclose(w, fair_weights(gram(G)), rtol=1e-4)

    def test_from_config(self):
        from vitruvian.trainers.config import TrainConfig

        cfg = TrainConfig(objective="mpd", base="/m", data="/d", out="/o", mpd_every=3, mpd_combiner="sum",
                          mask_dilate=0.0, mask_norm="mask", mpd_empty_task="drop")
        obj = get_objective("mpd", cfg)
        assert (obj.every, obj.combiner, obj.dilate, obj.norm, obj.empty_task) == (3, "sum", 0.0, "mask", "drop")
        assert get_objective("mpd", TrainConfig(objective="mpd", base="/m", data="/d", out="/o")).empty_task == "official"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--set", "mpd_combiner=sum"), ("--set", "mpd_every=2", "--set", "steps=3")])
def test_cli_end_to_end(tmp_path, extra):
    import json

    from vitruvian.core.lora_io import load_lora_state

    data = region_singles(tmp_path / "data")
    assert run_cli("mpd", data, tmp_path / "out", *extra) == 0
    state = load_lora_state(tmp_path / "out" / "vitruvian.safetensors")
    assert any(v.abs().sum() > 0 for k, v in state.unet.items() if "lora_B" in k)
    records = [json.loads(x) for x in (tmp_path / "out" / "progress.jsonl").read_text().splitlines()]
    if "mpd_combiner=sum" not in extra:
        assert "w_global" in records[-1]["metrics"] and "w_face" in records[-1]["metrics"]
