"""Crop geometry: the region sets the scale, the crop keeps its aspect on the latent grid, stays inside
the image where it can, and comes back to the same pixels."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import MIN_SIDE, CropPlan, crop_image, plan_crop, region_scale, resize_back, square_size
from vitruvian.core.refine.plan import RefineSettings


def _plan(box, size=(256, 256), **kw):
    args = dict(context_factor=2.0, target_size=128, max_size=512)
    args.update(kw)
    return plan_crop(box, size, **args)


def test_smoke():
    plan = _plan((100, 100, 132, 132))
    assert isinstance(plan, CropPlan)
    assert crop_image(torch.rand(1, 3, 256, 256), plan).shape == (1, 3, *plan.size)


@pytest.mark.parametrize("box", [(100, 100, 132, 132), (10, 40, 50, 47.5), (3.3, 7.1, 91.9, 20.2), (200, 5, 230, 90)])
@pytest.mark.parametrize("context", [1.0, 1.7, 3.0])
def test_value_geometry(box, context):
    """Multiples of 8, ≥ MIN_SIDE, ≤ max_size; the region is sampled at target_size; aspect kept to half a pixel."""
    plan = _plan(box, context_factor=context)
    h, w = plan.size
    assert h % 8 == 0 and w % 8 == 0 and min(h, w) >= MIN_SIDE and max(h, w) <= 512
    s = region_scale(box, 128)
    sy, sx = plan.scale
    rh, rw = plan.rect_size
    # Half a source pixel of rounding on each side of the rectangle, at most.
    assert abs(sy - s) <= s * 0.5 / rh + 1e-9 and abs(sx - s) <= s * 0.5 / rw + 1e-9
    # The rectangle is inside the 256 x 256 image (the context is cut at its extent) and holds the box's centre.
    x0, y0, x1, y1 = plan.rect
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    assert x0 <= (box[0] + box[2]) / 2 <= x1 and y0 <= (box[1] + box[3]) / 2 <= y1


def test_value_context_and_max_size():
    box = (100, 100, 132, 148)  # 32 x 48
    small = _plan(box, context_factor=1.5)
    assert small.size == (192, 128)  # 48 * 1.5 * (128 / 48), 32 * 1.5 * (128 / 48)
    capped = _plan(box, context_factor=4.0, max_size=384)
    assert max(capped.size) == 384 and capped.scale[0] == pytest.approx(128 / 48, rel=0.01)  # context cut, not scale


def test_value_moved_inside_and_padded():
    near_corner = _plan((0, 0, 20, 20), context_factor=3.0, target_size=64)
    assert near_corner.rect[:2] == (0, 0)  # moved, not cut
    cut = plan_crop((2, 2, 14, 14), (16, 16), context_factor=3.0, target_size=64, max_size=256)
    assert cut.inside == cut.rect  # the context is cut at the image's extent
    tiny_image = plan_crop((2, 2, 14, 14), (16, 16), context_factor=3.0, target_size=64, max_size=256, square=True)
    x0, y0, x1, y1 = tiny_image.rect
    assert x0 < 0 and y0 < 0 and x1 > 16 and y1 > 16  # larger than the image: centred, reaching past it
    assert tiny_image.inside == (0, 0, 16, 16)
    image = torch.rand(1, 3, 16, 16)
    crop = crop_image(image, tiny_image)
    assert crop.shape == (1, 3, *tiny_image.size) and torch.isfinite(crop).all()


def test_value_pixels_at_scale_one():
    """With size == rectangle the crop is the image's pixels (and the edge replication past it)."""
    plan = CropPlan(0, 0, (-2, 4, 6, 12), (8, 8), (16, 16))
    image = torch.rand(1, 3, 16, 16)
    crop = crop_image(image, plan)
    assert torch.equal(crop[..., 2:], image[..., 4:12, 0:6])
    assert torch.equal(crop[..., 0], image[..., 4:12, 0]) and torch.equal(crop[..., 1], image[..., 4:12, 0])


def test_value_round_trip():
    """Up and back down: a smooth image survives with a small error (bicubic + antialias)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([x, y, (x + y) / 2])[None]
    plan = plan_crop((20, 20, 40, 36), (64, 64), context_factor=1.5, target_size=128, max_size=512)
    back = resize_back(crop_image(image, plan), plan)
    x0, y0, x1, y1 = plan.inside
    assert back.shape[-2:] == plan.rect_size
    assert (back - image[..., y0:y1, x0:x1]).abs().max() < 0.02


def test_value_picks_the_image_of_the_batch():
    images = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    plan = plan_crop((8, 8, 24, 24), (32, 32), context_factor=1.0, target_size=64, max_size=128, image_index=1)
    assert crop_image(images, plan).min() > 1 - 1e-5


def test_value_square():
    settings = RefineSettings(target_size=128, max_size=512, context_factor=2.0)
    for box in [(10, 10, 40, 20), (100, 30, 110, 90), (0, 0, 64, 64)]:
        plan = plan_crop(box, (256, 256), context_factor=2.0, target_size=128, max_size=512, square=True)
        assert plan.size == square_size(settings) == (256, 256)
        rh, rw = plan.rect_size
        assert rh == rw
    assert square_size(RefineSettings(target_size=512, max_size=768, context_factor=3.0)) == (768, 768)
