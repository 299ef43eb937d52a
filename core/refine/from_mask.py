"""Regions from a mask: one region per connected blob, its soft values kept as the region's shape.

For refining what a user painted (or what any mask node made) instead of detected faces/hands.
Blobs are found on a grid of ``cell`` × ``cell`` pixel cells (a cell is on when any pixel in it is
above ``threshold``), by label propagation that stops as soon as the labels settle. Blobs closer
than a cell merge, which is what a refinement wants anyway (they would share a crop). kornia's
``connected_components`` runs a fixed iteration count at full resolution: ~16 s for a 512 × 512
mask on 2 CPU cores, too slow for a node; this takes milliseconds.

Shape:
    - mask: ``(B, 1, H, W)`` float in [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..regions import Region, RegionBatch

__all__ = ["MASK_LABEL", "regions_from_mask"]

#: The label of regions made from a mask.
MASK_LABEL = "mask"


def _label_cells(on: torch.Tensor) -> torch.Tensor:
    """Connected-component labels (8-connected) of a boolean grid ``(h, w)``: ``-> (h, w)`` int64, 0 = off."""
    h, w = on.shape
    labels = torch.where(on, torch.arange(1, h * w + 1, dtype=torch.float64).reshape(h, w), torch.zeros(h, w, dtype=torch.float64))
    for _ in range(h * w):
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * on
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long()


def regions_from_mask(mask: torch.Tensor, *, threshold: float = 0.0, cell: int = 4,
                      label: str = MASK_LABEL) -> RegionBatch:
    """One region per blob of each image's mask.

    Args:
        mask: ``(B, 1, H, W)`` in [0, 1].
        threshold: pixels above this belong to a blob.
        cell: grid cell size in pixels for finding blobs (≥ 1; 1 = exact pixels, slower).
        label: the regions' label.

    Returns:
        :class:`RegionBatch`: per image, blobs left to right by their box's top-left corner; each
        region's box is the blob's pixel extent, its shape the mask values there (other blobs
        zeroed), its score 1.

    Example:
        >>> m = torch.zeros(1, 1, 32, 32); m[..., 2:6, 2:10] = 1; m[..., 20:30, 20:24] = 0.5
        >>> [r.box for r in regions_from_mask(m)[0]]
        [(2.0, 2.0, 10.0, 6.0), (20.0, 20.0, 24.0, 30.0)]
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"regions_from_mask: mask must be (B, 1, H, W), got {got}")
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise ValueError(f"regions_from_mask: cell must be an int ≥ 1, got {cell!r}")
    mask = mask.detach().float().cpu().clamp(0, 1)
    b, _, h, w = mask.shape
    out = []
    for k in range(b):
        on = mask[k, 0] > threshold
        coarse = F.max_pool2d(on[None, None].float(), cell, stride=cell, ceil_mode=True)[0, 0] > 0
        cells = _label_cells(coarse)
        found = []
        for value in cells.unique().tolist():
            if value == 0:
                continue
            cy, cx = torch.nonzero(cells == value, as_tuple=True)
            # The blob's window in pixels (its cells' extent), then its exact pixels inside it.
            wy0, wx0 = int(cy.min()) * cell, int(cx.min()) * cell
            wy1, wx1 = min((int(cy.max()) + 1) * cell, h), min((int(cx.max()) + 1) * cell, w)
            window = cells[wy0 // cell : -(-wy1 // cell), wx0 // cell : -(-wx1 // cell)] == value
            window = window.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[: wy1 - wy0, : wx1 - wx0]
            member = window & on[wy0:wy1, wx0:wx1]
            ys, xs = torch.nonzero(member, as_tuple=True)
            y0, x0, y1, x1 = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
            shape = (mask[k, 0, wy0:wy1, wx0:wx1] * member)[y0:y1, x0:x1]
            found.append(Region(label, (wx0 + x0, wy0 + y0, wx0 + x1, wy0 + y1), 1.0,
                                mask=None if bool((shape == 1).all()) else shape, source="mask"))
        found.sort(key=lambda r: (r.box[0], r.box[1]))
        out.append(tuple(found))
    return RegionBatch(tuple(out), tuple((h, w) for _ in range(b)))
