"""Per-sample diffusion losses: pure functions on tensors, each returning one value per sample ``(B,)``.

The caller reduces (``.mean()``), so objectives can weight, mask or log samples before that.

- :func:`denoise_error` is the diffusion error e(x, t) = mean over (C, h, w) of (target − pred)²,
  optionally weighted per pixel with an explicit normalisation (``"all"`` or ``"mask"``).
- :func:`dpo_loss` is Diffusion-DPO (Wallace et al., arXiv 2311.12908) on those errors.

Conventions for β (methods.md §0(c)): the official code uses
``logit = −½·β·[(e_θw − e_rw) − (e_θl − e_rl)]`` with β = 5000 ("official"); the diffusers research
script uses ``−β·[…]`` ("diffusers"), so diffusers β = ½ × official β.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NORMS", "CONVENTIONS", "denoise_error", "weighted_mse", "dpo_loss"]

#: How :func:`denoise_error` divides the weighted squared error.
NORMS = ("all", "mask")
#: How :func:`dpo_loss` scales the error difference by β.
CONVENTIONS = ("official", "diffusers")


def denoise_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    norm: str = "all",
) -> torch.Tensor:
    r"""Per-sample (optionally pixel-weighted) mean squared denoising error.

    Args:
        pred: :math:`(B, C, h, w)` model output (ε̂ or v̂), any float dtype.
        target: :math:`(B, C, h, w)` the regression target (ε or v), same shape as ``pred``.
        weights: optional per-pixel weights broadcastable to ``pred``: :math:`(B, 1, h, w)`
            (shared over channels) or :math:`(B, C, h, w)`; non-negative for ``norm="mask"``.
        norm: ``"all"`` divides the weighted sum by all C·h·w elements, so zero-weight pixels still
            count in the denominator (PatchDPO / FairHuman's released code); ``"mask"`` divides by the
            sum of the (broadcast) weights, a weighted mean (0 for a sample whose weights are all 0).

    Returns:
        :math:`(B,)` float32 errors. Without weights both norms give the plain mean over (C, h, w).

    Example:
        >>> pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
        >>> denoise_error(pred, target)
        tensor([1., 1.])
        >>> w = torch.zeros(2, 1, 8, 8); w[:, :, :4] = 1.0    # top half only
        >>> denoise_error(pred, target, w, norm="all"), denoise_error(pred, target, w, norm="mask")
        (tensor([0.5000, 0.5000]), tensor([1., 1.]))
    """
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(
            f"denoise_error: pred and target must have the same (B, C, h, w) shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if norm not in NORMS:
        raise ValueError(f"denoise_error: norm must be one of {NORMS}, got {norm!r}")
    # fp32 reduction: under fp16/bf16 autocast the squared error of C·h·w elements loses the
    # small differences DPO depends on (offline.md: bf16 DPO losses become noise).
    sq = (pred.float() - target.float()).square()
    dims = tuple(range(1, sq.ndim))
    if weights is None:
        return sq.mean(dim=dims)
    if weights.ndim != sq.ndim or weights.shape[0] != sq.shape[0]:
        raise ValueError(
            f"denoise_error: weights must be (B, 1, h, w) or (B, C, h, w) with B = {sq.shape[0]}, "
            f"got {tuple(weights.shape)}"
        )
    w = weights.float().expand_as(sq)
    total = (w * sq).sum(dim=dims)
    if norm == "all":
        return total / sq[0].numel()
    # A sample with no weight has nothing to learn: 0, not 0/0.
    return total / w.sum(dim=dims).clamp_min(torch.finfo(torch.float32).tiny)


#: The contract name (``weighted_mse``) for the same function.
weighted_mse = denoise_error


def dpo_loss(
    err_w: torch.Tensor,
    err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
    convention: str = "official",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Diffusion-DPO loss per pair from policy and reference denoising errors.

    ``logit = −s·β·[(e_θw − e_rw) − (e_θl − e_rl)]`` with s = ½ (``"official"``, the paper's code,
    β = 5000) or s = 1 (``"diffusers"``, its research script, β = 2500 for the same loss), and
    ``loss = −log σ(logit)``. The logit is positive when the policy improved on the reference more
    for the winner than for the loser; ``mean(logit > 0)`` is the implicit accuracy.

    Args:
        err_w: :math:`(B,)` policy error on the winners (:func:`denoise_error`).
        err_l: :math:`(B,)` policy error on the losers, same (t, ε) as the winner of its pair.
        ref_err_w: :math:`(B,)` reference error on the winners.
        ref_err_l: :math:`(B,)` reference error on the losers.
        beta: β > 0 in the chosen convention.
        convention: ``"official"`` or ``"diffusers"``.

    Returns:
        ``(loss, logit)``, both :math:`(B,)`. ``loss`` ≥ 0, equal to ln 2 when policy = reference.

    Example:
        >>> e = torch.full((3,), 0.1)
        >>> loss, logit = dpo_loss(e, e, e, e, beta=5000.0)
        >>> loss, logit
        (tensor([0.6931, 0.6931, 0.6931]), tensor([-0., -0., -0.]))
        >>> better_on_winner = dpo_loss(e - 1e-3, e, e, e, beta=5000.0)[0]
        >>> bool((better_on_winner < loss).all())
        True
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"dpo_loss: convention must be one of {CONVENTIONS}, got {convention!r}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta!r}")
    shapes = {t.shape for t in (err_w, err_l, ref_err_w, ref_err_l)}
    if len(shapes) != 1 or err_w.ndim != 1:
        raise ValueError(
            "dpo_loss: err_w, err_l, ref_err_w, ref_err_l must all be (B,), got "
            + ", ".join(str(tuple(t.shape)) for t in (err_w, err_l, ref_err_w, ref_err_l))
        )
    scale = 0.5 * beta if convention == "official" else beta
    logit = -scale * ((err_w - ref_err_w) - (err_l - ref_err_l))
    return -F.logsigmoid(logit), logit
