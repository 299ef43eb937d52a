"""Regions from a mask: one per blob, soft values kept, the box is the blob's extent."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import MASK_LABEL, regions_from_mask


def test_smoke():
    batch = regions_from_mask(torch.zeros(2, 1, 16, 16))
    assert len(batch) == 2 and batch.count() == 0 and batch.image_sizes == ((16, 16), (16, 16))


def test_value_blobs():
    m = torch.zeros(2, 1, 64, 48)
    m[0, 0, 4:12, 30:40] = 1.0
    m[0, 0, 40:60, 2:10] = 0.6
    m[1, 0, 63, 47] = 1.0  # one pixel in the corner
    batch = regions_from_mask(m)
    first = batch[0]
    assert [r.box for r in first] == [(2.0, 40.0, 10.0, 60.0), (30.0, 4.0, 40.0, 12.0)]
    assert all(r.label == MASK_LABEL and r.score == 1.0 and r.source == "mask" for r in first)
    assert first[0].mask is not None and float(first[0].mask.max()) == pytest.approx(0.6)  # soft values kept
    assert first[1].mask is None  # all ones: the box is the shape
    assert [r.box for r in batch[1]] == [(47.0, 63.0, 48.0, 64.0)]


def test_value_shape_of_a_blob():
    """An L-shaped blob is one region whose shape is the L, not its box."""
    m = torch.zeros(1, 1, 32, 32)
    m[0, 0, 4:20, 4:8] = 1
    m[0, 0, 16:20, 4:20] = 1
    (region,) = regions_from_mask(m)[0]
    assert region.box == (4.0, 4.0, 20.0, 20.0)
    assert float(region.mask.sum()) == float(m.sum()) and float(region.mask[0, 15]) == 0.0


def test_value_cell_merges_near_blobs():
    m = torch.zeros(1, 1, 32, 32)
    m[0, 0, 4:8, 4:8] = 1
    m[0, 0, 4:8, 10:14] = 1  # 2 px apart
    assert len(regions_from_mask(m, cell=4)[0]) == 1
    assert len(regions_from_mask(m, cell=1)[0]) == 2


def test_exception():
    with pytest.raises(ValueError, match=r"regions_from_mask: mask must be \(B, 1, H, W\), got \(16, 16\)"):
        regions_from_mask(torch.zeros(16, 16))
    with pytest.raises(ValueError, match="cell must be an int ≥ 1, got 0"):
        regions_from_mask(torch.zeros(1, 1, 8, 8), cell=0)
