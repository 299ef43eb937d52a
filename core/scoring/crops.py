"""Batched region crops: every region of every image resampled to one size in a single pass.

Scorers see crops, never whole images, and must see all of them at once (one model forward
for the whole batch). :func:`crop_boxes` builds every crop's sampling grid at once and resamples
with ``grid_sample`` (axis-aligned boxes need no homography; kornia's ``crop_and_resize`` gives
the same pixels through a full perspective warp, 2.6–6× slower on one CPU thread in
``benchmarks/score_regions.py``); it groups the regions by image (a view of that image expanded to the group, no copy) and, to
shrink without aliasing, samples large boxes from a mip-map level (repeated 2×2 averages, as
texture samplers do) chosen so the remaining shrink is below 2×. 2×2 averaging is exact area
downscaling, so a face at twice the resolution gives the same crop as the face itself (a Gaussian
pyramid would soften it, and scores like sharpness would then depend on the face's size).

FaceScore does not use this path: :func:`official_face_crops` reproduces its official preprocessing
(integer box, Pillow's 8-bit antialiased bicubic, torchvision's short-side resize and centre crop),
one crop at a time since every face has its own size.

Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates (the :class:`~vitruvian.core.regions.Region`
convention): pixel ``(i, j)`` covers ``[j, j + 1) × [i, i + 1)``.

Shape:
    - image: ``(B, C, H, W)`` float
    - image_index: ``(P,)`` int64, boxes: ``(P, 4)`` float
    - crops: ``(P, C, S_h, S_w)``
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..regions import Region

__all__ = [
    "CROP_MODES", "crop_boxes", "square_boxes", "official_face_boxes", "pil_bicubic_resize", "official_face_crops",
    "crop_region_masks",
]

#: Resampling modes :func:`crop_boxes` accepts (those of ``torch.nn.functional.grid_sample``).
CROP_MODES = ("bilinear", "bicubic", "nearest")


def _check_inputs(image: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size) -> tuple[int, int]:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"crop_boxes: image must be (B, C, H, W), got {got}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"crop_boxes: boxes must be (P, 4) x0, y0, x1, y1, got {tuple(boxes.shape)}")
    if image_index.shape != (boxes.shape[0],):
        raise ValueError(
            f"crop_boxes: image_index must be (P,) with P = {boxes.shape[0]} (one per box), got {tuple(image_index.shape)}"
        )
    if len(image_index) and (int(image_index.min()) < 0 or int(image_index.max()) >= image.shape[0]):
        raise ValueError(
            f"crop_boxes: image_index must be in [0, {image.shape[0] - 1}], got range "
            f"[{int(image_index.min())}, {int(image_index.max())}]"
        )
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"crop_boxes: size must be a positive int or (S_h, S_w), got {size!r}")
    if len(boxes) and not bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()):
        raise ValueError("crop_boxes: boxes must have x0 < x1 and y0 < y1")
    return int(size[0]), int(size[1])


def crop_boxes(
    image: torch.Tensor,
    image_index: torch.Tensor,
    boxes: torch.Tensor,
    size: int | tuple[int, int],
    *,
    mode: str = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample each box of its image to ``size``: one crop per box, in the order given.

    Args:
        image: ``(B, C, H, W)`` float.
        image_index: ``(P,)`` int64, the image each box belongs to.
        boxes: ``(P, 4)`` float ``x0, y0, x1, y1`` pixel edges; parts outside the image read 0.
        size: ``S`` or ``(S_h, S_w)`` of every crop.
        mode: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        antialias: sample boxes more than 2× larger than ``size`` from a mip-map level.

    Returns:
        ``(P, C, S_h, S_w)``, same dtype and device as ``image``; ``(0, C, S_h, S_w)`` for no boxes.

    Example:
        >>> image = torch.arange(16.).view(1, 1, 4, 4)
        >>> crop_boxes(image, torch.tensor([0]), torch.tensor([[1., 1., 3., 3.]]), 2, mode="nearest")
        tensor([[[[ 5.,  6.],
                  [ 9., 10.]]]])
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop_boxes: mode must be one of {', '.join(CROP_MODES)}, got {mode!r}")
    image_index = torch.as_tensor(image_index, dtype=torch.int64).cpu()
    boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    s_h, s_w = _check_inputs(image, image_index, boxes, size)
    out = image.new_zeros(len(boxes), image.shape[1], s_h, s_w)
    if not len(boxes):
        return out
    h, w = image.shape[-2:]

    # Pyramid level per box: halve until the remaining shrink is below 2× in both directions.
    shrink = torch.minimum((boxes[:, 2] - boxes[:, 0]) / s_w, (boxes[:, 3] - boxes[:, 1]) / s_h)
    level = torch.zeros(len(boxes), dtype=torch.int64)
    if antialias:
        limit = max(0, int(math.floor(math.log2(max(1, min(h, w) // 8)))))  # keep levels ≥ 8 px
        level = torch.floor(torch.log2(shrink.clamp(min=1.0))).to(torch.int64).clamp(0, limit)
    pyramid = [image]
    for _ in range(int(level.max())):
        pyramid.append(torch.nn.functional.avg_pool2d(pyramid[-1], 2, ceil_mode=True))

    for lv in level.unique().tolist():
        src = pyramid[lv]
        scale = 0.5**lv  # level pixel i averages pixels 2i, 2i + 1 of the level below (the last may be partial)
        src_h, src_w = src.shape[-2:]
        for b in image_index[level == lv].unique().tolist():
            pick = ((level == lv) & (image_index == b)).nonzero()[:, 0]
            x0, y0, x1, y1 = (boxes[pick] * scale).unbind(1)
            # Output pixel k samples the box at x0 + (k + 0.5) · (x1 - x0) / S (edge coordinates), which
            # grid_sample (align_corners=False) takes as 2x / W - 1.
            kx = (torch.arange(s_w, dtype=torch.float64) + 0.5) / s_w
            ky = (torch.arange(s_h, dtype=torch.float64) + 0.5) / s_h
            gx = (x0[:, None] + kx[None] * (x1 - x0)[:, None]) * (2.0 / src_w) - 1.0  # (n, S_w)
            gy = (y0[:, None] + ky[None] * (y1 - y0)[:, None]) * (2.0 / src_h) - 1.0  # (n, S_h)
            grid = torch.empty(len(pick), s_h, s_w, 2, dtype=image.dtype, device=image.device)
            grid[..., 0] = gx.to(grid)[:, None, :]
            grid[..., 1] = gy.to(grid)[:, :, None]
            group = src[b : b + 1].expand(len(pick), -1, -1, -1)
            crops = F.grid_sample(group, grid, mode=mode, padding_mode="zeros", align_corners=False)
            out[pick.to(image.device)] = crops
    return out


def square_boxes(boxes: torch.Tensor, *, shrink: bool = True) -> torch.Tensor:
    """Square boxes with the same centres: side ``min(w, h)`` (``shrink``, a centre crop) or
    ``max(w, h)`` (a square that holds the box). ``(P, 4) -> (P, 4)``."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    wh = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    half = (wh.min(1).values if shrink else wh.max(1).values) / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], 1)


