"""Paste: pixels outside the mask are bit-identical; the mask follows the region's shape, grows with
dilation, softens with feathering and never leaves a straight edge at the crop's border."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import CropPlan, noise_mask, paste, paste_mask, plan_crop, shape_mask
from vitruvian.core.regions import Region


def _disc(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (((y - size / 2) ** 2 + (x - size / 2) ** 2) <= (size / 2) ** 2).float()


def test_smoke():
    plan = plan_crop((20, 20, 40, 40), (64, 64), context_factor=2.0, target_size=64, max_size=128)
    m = paste_mask(Region("face", (20, 20, 40, 40), 1.0), plan, dilation=2, feather=3)
    assert m.shape == (1, 1, *plan.rect_size) and 0 <= float(m.min()) and float(m.max()) <= 1
    assert noise_mask(m, plan).shape == (1, 1, *plan.size)


@pytest.mark.parametrize("dilation,feather", [(0, 0), (3, 0), (0, 5), (6, 9), (-2, 4)])
def test_value_outside_mask_bit_identical(dilation, feather):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 96, 80)
    region = Region("hand", (30.5, 40.2, 55.7, 70.9), 1.0, mask=_disc(31))
    plan = plan_crop(region.box, (96, 80), context_factor=1.8, target_size=128, max_size=256)
    m = paste_mask(region, plan, dilation=dilation, feather=feather)
    rh, rw = plan.rect_size
    out = paste(image, torch.rand(1, 3, rh, rw), m, plan)
    full = torch.zeros(1, 1, 96, 80)
    x0, y0, x1, y1 = plan.inside
    rx0, ry0 = plan.rect[:2]
    full[..., y0:y1, x0:x1] = m[..., y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
    untouched = (full == 0).expand_as(image)
    assert torch.equal(out[untouched], image[untouched])
    assert not torch.equal(out[~untouched], image[~untouched])
    assert untouched.any() and (~untouched).any()


def test_value_shape_not_box():
    """A disc-shaped region pastes a disc: the box corners stay untouched."""
    region = Region("face", (16, 16, 48, 48), 1.0, mask=_disc(32))
    plan = plan_crop(region.box, (64, 64), context_factor=1.5, target_size=64, max_size=128)
    m = paste_mask(region, plan)
    x0, y0 = plan.rect[:2]
    assert float(m[0, 0, 32 - y0, 32 - x0]) == 1.0  # centre
    assert float(m[0, 0, 17 - y0, 17 - x0]) == 0.0  # a corner of the box, outside the disc
    assert torch.equal(shape_mask(region, plan), m)  # no dilation, no feather: the shape itself


def test_value_dilation_and_feather():
    region = Region("face", (24, 24, 40, 40), 1.0)
    plan = CropPlan(0, 0, (0, 0, 64, 64), (128, 128), (64, 64))
    base = paste_mask(region, plan)
    grown = paste_mask(region, plan, dilation=4)
    assert int((grown > 0).sum()) > int((base > 0).sum()) and torch.all(grown >= base)
    soft = paste_mask(region, plan, feather=6)
    row = soft[0, 0, 32, :32]
    assert torch.all(row[1:] >= row[:-1] - 1e-6), "the edge ramps up monotonically towards the region"
    assert 0.2 < float(soft[0, 0, 32, 24]) < 0.8 and float(soft[0, 0, 32, 32]) > 0.95


def test_value_fades_at_the_crop_border():
    """A shape touching the crop's side fades to 0 there when that side is inside the image."""
    region = Region("person", (0, 10, 100, 90), 1.0)  # wider than the crop will be
    plan = CropPlan(0, 0, (20, 0, 80, 100), (128, 128), (100, 100))
    m = paste_mask(region, plan, feather=4)
    assert float(m[0, 0, 50, 0]) < 0.15 and float(m[0, 0, 50, -1]) < 0.15  # left/right sides: inside the image
    assert float(m[0, 0, 50, 30]) == pytest.approx(1.0, abs=1e-4)
    at_image_edge = CropPlan(0, 0, (0, 0, 60, 100), (128, 128), (100, 100))
    m = paste_mask(region, at_image_edge, feather=4)
    assert float(m[0, 0, 50, 0]) > 0.9  # the image's own edge: nothing beyond, no fade


def test_value_past_the_image_is_zero():
    region = Region("face", (0, 0, 10, 10), 1.0)
    plan = CropPlan(0, 0, (-8, -8, 16, 16), (64, 64), (32, 32))
    m = paste_mask(region, plan, dilation=3)
    assert float(m[..., :8, :].abs().sum()) == 0 and float(m[..., :, :8].abs().sum()) == 0
    out = paste(torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 24, 24), m, plan)
    assert out.shape == (1, 3, 32, 32) and float(out[0, 0, 2, 2]) == 1.0


def test_value_mask_from_a_clipped_region():
    """A hand mask given for a box partly outside is clipped with the box (Region.clipped) and pastes."""
    region = Region("hand", (-6, -6, 10, 10), 1.0, mask=_disc(16)).clipped(32, 32)
    plan = plan_crop(region.box, (32, 32), context_factor=2.0, target_size=64, max_size=128)
    m = paste_mask(region, plan)
    assert m.sum() > 0 and float(m[0, 0, 0, 0]) == 1.0
