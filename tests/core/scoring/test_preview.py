"""draw_regions: masks tinted by label, boxes in the label colour, scores written, inputs checked."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.regions import Region, RegionBatch
from vitruvian.core.scoring.preview import LABEL_COLORS, draw_regions, format_score


def _batch() -> RegionBatch:
    mask = torch.zeros(40, 40)
    mask[10:30, 10:30] = 1.0
    face = Region("face", (20, 40, 60, 80), 0.9, mask=mask, scores={"sharpness": 412.7, "facescore": 3.14159})
    return RegionBatch(((face,), ()), ((128, 128),) * 2)


def test_smoke():
    out = draw_regions(torch.zeros(2, 3, 128, 128), _batch())
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_value_drawing():
    out = draw_regions(torch.zeros(2, 3, 128, 128), _batch(), mask_opacity=0.5, thickness=2)
    gold = torch.tensor(LABEL_COLORS["face"]) / 255
    assert torch.allclose(out[0, :, 60, 40], gold * 0.5, atol=1 / 255)  # inside the mask: half tint
    assert torch.allclose(out[0, :, 45, 25], torch.zeros(3), atol=1 / 255)  # in the box, outside the mask
    assert torch.allclose(out[0, :, 60, 20], gold, atol=1 / 255)  # the box's left edge
    outside = out[0].clone()
    outside[:, 40:80, 20:60] = 0
    assert outside.sum() > 0  # the label and scores, written next to the box
    assert out[1].abs().sum() == 0  # no regions, nothing drawn


def test_value_score_selection_changes_the_text():
    image = torch.zeros(1, 3, 128, 128)
    batch = RegionBatch((_batch()[0],), ((128, 128),))
    one = draw_regions(image, batch, score_names=["sharpness"], mask_opacity=0)
    both = draw_regions(image, batch, mask_opacity=0)
    assert not torch.equal(one, both)


def test_value_format_score():
    assert [format_score(v) for v in (0.91234, 3.14159, 412.7, 12345.6, -0.5)] == ["0.912", "3.14", "413", "12346", "-0.5"]


def test_exception():
    with pytest.raises(ValueError, match=r"image must be \(B, 3, H, W\)"):
        draw_regions(torch.zeros(2, 128, 128, 3), _batch())
    with pytest.raises(ValueError, match="regions of image 0 were found on a 128×128 image, but the image is 64×64"):
        draw_regions(torch.zeros(2, 3, 64, 64), _batch())
