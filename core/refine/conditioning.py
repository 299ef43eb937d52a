"""Conditioning made for the whole image, cut to a region's crop: masks, areas and control hints.

A positive prompt set to one part of the image (ComfyUI's ConditioningSetMask / SetArea) must
still point at that part once the sampler only sees a crop, and a ControlNet hint must show the
crop, not the whole picture. These functions do the geometry on plain tensors and tuples; the
node applies them to ComfyUI's conditioning dicts.

- mask ``(N, Hm, Wm)``: the rectangle scaled to the mask's resolution (so a mask of any size
  works, as in Impact Pack's ``crop_condition_mask``), zero past the mask; the sampler resizes it
  to the crop's latent.
- area ``(h, w, y, x)`` in latent cells of the whole image (8 pixels), or ``("percentage", h, w,
  y, x)`` fractions: intersected with the rectangle and mapped to the crop's latent cells; None
  when it misses the crop (that conditioning does not apply to this region).
- hint ``(N, C, Hh, Wh)``: the rectangle scaled to the hint's resolution, edge-replicated past it.

Where a batch dimension equals the image batch, image ``b``'s entry is used; otherwise entry 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .crop import MULTIPLE, CropPlan

__all__ = ["crop_cond_mask", "crop_area", "crop_hint"]


def _rect_in(plan: CropPlan, height: int, width: int) -> tuple[int, int, int, int]:
    """``plan.rect`` scaled from the image's pixels to a ``height`` × ``width`` grid."""
    h, w = plan.image_size
    sy, sx = height / h, width / w
    x0, y0, x1, y1 = plan.rect
    return (int(math.floor(x0 * sx)), int(math.floor(y0 * sy)),
            max(int(math.ceil(x1 * sx)), int(math.floor(x0 * sx)) + 1),
            max(int(math.ceil(y1 * sy)), int(math.floor(y0 * sy)) + 1))


def _entry(t: torch.Tensor, image_index: int, batch_size: int) -> torch.Tensor:
    return t[image_index : image_index + 1] if t.shape[0] == batch_size and batch_size > 1 else t[:1]


def crop_cond_mask(mask: torch.Tensor, plan: CropPlan, *, batch_size: int = 1) -> torch.Tensor:
    """A conditioning mask cut to the crop.

    Args:
        mask: ``(N, Hm, Wm)``, ``(Hm, Wm)`` or ``(N, 1, Hm, Wm)`` in [0, 1] over the whole image.
        plan: the crop.
        batch_size: the image batch size (picks image ``plan.image_index``'s mask when N equals it).

    Returns:
        ``(1, hm, wm)`` float: the rectangle at the mask's own resolution.

    Example:
        >>> plan = CropPlan(0, 0, (32, 0, 64, 32), (64, 64), (64, 64))
        >>> m = torch.zeros(1, 16, 16); m[:, :, 8:] = 1          # the right half, at 1/4 resolution
        >>> crop_cond_mask(m, plan).shape, float(crop_cond_mask(m, plan).mean())
        (torch.Size([1, 8, 8]), 1.0)
    """
    if mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"crop_cond_mask: mask must be (N, H, W), got {tuple(mask.shape)}")
    mask = _entry(mask, plan.image_index, batch_size)
    hm, wm = mask.shape[-2:]
    x0, y0, x1, y1 = _rect_in(plan, hm, wm)
    out = torch.zeros(1, y1 - y0, x1 - x0, dtype=mask.dtype, device=mask.device)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, wm), min(y1, hm)
    if ix0 < ix1 and iy0 < iy1:
        out[:, iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = mask[:, iy0:iy1, ix0:ix1]
    return out


def crop_area(area, plan: CropPlan) -> tuple[int, int, int, int] | None:
    """A conditioning area cut to the crop, in the crop's latent cells.

    Args:
        area: ``(h, w, y, x)`` latent cells (8 pixels) of the whole image, or ``("percentage", h, w,
            y, x)`` fractions of it.
        plan: the crop.

    Returns:
        ``(h, w, y, x)`` latent cells of the crop (h, w ≥ 1), or None when the area misses it.

    Example:
        >>> plan = CropPlan(0, 0, (32, 32, 96, 96), (128, 128), (128, 128))   # 2× magnified
        >>> crop_area((8, 8, 0, 0), plan)          # the top-left 64 × 64 pixels of the image
        (8, 8, 0, 0)
        >>> crop_area(("percentage", 0.25, 0.25, 0.75, 0.75), plan) is None
        True
    """
    h, w = plan.image_size
    if isinstance(area[0], str):
        if area[0] != "percentage" or len(area) != 5:
            raise ValueError(f"crop_area: area must be (h, w, y, x) or ('percentage', h, w, y, x), got {area!r}")
        ah, aw, ay, ax = area[1] * h, area[2] * w, area[3] * h, area[4] * w
    else:
        if len(area) != 4:
            raise ValueError(f"crop_area: area must be (h, w, y, x) latent cells, got {area!r}")
        ah, aw, ay, ax = (float(v) * MULTIPLE for v in area)
    rx0, ry0, rx1, ry1 = plan.rect
    x0, y0, x1, y1 = max(ax, rx0), max(ay, ry0), min(ax + aw, rx1), min(ay + ah, ry1)
    if x0 >= x1 or y0 >= y1:
        return None
    sy, sx = plan.scale
    cells_h, cells_w = plan.size[0] // MULTIPLE, plan.size[1] // MULTIPLE
    cy0 = min(int(math.floor((y0 - ry0) * sy / MULTIPLE)), cells_h - 1)
    cx0 = min(int(math.floor((x0 - rx0) * sx / MULTIPLE)), cells_w - 1)
    cy1 = max(int(math.ceil((y1 - ry0) * sy / MULTIPLE)), cy0 + 1)
    cx1 = max(int(math.ceil((x1 - rx0) * sx / MULTIPLE)), cx0 + 1)
    return min(cy1, cells_h) - cy0, min(cx1, cells_w) - cx0, cy0, cx0


def crop_hint(hint: torch.Tensor, plan: CropPlan, *, batch_size: int = 1) -> torch.Tensor:
    """A control hint image cut to the crop (edge-replicated past the hint).

    Args:
        hint: ``(N, C, Hh, Wh)`` float, the hint for the whole image (any resolution).
        plan: the crop.
        batch_size: the image batch size (picks image ``plan.image_index``'s hint when N equals it).

    Returns:
        ``(1, C, hh, wh)``: the rectangle at the hint's resolution.

    Example:
        >>> plan = CropPlan(0, 0, (-8, 0, 24, 32), (64, 64), (32, 32))
        >>> crop_hint(torch.rand(1, 3, 64, 64), plan).shape
        torch.Size([1, 3, 64, 64])
    """
    if hint.ndim != 4:
        raise ValueError(f"crop_hint: hint must be (N, C, H, W), got {tuple(hint.shape)}")
    hint = _entry(hint, plan.image_index, batch_size)
    hh, wh = hint.shape[-2:]
    x0, y0, x1, y1 = _rect_in(plan, hh, wh)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, wh), min(y1, hh)
    if ix0 >= ix1 or iy0 >= iy1:
        return torch.zeros(1, hint.shape[1], y1 - y0, x1 - x0, dtype=hint.dtype, device=hint.device)
    part = hint[:, :, iy0:iy1, ix0:ix1]
    pads = (ix0 - x0, x1 - ix1, iy0 - y0, y1 - iy1)
    return F.pad(part, pads, mode="replicate") if any(pads) else part
