"""``hg-dpo``: one HG-DPO stage (Na et al., arXiv 2405.20216 v2): Diffusion-DPO + statistics matching.

The curriculum (easy → normal → hard pair sources, pools, merging) lives in the recipe ``trainers.recipes.hg_dpo``; this
objective trains one stage on the pair folder the runner wrote. Per pair, as ``dpo`` (shared t and ε,
reference = adapter-off UNet, run first under no_grad), plus

    L_stat = ᾱ_t · mean_c( |μ_c(x̂0_w) − μ_c(x0_w)| + |σ_c(x̂0_w) − σ_c(x0_w)| )

on the policy's predicted clean latent of the *winner* x̂0_w, toward the channel statistics (over h, w)
of the winner's clean latent (the real image in the hard stage, its SDEdit reconstruction in the
normal stage). ᾱ_t damps high-noise steps, where x̂0 is mostly the predicted noise divided by a small
√ᾱ_t. Loss = L_DPO + ``hg_stat_weight``·L_stat.

:meth:`HGDPO.prepare_base` merges the previous stages' LoRAs (``hg_prior_loras``) into the base before
the loop adds this stage's LoRA, so the adapter-off reference *is* the previous stage's model.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...core.objectives.losses import CONVENTIONS, denoise_error, dpo_loss
from ..config_values import setting
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, repeat_cond, sample_noise

__all__ = ["HGDPOOptions", "HGDPO", "channel_stat_loss", "merge_lora_files"]


def channel_stat_loss(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(B,) mean over channels of |μ_c(x) − μ_c(ref)| + |σ_c(x) − σ_c(ref)|, statistics over (h, w)."""
    dims = (2, 3)
    mu, sd = x.mean(dims), x.std(dims)
    mu_r, sd_r = ref.mean(dims), ref.std(dims)
    return ((mu - mu_r).abs() + (sd - sd_r).abs()).mean(1)


def merge_lora_files(unet: torch.nn.Module, paths) -> None:
    """Fold each vitruvian LoRA file in ``paths`` (in order) into ``unet``'s base weights."""
    from ...core.lora_io import load_lora_state
    from ..lora_layers import add_lora, apply_lora_state, merge_lora

    for path in paths:
        state = load_lora_state(path)
        targets = tuple(state.config.get("lora_targets") or ("to_q", "to_k", "to_v", "to_out.0"))
        add_lora(unet, rank=state.rank, alpha=state.alpha, targets=targets)
        apply_lora_state(unet, state.unet)
        merge_lora(unet)


@dataclass(frozen=True, kw_only=True)
class HGDPOOptions:
    """HG-DPO's settings (the recipe's and its stage objective's), merged into ``TrainConfig`` (``hg_*``)."""

    hg_stages: tuple[str, ...] = setting(("easy", "normal", "hard"), "Curriculum stages in order (easy, normal, "
                                         "hard).", group="hgdpo")
    hg_stage_steps: tuple[int, ...] = setting((), "Optimizer steps per stage (empty = steps for each).",
                                              group="hgdpo")
    hg_pool_size: int = setting(4, "Samples generated per prompt for a stage's pool (paper: 8).", group="hgdpo",
                                ge=2)
    hg_scorer: str = setting("sharpness", "Pool ranker: a pack scorer name (sharpness, confidence) or a Python "
                             "callable 'module:function' (images (B,3,H,W) in [0,1], prompts) -> (B,) scores.",
                             group="hgdpo")
    hg_strength: float = setting(0.5, "SDEdit strength of the normal stage's reconstruction of the real image "
                                 "(0 = the real image, 1 = pure noise).", group="hgdpo", gt=0, lt=1)
    hg_sample_steps: int = setting(20, "Denoising steps when generating pools and reconstructions.",
                                   group="hgdpo", ge=1)
    hg_guidance: float = setting(5.0, "Classifier-free guidance scale when generating pools.", group="hgdpo", ge=1)
    hg_stat_weight: float = setting(1.0, "Weight of the statistics-matching loss (channel mean/std of the "
                                    "winner's predicted x0 latent vs its clean latent).", group="hgdpo", ge=0)
    hg_prior_loras: tuple[str, ...] = setting((), "LoRA files merged into the base before this run's LoRA is "
                                              "added (set by the stage runner; the merged model is the reference).",
                                              group="hgdpo")

    def option_problems(self) -> list[str]:
        """Cross-field rules of these settings (``TrainConfig`` calls it)."""
        problems = []
        bad_stages = [x for x in self.hg_stages if x not in ("easy", "normal", "hard")]
        if bad_stages or not self.hg_stages:
            problems.append(f"hg_stages must be a non-empty list of easy, normal, hard, got {self.hg_stages!r}; "
                            "fix: --set hg_stages=easy,normal,hard")
        if self.hg_stage_steps and (len(self.hg_stage_steps) != len(self.hg_stages)
                                    or min(self.hg_stage_steps) < 1):
            problems.append(f"hg_stage_steps must be empty or one step count >= 1 per stage ({len(self.hg_stages)}), "
                            f"got {self.hg_stage_steps!r}; fix: --set hg_stage_steps=300,100,100")
        return problems


