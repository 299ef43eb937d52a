"""Non-maximum suppression in plain torch, and merging two sets of regions.

torchvision (whose ``batched_nms`` is the usual choice) is not a dependency of the pack, and the
greedy algorithm is about fifteen lines, so it is written out here.

Shape:
    - boxes: ``(N, 4)`` float x0, y0, x1, y1; scores: ``(N,)``; classes: ``(N,)`` int64.
    - returns: ``(M,)`` int64 indices into the inputs, highest score first.
"""

from __future__ import annotations

import torch

from .types import RegionBatch

__all__ = ["box_iou", "nms", "batched_nms", "merge_regions"]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: ``a (N, 4)``, ``b (M, 4)`` → ``(N, M)`` in [0, 1].

    Example:
        >>> box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 0., 3., 2.]]))
        tensor([[0.3333]])
    """
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: keep the best box, drop every box overlapping it by more than
    ``iou_threshold``, repeat. ``-> (M,)`` int64 indices, best first."""
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other (each class is
    shifted to its own far-away patch of the plane, the usual trick). ``-> (M,)`` int64, best first.

    Example:
        >>> boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [0., 0., 10., 10.]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5).tolist()
        [0, 2]
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


def merge_regions(kept: RegionBatch, added: RegionBatch, *, iou: float = 0.45, max_per_image: int = 100) -> RegionBatch:
    """Per image, the regions of ``kept`` (e.g. from keypoints) and ``added`` (e.g. from a detector),
    best score first, at most ``max_per_image``.

    Regions of ``kept`` never suppress each other (one person's two hands may overlap). Where a
    region of ``added`` and one of ``kept`` with the same label overlap by more than ``iou``, the
    higher score stays (a tie keeps ``kept``'s). ``added`` is taken as already NMS-ed.
    """
    if kept.image_sizes != added.image_sizes:
        raise ValueError(f"merge_regions: both batches must have the same image sizes, got {kept.image_sizes} "
                         f"and {added.image_sizes}")
    merged = []
    for mine, theirs in zip(kept, added):
        out = list(mine)
        for d in theirs:
            same = [r for r in out if r.label == d.label]
            if same:
                overlap = box_iou(torch.tensor([d.box]), torch.tensor([r.box for r in same]))[0].tolist()
                clash = [r for r, o in zip(same, overlap) if o > iou]
                if any(r.score >= d.score for r in clash):
                    continue
                out = [r for r in out if all(r is not c for c in clash)]
            out.append(d)
        out.sort(key=lambda r: -r.score)
        merged.append(tuple(out[:max_per_image]))
    return RegionBatch(tuple(merged), kept.image_sizes)
