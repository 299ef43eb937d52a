"""The seam metric on synthetic images with a known seam: values, zero without a seam, and a feathered
paste scoring below a hard one."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import SEAM_KEYS, seam_metric
from vitruvian.core.refine.paste import paste, paste_mask
from vitruvian.core.refine.crop import CropPlan
from vitruvian.core.regions import Region


def _square_mask(size=64, lo=16, hi=48):
    m = torch.zeros(1, 1, size, size)
    m[..., lo:hi, lo:hi] = 1
    return m


def test_smoke():
    out = seam_metric(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    assert set(out) == set(SEAM_KEYS) and all(v.shape == (2,) and v.dtype == torch.float64 for v in out.values())


@pytest.mark.parametrize("delta", [0.05, 0.1, 0.3])
def test_value_straight_seam(delta):
    """A tone shift of delta on one half reads delta in colour and in gradient."""
    image = torch.full((1, 3, 32, 32), 0.4)
    image[..., :16] += delta
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    out = seam_metric(image, mask)
    assert float(out["colour"]) == pytest.approx(delta, abs=1e-6)
    assert float(out["gradient"]) == pytest.approx(delta, abs=1e-6)


def test_value_square_seam():
    image = torch.full((1, 3, 64, 64), 0.5)
    image[..., 16:48, 16:48] += 0.2
    out = seam_metric(image, _square_mask())
    assert float(out["colour"]) == pytest.approx(0.2, abs=1e-6)
    assert float(out["gradient"]) == pytest.approx(0.2, rel=0.02)  # corners of a square differ a little


def test_value_no_seam():
    smooth = torch.linspace(0, 1, 64).expand(1, 3, 64, 64).clone()
    out = seam_metric(smooth, _square_mask())
    assert float(out["gradient"]) == pytest.approx(0.0, abs=1e-6)  # a ramp's gradient is the same on and off the edge
    out = seam_metric(torch.full((1, 3, 64, 64), 0.3), _square_mask())
    assert float(out["colour"]) == pytest.approx(0.0, abs=1e-6) and float(out["gradient"]) == pytest.approx(0.0, abs=1e-6)


def test_value_edge_already_in_the_picture():
    """Before/after: a picture whose own edge follows the mask reads the same before and after a paste
    that did not change anything there."""
    image = torch.full((1, 3, 64, 64), 0.2)
    image[..., 16:48, 16:48] = 0.7
    before = seam_metric(image, _square_mask())
    assert float(before["colour"]) == pytest.approx(0.5, abs=1e-6)
    assert torch.equal(seam_metric(image.clone(), _square_mask())["colour"], before["colour"])


def test_value_feathered_paste_beats_hard_paste():
    torch.manual_seed(0)
    image = torch.full((1, 3, 64, 64), 0.5) + 0.02 * torch.randn(1, 3, 64, 64)
    refined = (image + 0.15).clamp(0, 1)  # a refinement that shifted the tone
    region = Region("face", (16, 16, 48, 48), 1.0)
    plan = CropPlan(0, 0, (0, 0, 64, 64), (128, 128), (64, 64))
    hard = paste(image, refined, paste_mask(region, plan), plan)
    soft_mask = paste_mask(region, plan, feather=8)
    soft = paste(image, refined, soft_mask, plan)
    hard_seam = seam_metric(hard, (paste_mask(region, plan) >= 0.5).float())
    soft_seam = seam_metric(soft, soft_mask)
    assert float(hard_seam["colour"]) > 0.1
    assert float(soft_seam["colour"]) < 0.5 * float(hard_seam["colour"])
    assert float(soft_seam["gradient"]) < 0.5 * float(hard_seam["gradient"])


def test_value_no_edge_is_nan():
    out = seam_metric(torch.rand(2, 3, 16, 16), torch.stack([torch.zeros(1, 16, 16), torch.ones(1, 16, 16)]))
    assert torch.isnan(out["colour"]).all() and torch.isnan(out["gradient"]).all()


def test_exception():
    with pytest.raises(ValueError, match=r"seam_metric: image must be \(B, C, H, W\) and mask \(B, 1, H, W\)"):
        seam_metric(torch.rand(1, 3, 16, 16), torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="band must be an int ≥ 1, got 0"):
        seam_metric(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16), band=0)
