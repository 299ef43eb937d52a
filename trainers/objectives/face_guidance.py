"""``face-guidance``: FaceScore v1's guidance loss (arXiv 2406.17100 v1), in the reading of methods.md §4.

Pairs (good, bad) = (chosen, rejected) differ only inside the face (the bad face is an inpainting of the
good photo). Both share one (t, ε). The model sees the *bad* noisy latent and is trained to predict the
noise that leads to the *good* image::

    x_t^b = √ᾱ_t·x0^b + √(1−ᾱ_t)·ε
    ε*    = (x_t^b − √ᾱ_t·x0^g)/√(1−ᾱ_t) = ε + √(ᾱ_t/(1−ᾱ_t))·(x0^b − x0^g)
    L     = ‖ε_θ(x_t^b) − ε*‖²_M  +  λ·‖ε_θ(x_t^g) − ε‖²

with M the face boxes (of both images, dilated by ``mask_dilate``) when ``guidance_masked`` (the
default; outside the face x0^b = x0^g so ε* = ε anyway, and the mask keeps the loss from also
re-teaching the background), normalised by ``mask_norm``. For v-prediction models the target is the
v of (x0^g, ε*). Cost: two forwards (bad, good) and one backward = 6F per pair; no reference model.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...core.objectives.losses import NORMS, denoise_error
from ...core.objectives.masks import box_masks, token_grid
from ..config_values import setting
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, repeat_cond, sample_noise

__all__ = ["FaceGuidanceOptions", "FaceGuidance"]


@dataclass(frozen=True, kw_only=True)
class FaceGuidanceOptions:
    """face-guidance's settings, merged into ``TrainConfig`` (keys ``guidance_*``)."""

    guidance_lambda: float = setting(1.0, "lambda: weight of the ordinary denoising loss on the good image next to "
                                     "the guidance loss.", group="guidance", ge=0)
    guidance_masked: bool = setting(True, "Restrict the guidance loss (bad latent -> eps*) to the face boxes.",
                                    group="guidance")


@dataclass(frozen=True)
class FaceGuidance:
    """Push the bad face's denoising trajectory toward the good face's.

    Args:
        lam: λ, weight of the ordinary loss on the good image. masked: restrict the guidance to the face.
        norm: ``"all"`` or ``"mask"``. dilate: face-box dilation (pixels). resolution: R of the boxes.
        proportion_empty_prompts: CFG dropout.
    """

    lam: float = 1.0
    masked: bool = True
    norm: str = "all"
    dilate: float = 16.0
    resolution: int | None = None
    proportion_empty_prompts: float = 0.0

    name = "face-guidance"
    images_per_sample = 2
    needs_reference = False

    def __post_init__(self):
        if self.norm not in NORMS or self.lam < 0 or self.dilate < 0:
            raise ValueError(f"FaceGuidance: norm must be in {NORMS}, lam >= 0, dilate >= 0; got "
                             f"{self.norm!r}, {self.lam}, {self.dilate}")

    @classmethod
    def from_config(cls, config: Any = None) -> FaceGuidance:
        if config is None:
            return cls()
        return cls(lam=config.guidance_lambda, masked=config.guidance_masked, norm=config.mask_norm,
                   dilate=config.mask_dilate, resolution=config.resolution,
                   proportion_empty_prompts=config.proportion_empty_prompts)

    def face_mask(self, batch: Mapping[str, Any], latent_size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, h, w): the union of the good and bad images' face boxes on the latent grid."""
        latents = batch["latents"]
        size = self.resolution or 8 * latent_size[0]
        boxes = batch.get("face_boxes") or [[torch.zeros(0, 4)] * 2] * latents.shape[0]
        both = [torch.cat([torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in per]) for per in boxes]
        return box_masks(both, size, latent_size, dilate=self.dilate, device=latents.device)

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        latents = batch["latents"]
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(f"face-guidance: batch latents must be (B, 2, C, h, w) [good, bad] pairs, got "
                             f"{tuple(latents.shape)}; fix: a pair dataset whose rejected image is the inpainted face")
        B, _, _, h, w = latents.shape
        x0_g, x0_b = latents[:, 0], latents[:, 1]
        t = ctx.process.sample_t(B, ctx.generator)
        noise = sample_noise(x0_g, ctx.generator)
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        x0 = torch.cat([x0_b, x0_g])
        x_t, target = ctx.process.add_noise(x0, noise.repeat(2, 1, 1, 1), t.repeat(2))
        pred = ctx.process.predict(ctx.unet, x_t, t.repeat(2), repeat_cond(cond, 2))  # one call on [bad; good]
        pred_b, pred_g = pred[:B], pred[B:]
        star = ctx.process.target_towards(x_t[:B], x0_g, t)  # ε* (or v*): denoises the bad latent to the good image
        mask = token_grid(self.face_mask(batch, (h, w)), getattr(ctx.process, "patch", 1), "max") if self.masked else None
        guide = denoise_error(pred_b, star, mask, self.norm)  # (B,)
        plain = denoise_error(pred_g, target[B:])
        per = guide + self.lam * plain
        metrics = {"guide": guide.detach().mean(), "mse_good": plain.detach().mean()}
        if mask is not None:
            metrics["face_area"] = mask.mean()
        return ObjectiveOutput(loss=per.mean(), per_sample=per.detach(), metrics=metrics)
