"""Region shapes rasterised over a box: the convex hull of landmarks, and an ellipse.

Both return crop-local masks over the box's pixel extent (:func:`~.types.pixel_box`), sampled at
pixel centres, so they can be stored as :attr:`Region.mask` as they are.

Shape:
    - points: ``(N, 2)`` float32 x, y in image pixels.
    - masks: ``(h, w)`` float32 in {0, 1}, h, w = the box's pixel extent.
"""

from __future__ import annotations

import math

import torch

__all__ = ["convex_hull", "hull_mask", "ellipse_mask", "pixel_centres"]


def convex_hull(points: torch.Tensor) -> torch.Tensor:
    """Vertices of the convex hull of ``points`` ``(N, 2)``, counter-clockwise in image axes
    (y down), without repeats. ``-> (M, 2)``, M ≤ N; fewer than 3 for degenerate input.

    Andrew's monotone chain, written out here (about 15 lines) because neither scipy nor
    OpenCV is a dependency of the pack.

    Example:
        >>> square = torch.tensor([[0., 0.], [2., 0.], [2., 2.], [0., 2.], [1., 1.]])
        >>> convex_hull(square).shape
        torch.Size([4, 2])
    """
    pts = sorted({(float(x), float(y)) for x, y in points.tolist()})
    if len(pts) < 3:
        return torch.tensor(pts, dtype=torch.float32).reshape(-1, 2)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        chain = []
        for p in seq:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = half(pts) + half(reversed(pts))
    return torch.tensor(hull, dtype=torch.float32)


def pixel_centres(x0: int, y0: int, x1: int, y1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates of the integer box: ``(xs (1, w), ys (h, 1))``."""
    xs = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5
    ys = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5
    return xs, ys


def hull_mask(hull: torch.Tensor, pixel_box: tuple[int, int, int, int], margin: float = 0.0) -> torch.Tensor:
    """The convex polygon ``hull`` ``(M, 2)`` (as from :func:`convex_hull`, M ≥ 3) grown by
    ``margin`` pixels (each edge moved outwards; corners mitred, then cut by the box), rasterised
    over ``pixel_box`` = ``(x0, y0, x1, y1)`` ints. ``-> (h, w)`` float32 in {0, 1}.

    A pixel is inside when its centre is on the inner side of every (moved) edge.
    """
    x0, y0, x1, y1 = pixel_box
    xs, ys = pixel_centres(x0, y0, x1, y1)
    inside = torch.ones(y1 - y0, x1 - x0, dtype=torch.bool)
    m = hull.shape[0]
    for i in range(m):
        (ax, ay), (bx, by) = hull[i].tolist(), hull[(i + 1) % m].tolist()
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey)
        if length == 0:
            continue
        # Counter-clockwise (y down) hull: the interior is where the cross product is >= 0.
        # Dividing by the edge length turns it into a signed distance, so the margin is in pixels.
        signed = (ex * (ys - ay) - ey * (xs - ax)) / length
        inside &= signed >= -margin
    return inside.float()


def ellipse_mask(box: tuple[float, float, float, float], pixel_box: tuple[int, int, int, int],
                 *, scale_x: float = 1.0, scale_y: float = 1.0) -> torch.Tensor:
    """The ellipse inscribed in ``box`` (float corners), its semi-axes multiplied by ``scale_x`` /
    ``scale_y``, rasterised over ``pixel_box``. ``-> (h, w)`` float32 in {0, 1}.

    Example:
        >>> m = ellipse_mask((0, 0, 10, 10), (0, 0, 10, 10))
        >>> 0.70 < float(m.mean()) < 0.86  # π/4 of the square
        True
    """
    bx0, by0, bx1, by1 = box
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    rx, ry = max((bx1 - bx0) / 2 * scale_x, 1e-6), max((by1 - by0) / 2 * scale_y, 1e-6)
    xs, ys = pixel_centres(*pixel_box)
    return ((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) <= 1.0).float()
