"""``patch-dpo``: PatchDPO (Huang et al., arXiv 2412.03177) adapted to (chosen, rejected) human pairs.

The dataset's quality maps (``chosen_quality`` / ``rejected_quality``; (B, 2, 1, R, R) in [0, 1],
1 = good patch, a missing map = all ones; warped with their image by the data layer) are
area-averaged to the latent grid and mapped to per-pixel weights by
:func:`~vitruvian.core.objectives.masks.patch_weights` (d = q_w·(1 − q_l)). Both images share one
(t, ε). Two forms (``patch_form``):

- ``"weighted"`` — the released loss: ``mean(W ⊙ (ε̂ − ε)²)`` over the 2B batch with W = d on the
  chosen image and q_l on the rejected one. No reference model, no log-sigmoid. Cost 6F per pair (= SFT
  on both images).
- ``"dpo"`` — a true patch-weighted Diffusion-DPO: the policy and reference errors of both images are
  weighted by d *before* the reduction, then :func:`~vitruvian.core.objectives.losses.dpo_loss`.
  Cost 8F per pair (= dpo).

``patch_norm``: ``"all"`` divides by every latent element (released; the loss scale follows the weighted
area), ``"mask"`` by the weight sum.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...core.objectives.losses import CONVENTIONS, NORMS, denoise_error, dpo_loss
from ...core.objectives.masks import PATCH_FORMS, patch_weights, quality_to_latent
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, noisy_latents_and_target, predict, repeat_cond, sample_noise, sample_timesteps

__all__ = ["PatchDPO", "pair_quality_weights"]


def pair_quality_weights(batch: Mapping[str, Any], latent_size: tuple[int, int], form: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's quality maps → ``(W_chosen, W_rejected)``, each (B, 1, h, w) on the latents' device."""
    quality = batch.get("quality")
    latents = batch["latents"]
    if quality is None:
        raise ValueError(
            "patch-dpo: the batch must carry quality maps (B, 2, 1, R, R), got none; fix: give the pair records "
            '"chosen_quality" and/or "rejected_quality" maps (.npy or greyscale .png, 1 = good patch)'
        )
    if quality.ndim != 5 or quality.shape[1] < 2:
        raise ValueError(f"patch-dpo: quality must be (B, 2, 1, R, R) for pairs, got {tuple(quality.shape)}")
    q = quality.to(latents.device)
    q_w, q_l = quality_to_latent(q[:, 0], latent_size), quality_to_latent(q[:, 1], latent_size)
    return patch_weights(q_w, q_l, form)


@dataclass(frozen=True)
class PatchDPO:
    """Patch-weighted preference learning on (chosen, rejected) pairs with quality maps.

    Args:
        form: ``"weighted"`` (released) or ``"dpo"``. norm: ``"all"`` or ``"mask"``.
        beta, convention: the DPO form's β (see ``dpo``). proportion_empty_prompts: CFG dropout.
    """

    form: str = "weighted"
    norm: str = "all"
    beta: float = 5000.0
    convention: str = "official"
    proportion_empty_prompts: float = 0.0

    name = "patch-dpo"
    images_per_sample = 2

    def __post_init__(self):
        if self.form not in PATCH_FORMS:
            raise ValueError(f"PatchDPO: form must be one of {PATCH_FORMS}, got {self.form!r}")
        if self.norm not in NORMS or self.convention not in CONVENTIONS or not self.beta > 0:
            raise ValueError(f"PatchDPO: norm must be in {NORMS}, convention in {CONVENTIONS}, beta > 0; got "
                             f"{self.norm!r}, {self.convention!r}, {self.beta!r}")

    @property
    def needs_reference(self) -> bool:
        return self.form == "dpo"

    @classmethod
    def from_config(cls, config: Any = None) -> PatchDPO:
        if config is None:
            return cls()
        return cls(form=config.patch_form, norm=config.patch_norm, beta=config.beta,
                   convention=config.beta_convention, proportion_empty_prompts=config.proportion_empty_prompts)

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        from ..models import adapters_disabled, unwrap_model

        latents = batch["latents"]  # (B, 2, C, h, w)
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(f"patch-dpo: batch latents must be (B, 2, C, h, w) pairs, got {tuple(latents.shape)}")
        B, _, _, h, w = latents.shape
        w_w, w_l = pair_quality_weights(batch, (h, w), self.form)
        weights = torch.cat([w_w, w_l])  # (2B, 1, h, w)
        x0 = torch.cat([latents[:, 0], latents[:, 1]])
        t = sample_timesteps(B, ctx.scheduler, ctx.generator).repeat(2)
        noise = sample_noise(x0[:B], ctx.generator).repeat(2, 1, 1, 1)
        cond = repeat_cond(drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts,
                                        ctx.generator), 2)
        x_t, target = noisy_latents_and_target(ctx.scheduler, x0, noise, t)
        metrics = {"weight_chosen": w_w.mean(), "weight_rejected": w_l.mean()}
        if self.form == "weighted":
            err = denoise_error(predict(ctx.unet, x_t, t, cond), target, weights, self.norm)  # (2B,)
            per_pair = err[:B] + err[B:]
            loss = err.mean()  # = the released mean over 2B·C·h·w for norm="all"
            metrics |= {"err_chosen": err[:B].detach().mean(), "err_rejected": err[B:].detach().mean()}
            return ObjectiveOutput(loss=loss, per_sample=per_pair.detach(), metrics=metrics)
        with torch.no_grad(), adapters_disabled(ctx.unet):
            ref = denoise_error(predict(unwrap_model(ctx.unet), x_t, t, cond), target, weights, self.norm)
        err = denoise_error(predict(ctx.unet, x_t, t, cond), target, weights, self.norm)
        per_pair, logit = dpo_loss(err[:B], err[B:], ref[:B], ref[B:], beta=self.beta, convention=self.convention)
        metrics |= {"implicit_acc": (logit.detach() > 0).float().mean(), "logit": logit.detach().mean(),
                    "policy_err_w": err[:B].detach().mean(), "policy_err_l": err[B:].detach().mean()}
        return ObjectiveOutput(loss=per_pair.mean(), per_sample=per_pair.detach(), metrics=metrics)
