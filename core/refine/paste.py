"""Paste a refined crop back with a feathered shape mask, leaving every other pixel untouched.

The paste mask lives over the crop rectangle at image resolution. It is the region's shape
(landmark hull, segmentation, or the box when the region has none), grown by ``dilation`` pixels
(kornia morphology) and softened by a ``feather``-pixel Gaussian blur (kornia), then faded to zero
over ``feather + 1`` pixels towards each side of the rectangle that lies inside the image, so a
shape touching the rectangle never leaves a straight edge; pixels past the image are zero.

:func:`paste` blends ``original × (1 − m) + refined × m`` only where ``m > 0`` and copies the
original elsewhere, so pixels outside the mask are **bit-identical** to the input: the image is
never VAE-encoded as a whole, only the crop is.

Shape:
    - :func:`paste_mask` → ``(1, 1, rh, rw)`` float32 in [0, 1] (the rectangle, image resolution)
    - :func:`noise_mask` → ``(1, 1, h, w)`` (the crop's resolution: what the sampler denoises)
    - :func:`paste` image ``(1, C, H, W)``, refined ``(1, C, rh, rw)`` → ``(1, C, H, W)``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..regions import Region, feather_mask, grow_mask, pixel_box
from .crop import CropPlan

__all__ = ["shape_mask", "paste_mask", "noise_mask", "paste"]


def shape_mask(region: Region, plan: CropPlan) -> torch.Tensor:
    """The region's shape over ``plan.rect`` (zeros around it): ``-> (1, 1, rh, rw)`` in [0, 1].

    Example:
        >>> plan = CropPlan(0, 0, (0, 0, 8, 8), (64, 64), (8, 8))
        >>> int(shape_mask(Region("face", (2, 2, 6, 6), 1.0), plan).sum())
        16
    """
    rx0, ry0, rx1, ry1 = plan.rect
    out = torch.zeros(1, 1, ry1 - ry0, rx1 - rx0)
    px0, py0, px1, py1 = pixel_box(region)
    crop = region.crop_mask()
    # The overlap of the region's pixel extent and the rectangle, in both frames.
    ox0, oy0, ox1, oy1 = max(px0, rx0), max(py0, ry0), min(px1, rx1), min(py1, ry1)
    if ox0 < ox1 and oy0 < oy1:
        out[0, 0, oy0 - ry0 : oy1 - ry0, ox0 - rx0 : ox1 - rx0] = crop[oy0 - py0 : oy1 - py0, ox0 - px0 : ox1 - px0]
    return out


def _edge_fade(plan: CropPlan, width: int) -> torch.Tensor:
    """``(1, 1, rh, rw)``: 1 inside, ramping to 0 over ``width`` pixels towards each side of the
    rectangle that is inside the image; 0 past the image."""
    rx0, ry0, rx1, ry1 = plan.rect
    h, w = plan.image_size
    ys = torch.arange(ry0, ry1, dtype=torch.float32) + 0.5
    xs = torch.arange(rx0, rx1, dtype=torch.float32) + 0.5

    def axis(coords: torch.Tensor, lo: int, hi: int, limit: int) -> torch.Tensor:
        ramp = torch.ones_like(coords)
        if lo > 0:  # this side of the rectangle is inside the image: fade towards it
            ramp = torch.minimum(ramp, (coords - lo) / width)
        if hi < limit:
            ramp = torch.minimum(ramp, (hi - coords) / width)
        inside = (coords >= 0) & (coords <= limit)
        return ramp.clamp(0, 1) * inside

    return (axis(ys, ry0, ry1, h)[:, None] * axis(xs, rx0, rx1, w)[None, :])[None, None]


def paste_mask(region: Region, plan: CropPlan, *, dilation: int = 0, feather: int = 0) -> torch.Tensor:
    """Where and how strongly the refined crop replaces the image (see the module docstring).

    Args:
        region: the region (its shape mask, or its box).
        plan: its crop.
        dilation: grow (> 0) or shrink (< 0) the shape, pixels.
        feather: Gaussian blur radius of the edge, pixels (≥ 0).

    Returns:
        ``(1, 1, rh, rw)`` float32 in [0, 1].

    Example:
        >>> plan = CropPlan(0, 0, (0, 0, 32, 32), (64, 64), (64, 64))
        >>> m = paste_mask(Region("face", (8, 8, 24, 24), 1.0), plan, dilation=2, feather=3)
        >>> float(m[0, 0, 16, 16]), float(m[0, 0, 16, 2]) < 0.05, 0 < float(m[0, 0, 16, 7]) < 1
        (1.0, True, True)
    """
    mask = shape_mask(region, plan)
    mask = feather_mask(grow_mask(mask, dilation), feather)
    fade = _edge_fade(plan, feather + 1)
    return (mask * fade).clamp(0, 1)


def noise_mask(mask: torch.Tensor, plan: CropPlan) -> torch.Tensor:
    """The paste mask at the crop's resolution, for the sampler's ``noise_mask`` (what it may change,
    and with differential diffusion how strongly). ``(1, 1, rh, rw)`` → ``(1, 1, h, w)`` in [0, 1].

    Example:
        >>> plan = CropPlan(0, 0, (0, 0, 16, 16), (64, 64), (16, 16))
        >>> noise_mask(torch.ones(1, 1, 16, 16), plan).shape
        torch.Size([1, 1, 64, 64])
    """
    return F.interpolate(mask.float(), size=plan.size, mode="bilinear", align_corners=False).clamp(0, 1)


def paste(image: torch.Tensor, refined: torch.Tensor, mask: torch.Tensor, plan: CropPlan) -> torch.Tensor:
    """Blend ``refined`` into ``image`` over ``plan.rect`` with ``mask``; a new tensor.

    Args:
        image: ``(1, C, H, W)`` float in [0, 1], the image the crop came from.
        refined: ``(1, C, rh, rw)`` float in [0, 1], the refined crop at image resolution
            (:func:`~.crop.resize_back`).
        mask: ``(1, 1, rh, rw)`` in [0, 1] (:func:`paste_mask`).

    Returns:
        ``(1, C, H, W)``: equal to ``image`` bit for bit wherever ``mask`` is 0.

    Example:
        >>> plan = CropPlan(0, 0, (2, 2, 6, 6), (64, 64), (8, 8))
        >>> m = torch.zeros(1, 1, 4, 4); m[..., 1:3, 1:3] = 1
        >>> out = paste(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 4, 4), m, plan)
        >>> int(out.sum()), bool(out[0, :, 3:5, 3:5].eq(1).all())
        (12, True)
    """
    rx0, ry0, _, _ = plan.rect
    ix0, iy0, ix1, iy1 = plan.inside
    region = image[:, :, iy0:iy1, ix0:ix1]
    sub = (slice(None), slice(None), slice(iy0 - ry0, iy1 - ry0), slice(ix0 - rx0, ix1 - rx0))
    m = mask[sub].to(region.dtype)
    blended = region * (1 - m) + refined[sub].to(region.dtype) * m
    out = image.clone()
    out[:, :, iy0:iy1, ix0:ix1] = torch.where(m > 0, blended, region)
    return out
