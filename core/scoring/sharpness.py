"""Sharpness of each region: the variance of the Laplacian (kornia), two ways.

- ``sharpness``: every region resampled to the same ``size`` × ``size`` grey crop (so a big face
  and a small face are measured at the same number of samples across the face), then the
  variance of its 3×3 Laplacian inside the region's shape mask. Comparable across regions and
  images. Units: grey levels 0–255 with kornia's unnormalised 8-neighbour kernel
  (``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``), so values are larger than OpenCV's 4-neighbour recipe.
- ``sharpness_rel``: the Laplacian variance of the region's box at the image's own resolution
  divided by that of the whole image: below 1 the region is blurrier than its picture (a face
  pasted or inpainted at low quality), above 1 sharper. Computed for all regions at once from
  integral images (box sums of the Laplacian and its square), so the box is the shape here.

Shape:
    - crops: ``(P, 1, S, S)`` grey in [0, 1]; weights ``(P, 1, S, S)`` in [0, 1]
    - image: ``(B, 3, H, W)``; boxes ``(P, 4)``; outputs ``(P,)`` float64
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..regions import Region, pixel_box
from .crops import crop_boxes, crop_region_masks

__all__ = ["laplacian_variance", "box_laplacian_variance", "SharpnessScorer"]


def _laplacian(gray: torch.Tensor) -> torch.Tensor:
    from kornia.filters import laplacian

    return laplacian(gray * 255.0, 3, border_type="reflect", normalized=False)


def laplacian_variance(gray: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted variance of the Laplacian of each grey crop.

    Args:
        gray: ``(P, 1, S_h, S_w)`` in [0, 1].
        weight: ``(P, 1, S_h, S_w)`` in [0, 1] (the region's shape), or None for uniform.

    Returns:
        ``(P,)`` float64; NaN where a weight map is all zero.

    Example:
        >>> flat, edge = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
        >>> edge[..., 4:] = 1.0
        >>> laplacian_variance(torch.cat([flat, edge])) > 0
        tensor([False,  True])
    """
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"laplacian_variance: gray must be (P, 1, S_h, S_w), got {tuple(gray.shape)}")
    lap = _laplacian(gray.double())
    w = torch.ones_like(lap) if weight is None else weight.to(lap)
    total = w.sum(dim=(1, 2, 3))
    mean = (w * lap).sum(dim=(1, 2, 3)) / total
    var = (w * (lap - mean[:, None, None, None]) ** 2).sum(dim=(1, 2, 3)) / total
    return torch.where(total > 0, var, torch.full_like(var, float("nan")))


def box_laplacian_variance(
    image: torch.Tensor, image_index: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Laplacian variance of whole-pixel boxes at the image's own resolution, and of each image.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].
        image_index: ``(P,)`` int64.
        boxes: P integer boxes ``(x0, y0, x1, y1)`` inside the image, non-empty.

    Returns:
        ``((P,), (B,))`` float64: per box, per image.
    """
    from kornia.color import rgb_to_grayscale
    from kornia.enhance import integral_image

    lap = _laplacian(rgb_to_grayscale(image.double()))[:, 0]  # (B, H, W)
    b, h, w = lap.shape
    sums = torch.zeros(2, b, h + 1, w + 1, dtype=torch.float64, device=lap.device)
    sums[:, :, 1:, 1:] = integral_image(torch.stack([lap, lap * lap]))
    per_image = lap.flatten(1).var(dim=1, unbiased=False).cpu()
    if not len(boxes):
        return torch.zeros(0, dtype=torch.float64), per_image
    t = torch.tensor(boxes, dtype=torch.int64, device=lap.device)
    x0, y0, x1, y1 = t.unbind(1)
    i = image_index.to(lap.device)
    s = sums[:, i, y1, x1] - sums[:, i, y0, x1] - sums[:, i, y1, x0] + sums[:, i, y0, x0]  # (2, P)
    n = ((x1 - x0) * (y1 - y0)).double()
    mean = s[0] / n
    return (s[1] / n - mean * mean).clamp(min=0).cpu(), per_image


class SharpnessScorer:
    """``sharpness`` and ``sharpness_rel`` for every region (see the module docstring).

    Args:
        size: side of the grey crop ``sharpness`` is measured on (default 128).
        use_masks: weight ``sharpness`` by the region's shape mask where it has one.

    Example:
        >>> image = torch.rand(1, 3, 64, 64)
        >>> out = SharpnessScorer(size=32).score(image, [Region("face", (8, 8, 40, 40), 0.9)], torch.tensor([0]))
        >>> sorted(out), out["sharpness"].shape
        (['sharpness', 'sharpness_rel'], torch.Size([1]))
    """

    names = ("sharpness", "sharpness_rel")
    labels = None

    def __init__(self, size: int = 128, *, use_masks: bool = True):
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"SharpnessScorer: size must be an int ≥ 8, got {size!r}")
        self.size, self.use_masks = size, use_masks

    def score(self, image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        from kornia.color import rgb_to_grayscale

        boxes = torch.tensor([r.box for r in regions], dtype=torch.float64).reshape(-1, 4)
        crops = crop_boxes(image, image_index, boxes, self.size, mode="bilinear")
        weight = crop_region_masks(regions, boxes, self.size) if self.use_masks else None
        sharp = laplacian_variance(rgb_to_grayscale(crops), weight).cpu()

        h, w = image.shape[-2:]
        whole = []
        for r in regions:
            x0, y0, x1, y1 = pixel_box(r)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            whole.append((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        box_var, image_var = box_laplacian_variance(image, image_index, whole)
        denominator = image_var[image_index]
        rel = torch.where(denominator > 0, box_var / denominator.clamp(min=1e-12), torch.full_like(box_var, float("nan")))
        return {"sharpness": sharp, "sharpness_rel": rel}
