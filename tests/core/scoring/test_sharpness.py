"""Sharpness: Laplacian variance of the region crop (comparable across sizes) and relative to its image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitruvian.core.regions import Region, RegionBatch
from vitruvian.core.scoring import SharpnessScorer, laplacian_variance, score_regions
from vitruvian.core.scoring.sharpness import box_laplacian_variance


def _checker(size: int, cell: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((x // cell) + (y // cell)) % 2).float()


def test_value_laplacian_variance_closed_form():
    # A vertical step edge in 0-255 grey: the Laplacian is ±3·255 on the two columns next to it
    # (8-neighbour kernel, three rows each), 0 elsewhere.
    gray = torch.zeros(1, 1, 8, 8)
    gray[..., 4:] = 1.0
    lap = torch.zeros(8, 8)
    lap[:, 3], lap[:, 4] = 3 * 255.0, -3 * 255.0
    assert laplacian_variance(gray).item() == pytest.approx(lap.var(unbiased=False).item())
    assert laplacian_variance(torch.full((1, 1, 8, 8), 0.3)).item() == 0.0
    weight = torch.zeros(1, 1, 8, 8)
    weight[..., :2] = 1.0  # only the flat part
    assert laplacian_variance(gray, weight).item() == 0.0
    assert torch.isnan(laplacian_variance(gray, torch.zeros(1, 1, 8, 8))).all()


def test_value_blur_lowers_sharpness_and_size_is_normalised():
    """The same texture at two scales scores alike; the blurred copy scores far lower."""
    sharp_small = _checker(64, 4)
    sharp_big = F.interpolate(sharp_small[None, None], scale_factor=4, mode="nearest")[0, 0]  # 256 px, cell 16
    image = torch.zeros(1, 3, 256, 512)
    image[0, :, :64, :64] = sharp_small
    image[0, :, :, 256:] = sharp_big
    blurred = F.avg_pool2d(image, 9, stride=1, padding=4)
    regions = [Region("face", (0, 0, 64, 64), 1.0), Region("face", (256, 0, 512, 256), 1.0)]
    scorer = SharpnessScorer(size=64)
    a = scorer.score(image, regions, torch.tensor([0, 0]))["sharpness"]
    b = scorer.score(blurred, regions, torch.tensor([0, 0]))["sharpness"]
    assert a[0] == pytest.approx(a[1], rel=0.25)
    assert (b < 0.5 * a).all()


def test_value_relative_to_image():
    """A blurred patch in a sharp picture has sharpness_rel < 1; a sharp patch in it ≈ 1."""
    image = _checker(128, 2)[None, None].expand(1, 3, -1, -1).clone()
    image[..., :32, :32] = F.avg_pool2d(image[..., :32, :32], 5, stride=1, padding=2)
    regions = [Region("face", (0, 0, 32, 32), 1.0), Region("face", (64, 64, 128, 128), 1.0)]
    rel = SharpnessScorer().score(image, regions, torch.tensor([0, 0]))["sharpness_rel"]
    assert rel[0] < 0.3 and rel[1] == pytest.approx(1.0, abs=0.2)


def test_value_box_variance_matches_direct_computation():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 40, 30)
    boxes = [(3, 5, 20, 25), (0, 0, 30, 40)]
    per_box, per_image = box_laplacian_variance(image, torch.tensor([1, 0]), boxes)
    from kornia.color import rgb_to_grayscale
    from kornia.filters import laplacian

    lap = laplacian(rgb_to_grayscale(image.double()) * 255, 3, normalized=False)[:, 0]
    assert per_box[0].item() == pytest.approx(lap[1, 5:25, 3:20].var(unbiased=False).item(), rel=1e-9)
    assert per_box[1].item() == pytest.approx(per_image[0].item(), rel=1e-9)


def test_value_mask_weighting():
    """A hand mask covering only the flat half of a half-textured box scores ~0."""
    image = torch.zeros(1, 3, 64, 64)
    image[..., :, 32:] = _checker(64, 2)[:, 32:]
    mask = torch.zeros(64, 64)
    mask[:, :24] = 1.0
    batch = RegionBatch(((Region("hand", (0, 0, 64, 64), 1.0, mask=mask), Region("hand", (0, 0, 64, 64), 1.0)),), ((64, 64),))
    masked, whole = score_regions(image, batch, SharpnessScorer(size=64)).per_region["sharpness"][0]
    assert masked < 0.01 * whole
    unmasked, _ = score_regions(image, batch, SharpnessScorer(size=64, use_masks=False)).per_region["sharpness"][0]
    assert unmasked == pytest.approx(whole)


def test_exception():
    with pytest.raises(ValueError, match=r"SharpnessScorer: size must be an int ≥ 8, got 4"):
        SharpnessScorer(size=4)
    with pytest.raises(ValueError, match=r"gray must be \(P, 1, S_h, S_w\)"):
        laplacian_variance(torch.rand(1, 3, 8, 8))
