"""Batched crops: exact pixels, alignment across images, antialiasing, square boxes, mask crops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitruvian.core.regions import Region
from vitruvian.core.scoring.crops import crop_boxes, crop_region_masks, official_face_boxes, square_boxes


def test_smoke():
    out = crop_boxes(torch.rand(2, 3, 32, 32), torch.tensor([0, 1, 1]), torch.tensor([[0, 0, 8, 8], [4, 4, 20, 12], [0, 0, 32, 32.]]), 16)
    assert out.shape == (3, 3, 16, 16)
    assert crop_boxes(torch.rand(1, 3, 8, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), (4, 6)).shape == (0, 3, 4, 6)


def test_value_identity_and_integer_crop():
    image = torch.arange(64.0).view(1, 1, 8, 8)
    same = crop_boxes(image, torch.tensor([0]), torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 8, antialias=False)
    assert torch.allclose(same, image, atol=1e-4)
    part = crop_boxes(image, torch.tensor([0]), torch.tensor([[2.0, 3.0, 6.0, 5.0]]), (2, 4), mode="nearest")
    assert torch.equal(part[0, 0], image[0, 0, 3:5, 2:6])


def test_value_each_box_reads_its_own_image():
    """Boxes are grouped by image internally; the output order is the input order."""
    images = torch.stack([torch.full((3, 16, 16), float(b)) for b in range(3)])
    index = torch.tensor([2, 0, 1, 2, 0])
    boxes = torch.tensor([[0, 0, 8, 8], [4, 4, 12, 12], [1, 1, 15, 15], [8, 8, 16, 16], [0, 0, 16, 16.0]])
    out = crop_boxes(images, index, boxes, 4)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), index.float())


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])  # nearest: ties at .5 round either way
def test_value_matches_kornia_crop_and_resize(mode):
    """Same pixels as kornia's crop_and_resize given the first and last sample centres as its box corners."""
    from kornia.geometry.transform import crop_and_resize

    torch.manual_seed(0)
    image = torch.rand(2, 3, 40, 50)
    boxes = torch.tensor([[3.0, 4.0, 27.0, 36.0], [10.5, 0.0, 50.0, 20.25]])
    index = torch.tensor([1, 0])
    ours = crop_boxes(image, index, boxes, (16, 12), mode=mode, antialias=False)
    x0, y0, x1, y1 = boxes.unbind(1)
    fx0, fx1 = x0 + 0.5 * (x1 - x0) / 12 - 0.5, x1 - 0.5 * (x1 - x0) / 12 - 0.5
    fy0, fy1 = y0 + 0.5 * (y1 - y0) / 16 - 0.5, y1 - 0.5 * (y1 - y0) / 16 - 0.5
    corners = torch.stack([torch.stack([fx0, fy0], -1), torch.stack([fx1, fy0], -1),
                           torch.stack([fx1, fy1], -1), torch.stack([fx0, fy1], -1)], dim=1)
    theirs = crop_and_resize(image[index], corners, (16, 12), mode=mode, align_corners=True)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_value_antialias_matches_area_downscaling():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 256, 256)
    box = torch.tensor([[0.0, 0.0, 256.0, 256.0]])
    area = F.interpolate(image, size=32, mode="area")
    smooth = crop_boxes(image, torch.tensor([0]), box, 32)
    aliased = crop_boxes(image, torch.tensor([0]), box, 32, antialias=False)
    assert (smooth - area).abs().mean() < 0.5 * (aliased - area).abs().mean()


def test_value_square_and_face_boxes():
    assert square_boxes(torch.tensor([[0.0, 0.0, 10.0, 4.0]])).tolist() == [[3.0, 0.0, 7.0, 4.0]]
    assert square_boxes(torch.tensor([[0.0, 0.0, 10.0, 4.0]]), shrink=False).tolist() == [[0.0, -3.0, 10.0, 7.0]]
    # FaceScore: int(x0 - 1) … int(x1 + 1), kept inside the image (the rectangle: Resize + CenterCrop come later).
    faces = official_face_boxes([Region("face", (10.7, 20.2, 30.4, 50.9), 1.0), Region("face", (0.2, 0.5, 8, 8), 1.0),
                                 Region("face", (-5.0, 30.0, 60.0, 70.0), 1.0), Region("face", (45.0, 10.0, 50.0, 20.0), 1.0)],
                                [64] * 4, [40] * 4)
    assert faces[0].tolist() == [9.0, 19.0, 31.0, 51.0]  # x 9…31, y 19…51
    assert faces[1].tolist() == [0.0, 0.0, 9.0, 9.0]  # int(-0.8) = 0
    assert faces[2].tolist() == [0.0, 29.0, 40.0, 64.0]  # int(-6) = -6 (the official slice would wrap): clamped
    assert faces[3].tolist() == [39.0, 9.0, 40.0, 21.0]  # wholly right of the image: its last column
    assert official_face_boxes([], [], []).shape == (0, 4)


def test_value_region_mask_crop():
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0  # left half of the box
    r = Region("hand", (8.0, 8.0, 16.0, 16.0), 1.0, mask=mask)
    out = crop_region_masks([r, Region("face", (0, 0, 4, 4), 1.0)], torch.tensor([[8.0, 8.0, 16.0, 16.0], [0, 0, 8, 8.0]]), 8)
    assert out.shape == (2, 1, 8, 8)
    assert out[0, 0, :, :3].min() > 0.99 and out[0, 0, :, 5:].max() < 0.01
    assert out[1, 0, :3, :3].min() > 0.99 and out[1, 0, 5:, 5:].max() < 0.01  # no mask: the box, zeros around


def test_exception():
    with pytest.raises(ValueError, match=r"crop_boxes: image must be \(B, C, H, W\), got \(3, 8, 8\)"):
        crop_boxes(torch.rand(3, 8, 8), torch.tensor([0]), torch.tensor([[0, 0, 4, 4.0]]), 4)
    with pytest.raises(ValueError, match=r"image_index must be in \[0, 0\]"):
        crop_boxes(torch.rand(1, 3, 8, 8), torch.tensor([1]), torch.tensor([[0, 0, 4, 4.0]]), 4)
    with pytest.raises(ValueError, match="mode must be one of bilinear, bicubic, nearest"):
        crop_boxes(torch.rand(1, 3, 8, 8), torch.tensor([0]), torch.tensor([[0, 0, 4, 4.0]]), 4, mode="area")
    with pytest.raises(ValueError, match="x0 < x1"):
        crop_boxes(torch.rand(1, 3, 8, 8), torch.tensor([0]), torch.tensor([[4, 0, 4, 4.0]]), 4)
