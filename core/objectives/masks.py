"""Region weights for the masked objectives: boxes → latent masks, patch-quality maps → latent weights.

- :func:`box_masks` rasterises face/hand boxes (pixels of the augmented R×R training image) into
  binary rectangles, optionally dilated (FairHuman dilates by 16 px), then nearest-resizes them to the
  latent grid, as FairHuman's released code does with its mask images.
- :func:`quality_to_latent` area-averages (N, 1, R, R) quality maps (already flipped/cropped with their
  image by the data layer) to the latent grid.
- :func:`patch_weights` turns a (chosen, rejected) pair of quality maps into the per-pixel weights of
  PatchDPO's two forms (mapping documented in ``docs/methods.md``).
- :func:`token_grid` makes a latent mask or weight map constant on each p×p patch a transformer turns into one
  token (Flux, SD3: p = 2), since the model predicts a token's latents jointly: masks take the patch's max
  (a token touching a face is a face token), weights its mean.

Shape:
    boxes: list of B float tensors (k, 4) x0, y0, x1, y1 in pixels of an R×R image.
    masks: (B, 1, h, w) float32 in {0, 1}. quality: (B, 1, R, R) in [0, 1] → (B, 1, h, w).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["box_masks", "quality_to_latent", "patch_weights", "token_grid", "PATCH_FORMS"]

#: The two PatchDPO forms: the released weighted denoising loss, and a patch-weighted Diffusion-DPO.
PATCH_FORMS = ("weighted", "dpo")


def box_masks(
    boxes: Sequence[torch.Tensor],
    image_size: int,
    latent_size: tuple[int, int],
    *,
    dilate: float = 0.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Binary rectangle masks of ``boxes`` on the latent grid.

    Args:
        boxes: B tensors (k, 4) ``x0, y0, x1, y1`` in pixels of the R×R image (k may be 0).
        image_size: R, the side of the (square) training image the boxes live in.
        latent_size: (h, w) of the latent grid.
        dilate: pixels added on every side of each box before rasterising (FairHuman: 16).
        device: where the masks are built (default: the boxes' device).

    Returns:
        (B, 1, h, w) float32 in {0, 1}: 1 on latent cells whose nearest pixel lies in a box.

    Example:
        >>> m = box_masks([torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.zeros(0, 4)], 64, (8, 8))
        >>> m.shape, m[0].sum().item(), m[1].sum().item()
        (torch.Size([2, 1, 8, 8]), 16.0, 0.0)
    """
    if image_size <= 0:
        raise ValueError(f"box_masks: image_size must be > 0, got {image_size}")
    if dilate < 0:
        raise ValueError(f"box_masks: dilate must be >= 0 pixels, got {dilate}")
    h, w = latent_size
    out = torch.zeros(len(boxes), 1, h, w, device=device)
    # Sample the pixel raster at the latent cells' nearest pixels (what F.interpolate(mode="nearest")
    # does on a rasterised mask), without building the R×R raster.
    ys = (torch.arange(h, device=out.device, dtype=torch.float32) * (image_size / h)).floor() + 0.5
    xs = (torch.arange(w, device=out.device, dtype=torch.float32) * (image_size / w)).floor() + 0.5
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b, dtype=torch.float32, device=out.device).reshape(-1, 4)
        if b.numel() == 0:
            continue
        x0, y0 = b[:, 0:1] - dilate, b[:, 1:2] - dilate
        x1, y1 = b[:, 2:3] + dilate, b[:, 3:4] + dilate
        inside_y = (ys[None] >= y0) & (ys[None] < y1)  # (k, h)
        inside_x = (xs[None] >= x0) & (xs[None] < x1)  # (k, w)
        out[i, 0] = (inside_y[:, :, None] & inside_x[:, None, :]).any(0).float()
    return out


def quality_to_latent(quality: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Area-average (B, 1, R, R) quality maps in [0, 1] to (B, 1, h, w).

    The maps arrive already warped with their image (flip/crop) by the data layer, so only the
    resolution changes here; area averaging keeps each latent cell's mean quality.
    """
    if quality.ndim != 4 or quality.shape[1] != 1:
        raise ValueError(f"quality_to_latent: quality must be (B, 1, R, R), got {tuple(quality.shape)}")
    return F.adaptive_avg_pool2d(quality.float(), latent_size).clamp(0.0, 1.0)


def patch_weights(q_w: torch.Tensor, q_l: torch.Tensor, form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel loss weights of a (chosen, rejected) pair from their quality maps (1 = good patch).

    ``d = q_w · (1 − q_l)`` marks the patches where the chosen image is good *and* the rejected one
    is bad: what the pair teaches.

    - ``"weighted"`` (PatchDPO's released loss): chosen weight ``d`` (the released ``1 − target_map``
      when the chosen map is all ones), rejected weight ``q_l`` (its good patches are learned, its bad
      ones are not).
    - ``"dpo"``: both errors weighted by ``d`` before the reduction, so the DPO comparison runs on the
      patches where the two images differ in quality.

    Args:
        q_w, q_l: (B, 1, h, w) in [0, 1] at latent resolution.

    Returns:
        ``(weights_chosen, weights_rejected)``, each (B, 1, h, w) in [0, 1].
    """
    if form not in PATCH_FORMS:
        raise ValueError(f"patch_weights: form must be one of {PATCH_FORMS}, got {form!r}")
    if q_w.shape != q_l.shape:
        raise ValueError(f"patch_weights: q_w and q_l must have one shape, got {tuple(q_w.shape)} and {tuple(q_l.shape)}")
    d = q_w * (1.0 - q_l)
    return (d, q_l) if form == "weighted" else (d, d)


def token_grid(weights: torch.Tensor, patch: int, how: str) -> torch.Tensor:
    """(B, 1, h, w) → the same shape, constant on each ``patch``×``patch`` cell (``how``: "max" or "mean").

    ``patch`` 1 (a UNet) returns ``weights`` itself. h and w must be multiples of ``patch``.

    >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 1, 2] = 1
    >>> token_grid(m, 2, "max")[0, 0].tolist()
    [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    if patch == 1:
        return weights
    if how not in ("max", "mean") or weights.shape[-1] % patch or weights.shape[-2] % patch:
        raise ValueError(f"token_grid: how must be 'max' or 'mean' and the map's sides multiples of {patch}, got "
                         f"{how!r} and {tuple(weights.shape)}")
    pool = F.max_pool2d if how == "max" else F.avg_pool2d
    return pool(weights, patch).repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)
