"""ComfyUI tensor layouts ↔ the pack's channels-first core layout. The only place that knows both.

ComfyUI: IMAGE ``(B, H, W, C)`` float32 in [0, 1]; MASK ``(B, H, W)`` (sometimes ``(H, W)``).
Core:    image ``(B, C, H, W)``; mask ``(B, 1, H, W)``.
"""

import torch

__all__ = ["image_to_core", "image_from_core", "mask_to_core", "mask_from_core"]


def image_to_core(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``(B, H, W, C)`` → ``(B, C, H, W)`` float32."""
    if image.ndim != 4:
        raise ValueError(f"image_to_core: IMAGE must be (B, H, W, C), got shape {tuple(image.shape)}")
    return image.movedim(-1, 1).float()


def image_from_core(image: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ComfyUI IMAGE ``(B, H, W, C)`` float32 on the CPU, clamped to [0, 1]."""
    if image.ndim != 4:
        raise ValueError(f"image_from_core: image must be (B, C, H, W), got shape {tuple(image.shape)}")
    return image.movedim(1, -1).clamp(0, 1).float().cpu().contiguous()


def mask_to_core(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI MASK ``(B, H, W)`` or ``(H, W)`` → ``(B, 1, H, W)`` float32."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask_to_core: MASK must be (B, H, W) or (H, W), got shape {tuple(mask.shape)}")
    return mask[:, None].float()


def mask_from_core(mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` → ComfyUI MASK ``(B, H, W)`` float32 on the CPU."""
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask_from_core: mask must be (B, 1, H, W), got shape {tuple(mask.shape)}")
    return mask[:, 0].float().cpu().contiguous()
