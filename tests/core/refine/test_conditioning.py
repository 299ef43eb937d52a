"""Conditioning cut to a crop: masks and hints at their own resolution, areas in the crop's latent cells."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import CropPlan
from vitruvian.core.refine.conditioning import crop_area, crop_cond_mask, crop_hint

# A 64 x 64 rectangle at (32, 32) of a 128 x 128 image, sampled at 128 x 128 (2x).
PLAN = CropPlan(0, 0, (32, 32, 96, 96), (128, 128), (128, 128))


def test_value_cond_mask_any_resolution():
    full = torch.zeros(1, 128, 128)
    full[:, :, 64:] = 1  # the right half
    quarter = torch.nn.functional.interpolate(full[None], size=(32, 32))[0]
    for mask in (full, quarter, full[0], full[:, None]):
        cut = crop_cond_mask(mask, PLAN)
        assert cut.ndim == 3 and cut.shape[0] == 1
        w = cut.shape[-1]
        assert float(cut[..., : w // 2].sum()) == 0 and bool((cut[..., w // 2 :] == 1).all())


def test_value_cond_mask_batch_and_outside():
    masks = torch.stack([torch.zeros(16, 16), torch.ones(16, 16)])
    plan = CropPlan(1, 0, (-16, 0, 48, 64), (128, 128), (64, 64))
    assert crop_cond_mask(masks, plan, batch_size=2).shape == (1, 16, 16)
    cut = crop_cond_mask(masks, plan, batch_size=2)
    assert float(cut[..., :4].sum()) == 0 and bool((cut[..., 4:] == 1).all())  # zero past the image
    assert float(crop_cond_mask(masks, plan, batch_size=3).sum()) == 0  # N != B: entry 0 for every image


def test_value_area():
    assert crop_area((16, 16, 0, 0), PLAN) == (16, 16, 0, 0)  # the whole image covers the whole crop
    assert crop_area((8, 8, 0, 0), PLAN) == (8, 8, 0, 0)  # top-left 64 px: the crop's top-left quarter
    assert crop_area((8, 16, 8, 0), PLAN) == (8, 16, 8, 0)  # the bottom half (y 64..128) → crop cells 8..16
    assert crop_area((4, 16, 12, 0), PLAN) is None  # y 96..128: below the crop
    assert crop_area((2, 2, 0, 0), PLAN) is None  # y, x 0..16 px: misses the crop
    assert crop_area(("percentage", 0.5, 0.5, 0.5, 0.5), PLAN) == (8, 8, 8, 8)


def test_value_hint():
    hint = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)  # half the image's resolution
    cut = crop_hint(hint, PLAN)
    assert cut.shape == (1, 1, 32, 32) and torch.equal(cut, hint[..., 16:48, 16:48])
    plan = CropPlan(0, 0, (-32, 0, 32, 64), (128, 128), (128, 128))
    padded = crop_hint(hint, plan)
    assert padded.shape == (1, 1, 32, 32) and torch.equal(padded[..., 0], padded[..., 16])


def test_exception():
    with pytest.raises(ValueError, match=r"crop_area: area must be \(h, w, y, x\) or \('percentage'"):
        crop_area(("pixels", 1, 1, 0, 0), PLAN)
    with pytest.raises(ValueError, match=r"crop_cond_mask: mask must be \(N, H, W\)"):
        crop_cond_mask(torch.zeros(2, 3, 8, 8), PLAN)
    with pytest.raises(ValueError, match=r"crop_hint: hint must be \(N, C, H, W\)"):
        crop_hint(torch.zeros(8, 8), PLAN)