def official_face_boxes(regions: Sequence[Region], height: Sequence[int], width: Sequence[int]) -> torch.Tensor:
    """FaceScore's crop for each face, as its ``crop_face_image`` cuts it: the box grown by 1 px on each
    side and truncated to whole pixels (``int(x0 - 1) … int(x1 + 1)``), then kept inside its image and at
    least 1 px wide. ``-> (P, 4)`` float64, whole numbers.

    The official slice clips the right and bottom edges the same way, but a box starting at x ≤ 0 or y ≤ 0
    gives it a negative index (an empty or wrapped crop, then a crash in the resize); here it starts at 0.
    """
    rows = []
    for r, h, w in zip(regions, height, width):
        x0, y0, x1, y1 = r.box
        x0, y0 = min(max(0, int(x0 - 1)), int(w) - 1), min(max(0, int(y0 - 1)), int(h) - 1)
        x1, y1 = min(int(w), int(x1 + 1)), min(int(h), int(y1 + 1))
        rows.append([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)])
    return torch.tensor(rows, dtype=torch.float64).view(-1, 4)


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round half up to the 1/255 grid, as Pillow's ``clip8`` stores a pass."""
    return torch.floor(x.clamp(0, 1) * 255 + 0.5) / 255


def pil_bicubic_resize(crops: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's ``Image.resize(size, Image.BICUBIC)`` of 8-bit images, in torch.

    Pillow resamples in two separable passes, width first, each with the bicubic kernel (a = −0.5) whose
    support is widened by the shrink factor when shrinking and not narrowed when enlarging, and stores
    each pass as 8 bits (rounded, clipped). ``F.interpolate(mode="bicubic", antialias=True)`` has the same
    kernel, so each pass here is one such call followed by the same rounding: the result is Pillow's to
    within 1/255 (on the test photos 0.002–0.01 % of values differ, by 1/255: Pillow's fixed-point weights).

    Args:
        crops: ``(N, C, h, w)`` float in [0, 1] (values off the 1/255 grid are rounded first).
        size: ``(S_h, S_w)``.

    Returns:
        ``(N, C, S_h, S_w)`` float32 on the 1/255 grid.
    """
    x = _to_8bit(crops.float())
    h, w = x.shape[-2:]
    for target in ((h, size[1]), (size[0], size[1])):  # width pass, then height pass; a pass that keeps its size is skipped
        if target != tuple(x.shape[-2:]):
            x = _to_8bit(F.interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False))
    return x


def official_face_crops(image: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """ImageReward / FaceScore's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` of each integer box.

    Each box is cut out (8-bit, as the official code reads the image with PIL), its short side resized to
    ``size`` and its long side to ``int(size · long / short)`` (torchvision's rule) with
    :func:`pil_bicubic_resize`, then the centred ``size × size`` kept, offset ``round((long' − size) / 2)``
    (Python's rounding, as torchvision). Crops have different sizes, so they are resized one at a time and
    stacked.

    Args:
        image: ``(B, C, H, W)`` float in [0, 1].
        image_index: ``(P,)`` int64, the image of each box.
        boxes: ``(P, 4)`` whole-pixel ``x0, y0, x1, y1`` inside the image (:func:`official_face_boxes`).
        size: the square output side.

    Returns:
        ``(P, C, size, size)`` float32 in [0, 1], on ``image``'s device.
    """
    image_index = torch.as_tensor(image_index, dtype=torch.int64).cpu()
    boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    _check_inputs(image, image_index, boxes, size)
    out = torch.zeros(len(boxes), image.shape[1], size, size, device=image.device)
    for p, (b, box) in enumerate(zip(image_index.tolist(), boxes.round().long().tolist())):
        x0, y0, x1, y1 = box
        crop = image[b : b + 1, :, y0:y1, x0:x1]
        h, w = crop.shape[-2:]
        if h < 1 or w < 1:
            raise ValueError(f"official_face_crops: box {box} lies outside the {image.shape[-1]}×{image.shape[-2]} image")
        short, long = min(h, w), max(h, w)
        new_h, new_w = (size, int(size * long / short)) if h <= w else (int(size * long / short), size)
        resized = pil_bicubic_resize(crop, (new_h, new_w))
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        out[p] = resized[0, :, top : top + size, left : left + size]
    return out


def crop_region_masks(regions: Sequence[Region], boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Each region's shape mask resampled over its crop box (ones where a region has no mask).

    Masks have one size per region, so this loops over regions; they are small (the box only).
    ``boxes`` are the crop boxes ``(P, 4)`` used for the images. ``-> (P, 1, S_h, S_w)`` in [0, 1].
    """
    from ..regions import pixel_box

    s_h, s_w = (size, size) if isinstance(size, int) else size
    out = torch.ones(len(regions), 1, s_h, s_w)
    for p, r in enumerate(regions):
        box = [float(v) for v in boxes[p]]
        if r.mask is None and box[0] >= r.box[0] and box[1] >= r.box[1] and box[2] <= r.box[2] and box[3] <= r.box[3]:
            continue  # the crop lies inside a box-shaped region: all ones
        if r.mask is None:
            x0, y0, x1, y1 = r.box
            local = torch.ones(1, 1, max(1, math.ceil(y1) - math.floor(y0)), max(1, math.ceil(x1) - math.floor(x0)))
        else:
            local = r.crop_mask()[None, None]
        px0, py0, _, _ = pixel_box(r)
        box = torch.as_tensor(boxes[p], dtype=torch.float64) - torch.tensor([px0, py0, px0, py0], dtype=torch.float64)
        out[p] = crop_boxes(local, torch.tensor([0]), box[None], (s_h, s_w), mode="bilinear", antialias=False)[0]
    return out.clamp_(0, 1)
