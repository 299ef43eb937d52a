"""face-guidance (FaceScore v1 reading): the bad face's denoising error toward ε* drops inside the face only."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.objectives.losses import denoise_error
from vitruvian.trainers.objectives import FaceGuidance, ObjectiveContext, get_objective
from vitruvian.trainers.families.ddpm import DDPMProcess

from ..tiny import tiny_scheduler
from .objective_kit import FACE, region_pairs, run_cli
from .test_objectives import make_batch
from .test_patch_dpo import PixelModel


def face_batch(B=2):
    batch = make_batch(B, same_pair=True)
    batch["latents"][:, 1, :, 1:4, 1:4] += 1.5  # the bad face: differs only inside the face cells
    batch["face_boxes"] = [[torch.tensor([FACE]), torch.tensor([FACE])] for _ in range(B)]
    return batch


def test_target_value():
    """ε* = ε + √(ᾱ/(1−ᾱ))·(x0_b − x0_g); it denoises x_t^b to x0_g."""
    sched = tiny_scheduler()
    g = torch.Generator().manual_seed(0)
    x0_g, x0_b, eps = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([10, 700])
    x_t = sched.add_noise(x0_b, eps, t)
    star = DDPMProcess(sched).target_towards(x_t, x0_g, t)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(star, eps + (a / (1 - a)).sqrt() * (x0_b - x0_g), atol=1e-4)
    assert torch.allclose((x_t - (1 - a).sqrt() * star) / a.sqrt(), x0_g, atol=1e-4)


def test_error_drops_inside_only():
    """Toy per-pixel model, λ = 0: the guidance error falls inside the face; outside it does not move."""
    torch.manual_seed(0)
    model = PixelModel()
    sched = tiny_scheduler()
    obj = FaceGuidance(lam=0.0, dilate=0.0)
    batch = face_batch()
    inside = torch.zeros(1, 1, 8, 8)
    inside[..., 1:4, 1:4] = 1.0

    def errors():  # bad-image error toward ε* at fixed (t, ε), inside and outside the face
        g = torch.Generator().manual_seed(123)
        x0_g, x0_b = batch["latents"][:, 0], batch["latents"][:, 1]
        t = torch.full((2,), 300)
        eps = torch.randn(x0_b.shape, generator=g)
        x_t = sched.add_noise(x0_b, eps, t)
        with torch.no_grad():
            pred = model(x_t, t)[0]
        star = DDPMProcess(sched).target_towards(x_t, x0_g, t)
        m = inside.expand(2, 1, 8, 8)
        return denoise_error(pred, star, m, "mask").mean().item(), denoise_error(pred, star, 1 - m, "mask").mean().item()

    before = errors()
    ctx = ObjectiveContext(unet=model, scheduler=sched, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        out = obj(batch, ctx)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = errors()
    assert after[0] < 0.5 * before[0]
    assert after[1] == pytest.approx(before[1], rel=1e-6)


def test_lambda_trains_good_image_everywhere():
    model = PixelModel()
    ctx = ObjectiveContext(unet=model, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
    out = FaceGuidance(lam=1.0, dilate=0.0)(face_batch(), ctx)
    out.loss.backward()
    assert model.b.grad[..., 5:, 5:].abs().sum() > 0  # outside the face: the ordinary loss on the good image
    assert set(out.metrics) >= {"guide", "mse_good", "face_area"}


def test_exception():
    ctx = ObjectiveContext(unet=PixelModel(), scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
    batch = face_batch()
    batch["latents"] = batch["latents"][:, :1]
    with pytest.raises(ValueError, match=r"\[good, bad\] pairs"):
        FaceGuidance()(batch, ctx)
    with pytest.raises(ValueError, match="lam"):
        FaceGuidance(lam=-1.0)


def test_from_config():
    from vitruvian.trainers.config import TrainConfig

    cfg = TrainConfig(objective="face-guidance", base="/m", data="/d", out="/o", guidance_lambda=0.5,
                      guidance_masked=False)
    obj = get_objective("face-guidance", cfg)
    assert (obj.lam, obj.masked) == (0.5, False)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    from vitruvian.core.lora_io import load_lora_state

    data = region_pairs(tmp_path / "data", hands=False, quality=False)
    assert run_cli("face-guidance", data, tmp_path / "out") == 0
    state = load_lora_state(tmp_path / "out" / "vitruvian.safetensors")
    assert any(v.abs().sum() > 0 for k, v in state.unet.items() if "lora_B" in k)
