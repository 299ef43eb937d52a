"""Regions ↔ Impact Pack's SEGS, built from plain Python so Impact need not be installed.

Impact's types (``modules/impact/core.py``): ``SEGS = ((H, W), [SEG, ...])`` for **one** image, and
``SEG`` a namedtuple ``(cropped_image, cropped_mask, confidence, crop_region, bbox, label,
control_net_wrapper)``:

- ``crop_region``: ``[x0, y0, x1, y1]`` ints, the box grown by ``crop_factor`` around its centre and
  shifted (not shrunk) to stay inside the image; the context a detailer re-diffuses;
- ``cropped_mask``: ``(crop_h, crop_w)`` float32 numpy array in [0, 1] over ``crop_region``;
- ``cropped_image``: ``(1, crop_h, crop_w, 3)`` ComfyUI IMAGE slice, or None;
- ``bbox``: ``(4,)`` float32 numpy array ``x0, y0, x1, y1`` (what Impact's YOLO detectors give);
- ``confidence``: float; ``label``: str; ``control_net_wrapper``: None.

Pass Impact's own ``SEG`` class as ``seg_type`` when it is loaded (the node does), else
:data:`SEG` (same fields, same order) is used.
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Sequence

import numpy as np
import torch

from .types import Region, RegionBatch, pixel_box, region_mask

__all__ = ["SEG", "crop_region", "regions_to_segs", "segs_to_regions"]

SEG = namedtuple(
    "SEG",
    ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper"],
    defaults=[None],
)


def crop_region(box: Sequence[float], height: int, width: int, crop_factor: float) -> list[int]:
    """The detailer context around ``box``: ``crop_factor`` × its size, same centre, moved to lie
    inside the ``width`` × ``height`` image (cut only when larger than the image).
    ``-> [x0, y0, x1, y1]`` ints.

    Example:
        >>> crop_region((10, 10, 30, 20), 100, 100, 3.0)
        [0, 0, 60, 30]
    """
    def axis(lo: float, hi: float, limit: int) -> tuple[int, int]:
        size = (hi - lo) * crop_factor
        start = int(math.floor((lo + hi) / 2 - size / 2))
        size = int(math.ceil(size))
        start = min(max(start, 0), max(limit - size, 0))
        return start, min(start + size, limit)

    x0, x1 = axis(box[0], box[2], width)
    y0, y1 = axis(box[1], box[3], height)
    return [x0, y0, x1, y1]


def regions_to_segs(batch: RegionBatch, index: int = 0, *, image: torch.Tensor | None = None,
                    crop_factor: float = 3.0, seg_type=SEG):
    """Image ``index`` of ``batch`` as Impact SEGS.

    Args:
        batch: the regions.
        index: which image (SEGS holds one).
        image: ComfyUI IMAGE ``(B, H, W, C)`` of the same batch, to fill ``cropped_image``; None
            leaves it None.
        crop_factor: context around each box (Impact's ``bbox_crop_factor``, default 3).
        seg_type: the namedtuple class to build (Impact's ``SEG`` when loaded).

    Returns:
        ``((H, W), [seg_type, ...])`` in the batch's region order.
    """
    if not 0 <= index < len(batch):
        raise ValueError(f"regions_to_segs: index must be in [0, {len(batch) - 1}] (the batch has {len(batch)} "
                         f"images), got {index}")
    if crop_factor < 1:
        raise ValueError(f"regions_to_segs: crop_factor must be at least 1, got {crop_factor}")
    h, w = batch.image_sizes[index]
    if image is not None and (image.ndim != 4 or tuple(image.shape[1:3]) != (h, w) or image.shape[0] <= index):
        raise ValueError(f"regions_to_segs: image must be the IMAGE (B, {h}, {w}, C) the regions were found on, "
                         f"got shape {tuple(image.shape)}")
    segs = []
    for region in batch[index]:
        cx0, cy0, cx1, cy1 = crop_region(region.box, h, w, crop_factor)
        full = region_mask(region, h, w)
        crop = image[index : index + 1, cy0:cy1, cx0:cx1, :] if image is not None else None
        segs.append(seg_type(
            cropped_image=crop, cropped_mask=full[cy0:cy1, cx0:cx1].numpy().astype(np.float32),
            confidence=float(region.score), crop_region=[cx0, cy0, cx1, cy1],
            bbox=np.asarray(region.box, dtype=np.float32), label=region.label, control_net_wrapper=None,
        ))
    return ((h, w), segs)


def _as_2d(mask, where: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask), dtype=torch.float32)
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"segs_to_regions: {where} cropped_mask must be (h, w), got shape {tuple(t.shape)}")
    return t


def segs_to_regions(segs, *, source: str = "segs") -> tuple[RegionBatch, list[str]]:
    """Impact SEGS (one image) → a one-image :class:`RegionBatch`, plus notes on what was changed.

    Each SEG's ``bbox`` becomes the box, ``confidence`` the score (clipped to [0, 1]), and its
    ``cropped_mask`` (over ``crop_region``) is cut to the box's pixel extent; a mask that is all
    ones there becomes None (the box is the shape). A bbox partly outside the image is clipped and
    one wholly outside is dropped; both are reported in the notes.
    """
    try:
        (h, w), items = segs
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(
            "segs_to_regions: segs must be Impact SEGS ((H, W), [SEG, ...]), "
            f"got {type(segs).__name__}"
        ) from None
    regions, notes = [], []
    for i, seg in enumerate(items):
        where = f"SEG {i} ({getattr(seg, 'label', '?')})"
        for field in ("cropped_mask", "confidence", "crop_region", "bbox", "label"):
            if not hasattr(seg, field):
                raise ValueError(f"segs_to_regions: {where} has no {field!r}; expected Impact's SEG namedtuple")
        box = tuple(float(v) for v in np.asarray(seg.bbox, dtype=np.float64).reshape(-1)[:4])
        if not (box[0] < box[2] and box[1] < box[3]):
            notes.append(f"{where}: empty bbox {box}, dropped")
            continue
        score = float(seg.confidence)
        if not 0.0 <= score <= 1.0:
            notes.append(f"{where}: confidence {score:g} clipped to [0, 1]")
            score = min(max(score, 0.0), 1.0)
        mask = None
        if seg.cropped_mask is not None:
            cx0, cy0, cx1, cy1 = (int(v) for v in seg.crop_region)
            cropped = _as_2d(seg.cropped_mask, where)
            canvas = torch.zeros(h, w)
            ch, cw = min(cropped.shape[0], h - cy0, cy1 - cy0), min(cropped.shape[1], w - cx0, cx1 - cx0)
            if ch > 0 and cw > 0:
                canvas[cy0 : cy0 + ch, cx0 : cx0 + cw] = cropped[:ch, :cw].clamp(0, 1)
            px0, py0, px1, py1 = pixel_box(box)
            inner = canvas[max(py0, 0) : min(py1, h), max(px0, 0) : min(px1, w)]
            if inner.numel() and not bool((inner == 1).all()):
                # Keep the full pixel extent (the box may still be outside; clipped below).
                mask = torch.zeros(py1 - py0, px1 - px0)
                mask[max(py0, 0) - py0 : min(py1, h) - py0, max(px0, 0) - px0 : min(px1, w) - px0] = inner
        region = Region(str(seg.label), box, score, mask=mask, source=source)
        clipped = region.clipped(h, w)
        if clipped is None:
            notes.append(f"{where}: bbox {box} is outside the {w}×{h} image, dropped")
            continue
        if clipped is not region:
            notes.append(f"{where}: bbox {box} clipped to the {w}×{h} image")
        regions.append(clipped)
    return RegionBatch((tuple(regions),), ((h, w),)), notes