@dataclass(frozen=True)
class HGDPO:
    """Diffusion-DPO with HG-DPO's statistics-matching term; reference = the merged previous stages.

    Args:
        beta, convention, proportion_empty_prompts: as ``dpo``.
        stat_weight: λ of L_stat (0 = plain DPO). prior_loras: LoRA files merged before training.
    """

    beta: float = 5000.0
    convention: str = "official"
    proportion_empty_prompts: float = 0.0
    stat_weight: float = 1.0
    prior_loras: tuple[str, ...] = ()

    name = "hg-dpo"
    images_per_sample = 2
    needs_reference = True

    def __post_init__(self):
        if self.convention not in CONVENTIONS or not self.beta > 0 or self.stat_weight < 0:
            raise ValueError(f"HGDPO: convention must be in {CONVENTIONS}, beta > 0, stat_weight >= 0; got "
                             f"{self.convention!r}, {self.beta}, {self.stat_weight}")

    @classmethod
    def from_config(cls, config: Any = None) -> HGDPO:
        if config is None:
            return cls()
        return cls(beta=config.beta, convention=config.beta_convention,
                   proportion_empty_prompts=config.proportion_empty_prompts, stat_weight=config.hg_stat_weight,
                   prior_loras=tuple(config.hg_prior_loras))

    def prepare_base(self, base) -> None:
        """Called by the loop before ``add_lora``: merge the previous stages into the frozen UNet."""
        merge_lora_files(base.unet, self.prior_loras)

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        from ..models import adapters_disabled, unwrap_model

        latents = batch["latents"]
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(f"hg-dpo: batch latents must be (B, 2, C, h, w) [winner, loser], got {tuple(latents.shape)}")
        B = latents.shape[0]
        x0 = torch.cat([latents[:, 0], latents[:, 1]])
        t = ctx.process.sample_t(B, ctx.generator).repeat(2)
        noise = sample_noise(x0[:B], ctx.generator).repeat(2, 1, 1, 1)
        cond = repeat_cond(drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts,
                                        ctx.generator), 2)
        x_t, target = ctx.process.add_noise(x0, noise, t)
        with torch.no_grad(), adapters_disabled(ctx.unet):
            ref = denoise_error(ctx.process.predict(unwrap_model(ctx.unet), x_t, t, cond), target)
        pred = ctx.process.predict(ctx.unet, x_t, t, cond)
        err = denoise_error(pred, target)
        per_pair, logit = dpo_loss(err[:B], err[B:], ref[:B], ref[B:], beta=self.beta, convention=self.convention)
        metrics = {"implicit_acc": (logit.detach() > 0).float().mean(), "logit": logit.detach().mean()}
        if self.stat_weight > 0:
            x0_hat = ctx.process.predicted_x0(x_t[:B], pred[:B], t[:B])
            a = ctx.process.signal_level(t[:B], x0.device)
            stat = a * channel_stat_loss(x0_hat, x0[:B].float())
            per_pair = per_pair + self.stat_weight * stat
            metrics["stat"] = stat.detach().mean()
        return ObjectiveOutput(loss=per_pair.mean(), per_sample=per_pair.detach(), metrics=metrics)
