"""Regions ↔ Impact Pack SEGS, with the plain namedtuple (Impact itself is not needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitruvian.core.regions import SEG, Region, RegionBatch, crop_region, regions_to_segs, segs_to_regions


def _batch() -> RegionBatch:
    oval = torch.zeros(20, 17)  # the pixel extent of the box below: x 30..47, y 10..30
    oval[2:18, 3:13] = 1
    face = Region("face", (30.5, 10.0, 46.25, 30.0), 0.9, mask=oval, source="keypoints:face68:hull")
    hand = Region("hand", (2, 50, 22, 62), 0.7, handedness="left")
    return RegionBatch(((face, hand), ()), ((64, 80), (64, 80)))


def test_value_crop_region():
    assert crop_region((10, 10, 30, 20), 100, 100, 3.0) == [0, 0, 60, 30]  # shifted, not cut, at the border
    assert crop_region((40, 40, 60, 60), 100, 100, 1.0) == [40, 40, 60, 60]
    assert crop_region((40, 40, 60, 60), 50, 50, 10.0) == [0, 0, 50, 50]  # larger than the image: cut


def test_value_to_segs_layout():
    batch = _batch()
    image = torch.rand(2, 64, 80, 3)
    (h, w), segs = regions_to_segs(batch, 0, image=image, crop_factor=2.0)
    assert (h, w) == (64, 80) and [s.label for s in segs] == ["face", "hand"]
    face = segs[0]
    assert isinstance(face, SEG) and face._fields == (
        "cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper")
    x0, y0, x1, y1 = face.crop_region
    assert face.cropped_mask.dtype == np.float32 and face.cropped_mask.shape == (y1 - y0, x1 - x0)
    assert torch.equal(face.cropped_image, image[0:1, y0:y1, x0:x1, :])
    assert face.bbox.dtype == np.float32 and face.confidence == pytest.approx(0.9)
    assert face.control_net_wrapper is None
    # The shape mask survives: fewer mask pixels than the box has.
    assert face.cropped_mask.sum() == batch[0][0].mask.sum() < 20 * 17
    assert regions_to_segs(batch, 1)[1] == []


def test_value_round_trip():
    batch = _batch()
    back, notes = segs_to_regions(regions_to_segs(batch, 0, crop_factor=3.0))
    assert notes == [] and back.image_sizes == ((64, 80),)
    for a, b in zip(batch[0], back[0]):
        assert (a.label, a.score) == (b.label, pytest.approx(b.score))
        assert b.box == pytest.approx(a.box, abs=1e-4)
        assert torch.equal(a.crop_mask(), b.crop_mask())
    assert back[0][1].mask is None  # a full box comes back as "the box is the shape"
    assert back[0][0].source == "segs"


def test_value_impact_style_segs_are_read():
    """What Impact's bbox detector makes: int crop region, a filled-rectangle mask, numpy confidence."""
    mask = np.zeros((40, 40), dtype=np.float32)
    mask[10:30, 12:28] = 1
    seg = SEG(None, mask, np.float32(0.83), [0, 0, 40, 40], np.array([12.0, 10.0, 28.0, 30.0]), "face", None)
    regions, notes = segs_to_regions(((48, 48), [seg]))
    (face,) = regions[0]
    assert face.box == (12.0, 10.0, 28.0, 30.0) and face.mask is None and face.score == pytest.approx(0.83)


def test_value_outside_the_image_is_clipped_or_dropped():
    inside = np.ones((10, 10), dtype=np.float32)
    part = SEG(None, inside, 0.9, [55, 0, 64, 10], np.array([55.0, 0.0, 70.0, 10.0]), "hand")
    away = SEG(None, inside, 0.9, [0, 0, 10, 10], np.array([100.0, 100.0, 110.0, 110.0]), "hand")
    loud = SEG(None, None, 7.0, [0, 0, 10, 10], np.array([0.0, 0.0, 10.0, 10.0]), "face")
    regions, notes = segs_to_regions(((32, 64), [part, away, loud]))
    assert [r.box for r in regions[0]] == [(55.0, 0.0, 64.0, 10.0), (0.0, 0.0, 10.0, 10.0)]
    assert regions[0][1].score == 1.0
    assert notes == [
        "SEG 0 (hand): bbox (55.0, 0.0, 70.0, 10.0) clipped to the 64×32 image",
        "SEG 1 (hand): bbox (100.0, 100.0, 110.0, 110.0) is outside the 64×32 image, dropped",
        "SEG 2 (face): confidence 7 clipped to [0, 1]",
    ]


def test_exception():
    with pytest.raises(ValueError, match=r"index must be in \[0, 1\] \(the batch has 2 images\), got 2"):
        regions_to_segs(_batch(), 2)
    with pytest.raises(ValueError, match=r"image must be the IMAGE \(B, 64, 80, C\)"):
        regions_to_segs(_batch(), 0, image=torch.rand(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"segs must be Impact SEGS \(\(H, W\), \[SEG, ...\]\), got str"):
        segs_to_regions("segs")
    with pytest.raises(ValueError, match="SEG 0 .* has no 'cropped_mask'; expected Impact's SEG namedtuple"):
        segs_to_regions(((8, 8), [object()]))
