"""``sft``: plain diffusion fine-tuning, the per-sample MSE between the UNet output and ε (or v).

On a pair dataset it trains on the chosen image only (``latents[:, 0]``).
Cost: one forward + backward per image (3F).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...core.objectives.losses import denoise_error
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, sample_noise

__all__ = ["SFT"]


@dataclass(frozen=True)
class SFT:
    """Supervised fine-tuning: the ε- (or v-) prediction MSE on single images (pairs: the chosen one).

    Args:
        proportion_empty_prompts: fraction of samples trained with the empty prompt (CFG dropout).
    """

    proportion_empty_prompts: float = 0.0

    name = "sft"
    images_per_sample = 1
    needs_reference = False

    @classmethod
    def from_config(cls, config: Any = None) -> SFT:
        if config is None:
            return cls()
        return cls(proportion_empty_prompts=float(config.proportion_empty_prompts))

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        x0 = batch["latents"][:, 0]  # (B, C, h, w)
        t = ctx.process.sample_t(x0.shape[0], ctx.generator)
        noise = sample_noise(x0, ctx.generator)
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        x_t, target = ctx.process.add_noise(x0, noise, t)
        err = denoise_error(ctx.process.predict(ctx.unet, x_t, t, cond), target)  # (B,) fp32
        loss = err.mean()
        return ObjectiveOutput(loss=loss, per_sample=err.detach(), metrics={"mse": loss.detach()})
