"""``dpo``: Diffusion-DPO (Wallace et al., arXiv 2311.12908) on a LoRA policy.

Per pair (methods.md §0): winner and loser share ONE timestep and ONE noise draw; the reference is
the same UNet with its LoRA adapters disabled, run first under ``no_grad`` (so only one graph is
alive at the peak); the policy then runs once on the 2B batch [winners; losers]. Errors and the loss
are fp32 whatever the autocast dtype. Cost: 2 images × (policy 3F + reference 1F) = 8F per pair.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...core.objectives.losses import CONVENTIONS, denoise_error, dpo_loss
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, repeat_cond, sample_noise

__all__ = ["DPO"]


@dataclass(frozen=True)
class DPO:
    """Diffusion-DPO: denoise the chosen image better, the rejected one worse, than the adapter-off base.

    Args:
        beta: β in ``convention`` (official: logit = −½·β·Δ, β = 5000; diffusers: −β·Δ).
        convention: ``"official"`` or ``"diffusers"``.
        proportion_empty_prompts: fraction of pairs trained with the empty prompt (CFG dropout;
            the official launchers use 0.2).
    """

    beta: float = 5000.0
    convention: str = "official"
    proportion_empty_prompts: float = 0.0

    name = "dpo"
    images_per_sample = 2
    needs_reference = True

    def __post_init__(self):
        if self.convention not in CONVENTIONS:
            raise ValueError(f"DPO: convention must be one of {CONVENTIONS}, got {self.convention!r}")
        if not self.beta > 0:
            raise ValueError(f"DPO: beta must be > 0, got {self.beta!r}")

    @classmethod
    def from_config(cls, config: Any = None) -> DPO:
        if config is None:
            return cls()
        return cls(
            beta=float(config.beta),
            convention=str(config.beta_convention),
            proportion_empty_prompts=float(config.proportion_empty_prompts),
        )

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        from ..models import adapters_disabled, unwrap_model

        latents = batch["latents"]  # (B, 2, C, h, w): [chosen, rejected]
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(
                f"DPO: batch latents must be (B, 2, C, h, w) [chosen, rejected], got {tuple(latents.shape)}; "
                "dpo needs a pair dataset (metadata lines with a chosen and a rejected image)"
            )
        B = latents.shape[0]
        x0 = torch.cat([latents[:, 0], latents[:, 1]])  # (2B, C, h, w) [winners; losers]
        t = ctx.process.sample_t(B, ctx.generator).repeat(2)  # shared per pair
        noise = sample_noise(x0[:B], ctx.generator).repeat(2, 1, 1, 1)  # shared per pair
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        cond = repeat_cond(cond, 2)
        x_t, target = ctx.process.add_noise(x0, noise, t)

        with torch.no_grad(), adapters_disabled(ctx.unet):
            ref_err = denoise_error(ctx.process.predict(unwrap_model(ctx.unet), x_t, t, cond), target)
        err = denoise_error(ctx.process.predict(ctx.unet, x_t, t, cond), target)  # (2B,) fp32

        err_w, err_l = err.chunk(2)
        ref_w, ref_l = ref_err.chunk(2)
        per_pair, logit = dpo_loss(err_w, err_l, ref_w, ref_l, beta=self.beta, convention=self.convention)
        loss = per_pair.mean()
        margin = (ref_w - err_w.detach()) - (ref_l - err_l.detach())  # > 0: winner improved more
        metrics = {
            "implicit_acc": (logit.detach() > 0).float().mean(),
            "reward_margin": margin.mean(),
            "logit": logit.detach().mean(),
            "policy_err_w": err_w.detach().mean(),
            "policy_err_l": err_l.detach().mean(),
            "ref_err_w": ref_w.mean(),
            "ref_err_l": ref_l.mean(),
        }
        return ObjectiveOutput(loss=loss, per_sample=per_pair.detach(), metrics=metrics)
