"""Crop geometry for regional refinement: a region's box → a context rectangle → a resized crop.

The detail level is set by the **region**, not the crop: the region's longer side is scaled to
``target_size`` pixels (scale ``s = target_size / max(box_w, box_h)``), and the context around it
(``context_factor`` × the box, same centre) is scaled with it, cut back where the crop would pass
``max_size`` pixels. The crop's sides are multiples of 8 (the latent grid) and at least
:data:`MIN_SIDE`; the rectangle cut from the image is chosen from the rounded size (``round(side
/ s)``), so the aspect ratio is kept to within half a source pixel instead of being stretched by
the rounding. The context is also cut at the image's own extent, and the rectangle is moved to
lie inside the image; only where the image is smaller than the crop must be (``MIN_SIDE``, or the
square form) is the rectangle centred on the image and the missing pixels edge-replicated (they
are never pasted back).

``square=True`` (the split crop → sampler → paste form) makes every crop the same square size
``min(round8(target_size × context_factor), max_size)``, so the crops of a whole batch stack into
one IMAGE batch a KSampler can take.

Shape:
    - image: ``(B, C, H, W)`` float in [0, 1]
    - :func:`crop_image` → ``(1, C, h, w)``, ``(h, w)`` = :attr:`CropPlan.size`
    - :func:`resize_back` ``(V, C, h, w)`` → ``(V, C, rh, rw)``, ``(rh, rw)`` = the rectangle's size
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["MULTIPLE", "MIN_SIDE", "CropPlan", "region_scale", "plan_crop", "square_size", "crop_image", "resize_back"]

#: Crop sides are multiples of this (the VAE's downscale factor).
MULTIPLE = 8
#: Smallest crop side, pixels (an 8 × 8 latent: enough for every UNet level to have a pixel).
MIN_SIDE = 64


def _round_to(value: float, multiple: int = MULTIPLE) -> int:
    return int(round(value / multiple)) * multiple


def _floor_to(value: float, multiple: int = MULTIPLE) -> int:
    return int(math.floor(value / multiple)) * multiple


@dataclass(frozen=True)
class CropPlan:
    """Where one region's crop comes from and how big it is sampled.

    Attributes:
        image_index, region_index: which region of the batch (``RegionBatch.flat()`` order).
        rect: ``(x0, y0, x1, y1)`` integer pixels of the image cut for the crop; may reach past
            the image (those pixels are edge-replicated and never pasted).
        size: ``(h, w)`` of the resized crop, multiples of 8.
        image_size: ``(H, W)`` of the image.

    Example:
        >>> p = CropPlan(0, 0, (10, 20, 74, 84), (128, 128), (100, 100))
        >>> p.rect_size, p.scale, p.inside
        ((64, 64), (2.0, 2.0), (10, 20, 74, 84))
    """

    image_index: int
    region_index: int
    rect: tuple[int, int, int, int]
    size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def rect_size(self) -> tuple[int, int]:
        """``(rh, rw)`` of :attr:`rect`."""
        x0, y0, x1, y1 = self.rect
        return y1 - y0, x1 - x0

    @property
    def scale(self) -> tuple[float, float]:
        """``(sy, sx)``: crop pixels per image pixel along each axis."""
        rh, rw = self.rect_size
        return self.size[0] / rh, self.size[1] / rw

    @property
    def inside(self) -> tuple[int, int, int, int]:
        """:attr:`rect` clipped to the image."""
        x0, y0, x1, y1 = self.rect
        h, w = self.image_size
        return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)

    def to_dict(self) -> dict:
        return {"rect": list(self.rect), "size": list(self.size), "scale": [round(s, 4) for s in self.scale]}


def region_scale(box: Sequence[float], target_size: int) -> float:
    """``target_size / max(box_w, box_h)``: how much the region is magnified to be sampled.

    Example:
        >>> region_scale((0, 0, 64, 32), 512)
        8.0
    """
    return target_size / max(box[2] - box[0], box[3] - box[1])


def _side(context: float, limit: float) -> int:
    """A crop side in crop pixels: the context, rounded to the latent grid; where it reaches the
    limit (max_size, or the image's own extent) it is cut to the grid line inside the limit."""
    side = _floor_to(limit) if context >= limit else _round_to(context)
    return max(side, MIN_SIDE)


def _square_side(target_size: int, context_factor: float, max_size: int) -> int:
    return max(min(_round_to(target_size * context_factor), _floor_to(max_size)), MIN_SIDE)



def square_size(settings) -> tuple[int, int]:
    """``(S, S)``: the size of every crop in the split form, from settings with ``target_size``,
    ``context_factor`` and ``max_size``: ``min(round8(target_size × context_factor), max_size)``.

    Example:
        >>> from types import SimpleNamespace
        >>> square_size(SimpleNamespace(target_size=512, context_factor=2.0, max_size=768))
        (768, 768)
    """
    side = _square_side(settings.target_size, settings.context_factor, settings.max_size)
    return side, side


def _place(centre: float, length: int, limit: int) -> int:
    """Start of a ``length`` span centred on ``centre``, moved inside ``[0, limit]`` when it fits,
    else centred on the image (reaching past both ends)."""
    if length >= limit:
        return -((length - limit) // 2)
    start = int(round(centre - length / 2))
    return min(max(start, 0), limit - length)


def plan_crop(box: Sequence[float], image_size: tuple[int, int], *, context_factor: float, target_size: int,
              max_size: int, square: bool = False, image_index: int = 0, region_index: int = 0) -> CropPlan:
    """The crop of one region (see the module docstring for the rules).

    Args:
        box: ``(x0, y0, x1, y1)`` float pixels of the region.
        image_size: ``(H, W)``.
        context_factor: ≥ 1, context around the box (both axes).
        target_size: pixels the region's longer side becomes.
        max_size: largest crop side (≥ :data:`MIN_SIDE`, ≥ ``target_size``).
        square: same square size for every crop (the split form).

    Returns:
        :class:`CropPlan`.

    Example:
        >>> plan_crop((40, 40, 60, 50), (100, 100), context_factor=2.0, target_size=80, max_size=256).to_dict()
        {'rect': [30, 35, 70, 55], 'size': [80, 160], 'scale': [4.0, 4.0]}
    """
    height, width = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    s = region_scale(box, target_size)
    if square:
        out_h = out_w = _square_side(target_size, context_factor, max_size)
    else:
        out_w = _side(bw * context_factor * s, min(max_size, width * s))
        out_h = _side(bh * context_factor * s, min(max_size, height * s))
    rect_w, rect_h = max(1, int(round(out_w / s))), max(1, int(round(out_h / s)))
    rx0 = _place((x0 + x1) / 2, rect_w, width)
    ry0 = _place((y0 + y1) / 2, rect_h, height)
    return CropPlan(image_index, region_index, (rx0, ry0, rx0 + rect_w, ry0 + rect_h), (out_h, out_w),
                    (int(height), int(width)))


def _cut(image: torch.Tensor, plan: CropPlan) -> torch.Tensor:
    """The rectangle of ``image`` ``(1, C, H, W)`` at image resolution, edge-replicated past the image."""
    x0, y0, x1, y1 = plan.rect
    ix0, iy0, ix1, iy1 = plan.inside
    part = image[:, :, iy0:iy1, ix0:ix1]
    pads = (ix0 - x0, x1 - ix1, iy0 - y0, y1 - iy1)
    if any(pads):
        part = F.pad(part, pads, mode="replicate")
    return part


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    # Bicubic with antialiasing: sharp when enlarging, alias-free when shrinking (the way back).
    return F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def crop_image(image: torch.Tensor, plan: CropPlan) -> torch.Tensor:
    """Cut ``plan.rect`` from image ``plan.image_index`` and resize it to ``plan.size``.

    Args:
        image: ``(B, C, H, W)`` float in [0, 1].

    Returns:
        ``(1, C, h, w)`` float32 in [0, 1].

    Example:
        >>> plan = plan_crop((8, 8, 24, 24), (32, 32), context_factor=1.5, target_size=64, max_size=128)
        >>> crop_image(torch.rand(1, 3, 32, 32), plan).shape
        torch.Size([1, 3, 96, 96])
    """
    b = plan.image_index
    return _resize(_cut(image[b : b + 1], plan), plan.size)


def resize_back(crops: torch.Tensor, plan: CropPlan) -> torch.Tensor:
    """Refined crops back to the rectangle's size at image resolution.

    Args:
        crops: ``(V, C, h, w)`` float in [0, 1] (any ``h, w`` of the crop's aspect ratio).

    Returns:
        ``(V, C, rh, rw)`` float32 in [0, 1].

    Example:
        >>> plan = CropPlan(0, 0, (0, 0, 20, 10), (64, 128), (10, 20))
        >>> resize_back(torch.rand(2, 3, 64, 128), plan).shape
        torch.Size([2, 3, 10, 20])
    """
    return _resize(crops, plan.rect_size)
