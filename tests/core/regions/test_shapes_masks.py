"""Hull and ellipse rasterisation; grow and feather (kornia)."""

import pytest
import torch

from vitruvian.core.regions import feather_mask, grow_mask
from vitruvian.core.regions.shapes import convex_hull, ellipse_mask, hull_mask


def test_value_convex_hull():
    pts = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [2.0, 2.0], [1.0, 3.0], [4.0, 2.0]])
    hull = convex_hull(pts)
    assert sorted(map(tuple, hull.tolist())) == [(0.0, 0.0), (0.0, 4.0), (4.0, 0.0), (4.0, 4.0)]
    assert convex_hull(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])).shape == (2, 2)


def test_value_hull_mask_triangle_and_margin():
    tri = convex_hull(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    m = hull_mask(tri, (0, 0, 10, 10))
    # Pixel centres with x + y <= 10 (x, y = i + 0.5): 55 of the 100 pixels.
    assert int(m.sum()) == 55 and m[0, 0] == 1 and m[9, 9] == 0
    grown = hull_mask(tri, (0, 0, 10, 10), margin=2.0)
    assert int(grown.sum()) > 55 and bool((grown >= m).all())


def test_value_ellipse_mask():
    m = ellipse_mask((0, 0, 20, 20), (0, 0, 20, 20))
    assert m.shape == (20, 20) and m[10, 10] == 1 and m[0, 0] == 0
    assert float(m.mean()) == pytest.approx(torch.pi / 4, abs=0.03)
    narrow = ellipse_mask((0, 0, 20, 20), (0, 0, 20, 20), scale_x=0.5)
    assert float(narrow.mean()) == pytest.approx(torch.pi / 8, abs=0.03) and narrow[10, 2] == 0


def test_value_grow_and_shrink():
    m = torch.zeros(1, 1, 21, 21)
    m[..., 10, 10] = 1
    assert int(grow_mask(m, 1).sum()) == 5  # a cross
    assert int(grow_mask(m, 2).sum()) == 21  # cross then square: an octagon of radius 2
    square = torch.zeros(1, 1, 21, 21)
    square[..., 5:16, 5:16] = 1
    assert int(grow_mask(square, -2).sum()) == 7 * 7
    assert torch.equal(grow_mask(square, 0), square)


@pytest.mark.parametrize("pixels", [3, 8, 60, 512, -3, -8, -60, -512])
def test_value_large_radius_stops_early_with_the_same_result(pixels):
    """The early stops (H + W steps, a fixed point) give exactly the step-by-step result."""
    from kornia.morphology import dilation, erosion

    torch.manual_seed(0)
    m = ((torch.rand(1, 1, 12, 15) > 0.9) | (torch.rand(1, 1, 12, 15) > 0.5) * (pixels < 0)).float()
    op = dilation if pixels > 0 else erosion
    kernels = (torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]]), torch.ones(3, 3))
    expected = m
    for step in range(min(abs(pixels), 80)):  # 80 > 12 + 15: saturated long before
        expected = op(expected, kernels[step % 2])
    assert torch.equal(grow_mask(m, pixels), expected)


def test_value_feather():
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    soft = feather_mask(m, 4)
    assert soft.shape == m.shape and 0.3 < float(soft[0, 0, 16, 8]) < 0.7  # the edge is half-way
    assert float(soft[0, 0, 16, 16]) > 0.99 and float(soft[0, 0, 16, 0]) < 0.01
    assert float(soft.sum()) == pytest.approx(float(m.sum()), rel=0.01)


def test_exception():
    with pytest.raises(ValueError, match=r"grow_mask: mask must be \(B, 1, H, W\), got \(4, 4\)"):
        grow_mask(torch.zeros(4, 4), 1)
    with pytest.raises(ValueError, match="feather_mask: pixels must be >= 0, got -1"):
        feather_mask(torch.zeros(1, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="pixels must be an int of at most 512 pixels, got 1.5"):
        grow_mask(torch.zeros(1, 1, 4, 4), 1.5)
