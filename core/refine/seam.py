"""How visible a paste boundary is: colour and gradient discontinuity along the mask's edge.

The boundary is where the mask crosses 0.5: the **ring** is the pixels on either side of that
edge (kornia morphological gradient with a 3 × 3 cross). Two numbers per image:

- ``colour``: at each ring pixel, the mean colour of the mask's inside within ``band`` pixels,
  minus the mean colour of the outside within ``band`` pixels (local means, kornia box blur of the
  masked image divided by the blurred mask); the mean over the ring of the channel-mean absolute
  difference. A paste that shifted the tone by δ reads δ (in [0, 1] image units).
- ``gradient``: the mean gradient magnitude on the ring minus the mean over the band around it
  (within ``2 × band`` pixels, ring excluded), in central-difference units (kornia Sobel,
  normalised, × 2): a step of δ across the edge of an otherwise flat image reads δ. Positive when
  the boundary is an edge the surroundings do not have.

Compare the image before and after a paste with the same mask: the *before* value is the
picture's own contrast at that boundary, the *after* − *before* difference is the seam.

Shape:
    - image: ``(B, C, H, W)`` float in [0, 1]; mask: ``(B, 1, H, W)`` in [0, 1]
    - returns ``{"colour": (B,), "gradient": (B,)}`` float64, NaN where the mask has no edge
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SEAM_KEYS", "seam_metric"]

SEAM_KEYS = ("colour", "gradient")


def seam_metric(image: torch.Tensor, mask: torch.Tensor, *, band: int = 3) -> dict[str, torch.Tensor]:
    """Colour and gradient discontinuity along the edge of ``mask`` in ``image`` (module docstring).

    Args:
        image: ``(B, C, H, W)`` float in [0, 1].
        mask: ``(B, 1, H, W)`` in [0, 1]; its edge is where it crosses 0.5.
        band: width in pixels of the strips either side of the edge that are compared (≥ 1).

    Returns:
        ``{"colour": (B,), "gradient": (B,)}`` float64; NaN where the mask has no edge.

    Example:
        >>> image = torch.full((1, 3, 32, 32), 0.5); image[..., :16] += 0.1
        >>> mask = torch.zeros(1, 1, 32, 32); mask[..., :16] = 1
        >>> {k: round(float(v), 4) for k, v in seam_metric(image, mask).items()}
        {'colour': 0.1, 'gradient': 0.1}
    """
    if image.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or image.shape[0] != mask.shape[0] \
            or image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"seam_metric: image must be (B, C, H, W) and mask (B, 1, H, W) of the same B, H, W, got "
                         f"{tuple(image.shape)} and {tuple(mask.shape)}")
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise ValueError(f"seam_metric: band must be an int ≥ 1, got {band!r}")
    from kornia.filters import box_blur, spatial_gradient
    from kornia.morphology import dilation, erosion

    # float32: float64 convolutions are ~10x slower on a CPU, and 1e-6 is plenty for a seam metric.
    x = image.float()
    inside = (mask.float() >= 0.5).float()
    outside = 1 - inside
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
    ring = dilation(inside, cross) - erosion(inside, cross)

    k = 2 * band + 1
    blur_in, blur_out = box_blur(inside, (k, k)), box_blur(outside, (k, k))
    mean_in = box_blur(x * inside, (k, k)) / blur_in.clamp(min=1e-12)
    mean_out = box_blur(x * outside, (k, k)) / blur_out.clamp(min=1e-12)
    both = ring * (blur_in > 1e-9) * (blur_out > 1e-9)
    jump = (mean_in - mean_out).abs().mean(dim=1, keepdim=True)
    n_ring = both.sum(dim=(1, 2, 3))
    colour = (jump * both).sum(dim=(1, 2, 3)) / n_ring.clamp(min=1)

    grad = 2 * spatial_gradient(x, mode="sobel", normalized=True).norm(dim=2).mean(dim=1, keepdim=True)
    # A flat square dilation is a max-pool (one call, where kornia's generic morphology shifts per cell).
    r = 2 * band
    grown = F.max_pool2d(inside, 2 * r + 1, stride=1, padding=r)
    shrunk = -F.max_pool2d(-inside, 2 * r + 1, stride=1, padding=r)
    around = (grown - shrunk) * (1 - ring)
    n_edge, n_around = ring.sum(dim=(1, 2, 3)), around.sum(dim=(1, 2, 3))
    g_ring = (grad * ring).sum(dim=(1, 2, 3)) / n_edge.clamp(min=1)
    g_around = (grad * around).sum(dim=(1, 2, 3)) / n_around.clamp(min=1)
    gradient = g_ring - torch.where(n_around > 0, g_around, torch.zeros_like(g_around))

    nan = torch.full_like(colour, float("nan"))
    colour, gradient = torch.where(n_ring > 0, colour, nan), torch.where(n_edge > 0, gradient, nan)
    return {"colour": colour.double().cpu(), "gradient": gradient.double().cpu()}
