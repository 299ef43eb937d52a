"""GRPose's training losses (methods.md §5(c)) as per-sample functions, with a perception term that has a gradient.

- :func:`skeleton_mask`: the latent mask M of cells the Gaussian-blurred skeleton reaches (kornia blur;
  GRPose: kernel 13, σ = 3 on the 512² skeleton image, any non-background pixel marks its 8×8 cell).
- :func:`pose_masked_error`: ``mean((α·M + (1 − M)) ⊙ (pred − target)²)`` per sample, α = 5, normalised
  over every element (GRPose's ``mean([1, 2, 3])``), via :func:`vitruvian.core.objectives.losses.denoise_error`.
- :func:`pose_perception_loss`: ``‖φ(D(x̂0)) − φ(x_ref)‖²`` per sample for a *torch* pose network φ, so the
  gradient reaches the adapter through the VAE decoder and x̂0. (The released GRPose code sends both
  images through numpy/uint8 and mmpose, so its term has no gradient; methods.md §5(g).) The caller
  weights it by ᾱ_t (low-noise steps count more) and λ_p.

Shape:
    - hint ``(B, 3, H, W)`` in [0, 1] → mask ``(B, 1, h, w)`` in {0, 1}
    - pred, target ``(B, C, h, w)`` → ``(B,)``
    - images ``(B, 3, H, W)`` → ``(B,)``
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..objectives.losses import denoise_error

__all__ = ["skeleton_mask", "pose_masked_error", "pose_perception_loss"]


def skeleton_mask(hint: torch.Tensor, latent_size: tuple[int, int], *, kernel: int = 13, sigma: float = 3.0,
                  threshold: float = 1e-3) -> torch.Tensor:
    """Latent cells reached by the blurred skeleton.

    Args:
        hint: ``(B, 3, H, W)`` the rendered skeleton on black, values in [0, 1].
        latent_size: ``(h, w)``; each cell covers an ``H/h × W/w`` pixel block.
        kernel, sigma: the Gaussian blur (odd kernel; GRPose uses 13 and 3 for the loss mask).
        threshold: a blurred pixel above it (any channel) counts as skeleton.

    Returns:
        ``(B, 1, h, w)`` float32 in {0, 1}.

    Example:
        >>> hint = torch.zeros(1, 3, 64, 64); hint[:, :, 30:34, 30:34] = 1
        >>> skeleton_mask(hint, (8, 8))[0, 0].sum().item()   # blurred to pixels 24-39: cells 3-4 × 3-4
        4.0
    """
    import kornia

    if hint.ndim != 4 or hint.shape[1] != 3:
        raise ValueError(f"skeleton_mask: hint must be (B, 3, H, W), got {tuple(hint.shape)}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"skeleton_mask: kernel must be a positive odd number, got {kernel}")
    blurred = kornia.filters.gaussian_blur2d(hint.float(), (kernel, kernel), (sigma, sigma), border_type="constant")
    drawn = (blurred.amax(dim=1, keepdim=True) > threshold).float()
    return F.adaptive_max_pool2d(drawn, latent_size)


def pose_masked_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, alpha: float = 5.0) -> torch.Tensor:
    """``mean over (C, h, w) of (α·M + (1 − M)) ⊙ (pred − target)²`` → ``(B,)`` float32.

    Example:
        >>> pred, target = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
        >>> mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> pose_masked_error(pred, target, mask, alpha=5.0)   # (5 + 1 + 1 + 1) / 4
        tensor([2.])
    """
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"pose_masked_error: mask must be (B, 1, {pred.shape[-2]}, {pred.shape[-1]}), "
                         f"got {tuple(mask.shape)}")
    weights = alpha * mask + (1.0 - mask)
    return denoise_error(pred, target, weights.to(pred.device), norm="all")


def pose_perception_loss(pose_net: torch.nn.Module, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference of the pose network's features, ``(B,)`` float32.

    Args:
        pose_net: a frozen torch module, images → features (any shape ``(B, ...)``); gradients flow
            through it to ``image``.
        image: ``(B, 3, H, W)`` the decoded prediction (keeps its graph).
        reference: ``(B, 3, H, W)`` the target image (no gradient is taken through it).
    """
    if image.shape != reference.shape:
        raise ValueError(f"pose_perception_loss: image and reference must have one shape, got "
                         f"{tuple(image.shape)} and {tuple(reference.shape)}")
    feats = pose_net(image)
    with torch.no_grad():
        ref = pose_net(reference)
    return (feats.float() - ref.float()).square().flatten(1).mean(dim=1)
