"""Grow, shrink and feather region masks (kornia morphology and Gaussian blur).

Shape:
    - mask: ``(B, 1, H, W)`` float32 in [0, 1]; the result has the same shape and range.
"""

from __future__ import annotations

import torch

__all__ = ["grow_mask", "feather_mask", "MAX_RADIUS"]

#: Largest dilation / feather radius accepted, in pixels.
MAX_RADIUS = 512


def _check(mask: torch.Tensor, radius: int, name: str, where: str) -> None:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{where}: mask must be (B, 1, H, W), got {got}")
    if isinstance(radius, bool) or not isinstance(radius, int) or abs(radius) > MAX_RADIUS:
        raise ValueError(f"{where}: {name} must be an int of at most {MAX_RADIUS} pixels, got {radius!r}")


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (``pixels`` > 0) or erode (< 0) by ``|pixels|``.

    Runs ``|pixels|`` kornia morphology steps with 3 × 3 kernels, alternating a cross and a square,
    which grows a point into an octagon (close to a disc) at 9 × H × W memory per step, where one
    big kernel would need ``(2r + 1)² × H × W``.

    Example:
        >>> m = torch.zeros(1, 1, 9, 9); m[..., 4, 4] = 1
        >>> int(grow_mask(m, 2).sum()), int(grow_mask(grow_mask(m, 2), -2).sum())
        (21, 1)
    """
    _check(mask, pixels, "pixels", "grow_mask")
    if pixels == 0:
        return mask
    from kornia.morphology import dilation, erosion

    op = dilation if pixels > 0 else erosion
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=mask.device)
    square = torch.ones(3, 3, device=mask.device)
    out = mask.float()
    # After H + W steps every pixel has seen the whole image (a point grows at least a diamond of that
    # L1 radius), and a pair of steps that changes nothing is a fixed point: both end the loop early, so
    # a large radius on a small image costs what the image needs, not what was asked.
    steps = min(abs(pixels), mask.shape[-2] + mask.shape[-1])
    before = out
    for step in range(steps):
        if step % 2 == 0:
            before = out
        out = op(out, cross if step % 2 == 0 else square)
        if step % 2 == 1 and torch.equal(out, before):
            break
    return out.clamp(0, 1)


def feather_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften the edges with a Gaussian blur of radius ``pixels`` (sigma = pixels / 2, kernel
    2 × pixels + 1); 0 returns the mask as is.

    Example:
        >>> m = torch.zeros(1, 1, 16, 16); m[..., 4:12, 4:12] = 1
        >>> soft = feather_mask(m, 3)
        >>> 0 < float(soft[0, 0, 8, 4]) < 1, float(soft[0, 0, 8, 8]) > 0.99
        (True, True)
    """
    _check(mask, pixels, "pixels", "feather_mask")
    if pixels < 0:
        raise ValueError(f"feather_mask: pixels must be >= 0, got {pixels}")
    if pixels == 0:
        return mask
    from kornia.filters import gaussian_blur2d

    k = 2 * pixels + 1
    sigma = pixels / 2
    return gaussian_blur2d(mask.float(), (k, k), (sigma, sigma), border_type="replicate").clamp(0, 1)
