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

``patch_quality`` says where the maps come from: ``"maps"`` (the dataset's, above), ``"regions"`` (a
patch scorer from the pair's face/hand boxes: the rejected image's boxes — or the chosen image's when the
rejected has none — are its bad patches, everything else is good; so the chosen image teaches its faces and
hands and the rejected one only what lies outside them), or a callable ``"module:function"`` called as
``fn(batch, (h, w))`` that returns (B, 2, 1, H, W) quality in [0, 1] at any resolution (e.g. per-patch
feature similarity to a reference image).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ...core.objectives.losses import CONVENTIONS, NORMS, denoise_error, dpo_loss
from ...core.objectives.masks import PATCH_FORMS, box_masks, patch_weights, quality_to_latent, token_grid
from ..config_values import setting
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, repeat_cond, sample_noise

__all__ = ["PatchDPOOptions", "PatchDPO", "pair_quality_weights", "region_quality", "QUALITY_SOURCES"]

#: Built-in sources of patch quality (a ``"module:function"`` callable is the third kind).
QUALITY_SOURCES = ("maps", "regions")


def region_quality(batch: Mapping[str, Any], latent_size: tuple[int, int], image_size: int) -> torch.Tensor:
    """Patch quality from the pair's face and hand boxes: (B, 2, 1, h, w), 1 = good.

    The chosen image is good everywhere; the rejected image is bad (0) inside its face/hand boxes, or
    inside the chosen image's boxes when it has none (same prompt and seed, so the same layout). A pair
    with no boxes at all gets all ones (it then teaches nothing on the chosen side in the released form).
    """
    latents = batch["latents"]
    B = latents.shape[0]
    bad = torch.zeros(B, 1, *latent_size, device=latents.device)
    for kind in ("face_boxes", "hand_boxes"):
        per_item = batch.get(kind) or [[torch.zeros(0, 4), torch.zeros(0, 4)]] * B
        boxes = []
        for item in per_item:
            chosen, rejected = (item[0], item[1]) if len(item) > 1 else (item[0], item[0])
            rejected = torch.as_tensor(rejected).reshape(-1, 4)
            boxes.append(rejected if rejected.numel() else torch.as_tensor(chosen).reshape(-1, 4))
        bad = torch.maximum(bad, box_masks(boxes, image_size, latent_size, device=latents.device))
    return torch.stack([torch.ones_like(bad), 1.0 - bad], dim=1)


def pair_quality_weights(batch: Mapping[str, Any], latent_size: tuple[int, int], form: str,
                         quality: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's quality maps (or ``quality`` when given) → ``(W_chosen, W_rejected)``, each (B, 1, h, w)
    on the latents' device."""
    quality = batch.get("quality") if quality is None else quality
    latents = batch["latents"]
    if quality is None:
        raise ValueError(
            "patch-dpo: the batch must carry quality maps (B, 2, 1, R, R), got none; fix: give the pair records "
            '"chosen_quality" and/or "rejected_quality" maps (.npy or greyscale .png, 1 = good patch)'
        )
    if quality.ndim != 5 or quality.shape[1] < 2:
        raise ValueError(f"patch-dpo: quality must be (B, 2, 1, R, R) for pairs, got {tuple(quality.shape)}")
    if quality.shape[0] != latents.shape[0] or not bool(torch.isfinite(quality).all()) \
            or quality.min() < 0 or quality.max() > 1:
        raise ValueError(f"patch-dpo: quality must be one (2, 1, H, W) map pair per sample ({latents.shape[0]}) in "
                         f"[0, 1], got shape {tuple(quality.shape)} in [{float(quality.min())}, {float(quality.max())}]")
    q = quality.to(latents.device, torch.float32)
    q_w, q_l = quality_to_latent(q[:, 0], latent_size), quality_to_latent(q[:, 1], latent_size)
    return patch_weights(q_w, q_l, form)


@dataclass(frozen=True, kw_only=True)
class PatchDPOOptions:
    """patch-dpo's settings, merged into ``TrainConfig`` (keys ``patch_*``)."""

    patch_form: str = setting("weighted", "weighted: PatchDPO's released patch-weighted denoising loss; dpo: "
                              "Diffusion-DPO with per-pixel weights before the reduction.", group="patch",
                              choices=PATCH_FORMS)
    patch_norm: str = setting("all", "Patch-weighted errors divided by all latent elements ('all', released) or "
                              "by the weight sum ('mask').", group="patch", choices=NORMS)
    patch_quality: str = setting("maps", "Where patch quality comes from: maps (the records' chosen_quality / "
                                 "rejected_quality), regions (the records' face/hand boxes: the rejected image's "
                                 "regions are its bad patches), or a Python callable 'module:function' "
                                 "(batch, latent_size) -> (B, 2, 1, h, w) quality in [0, 1].", group="patch")

    def option_problems(self) -> list[str]:
        """Cross-field rules of these settings (``TrainConfig`` calls it)."""
        problems = []
        if self.patch_quality not in ("maps", "regions") and ":" not in self.patch_quality:
            problems.append(f"patch_quality must be maps, regions or a callable 'module:function', got "
                            f"{self.patch_quality!r}; fix: --set patch_quality=regions")
        return problems


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
    quality: str = "maps"
    resolution: int | None = None

    name = "patch-dpo"
    images_per_sample = 2

    def __post_init__(self):
        if self.form not in PATCH_FORMS:
            raise ValueError(f"PatchDPO: form must be one of {PATCH_FORMS}, got {self.form!r}")
        if self.norm not in NORMS or self.convention not in CONVENTIONS or not self.beta > 0:
            raise ValueError(f"PatchDPO: norm must be in {NORMS}, convention in {CONVENTIONS}, beta > 0; got "
                             f"{self.norm!r}, {self.convention!r}, {self.beta!r}")
        if self.quality not in QUALITY_SOURCES and ":" not in self.quality:
            raise ValueError(f"PatchDPO: quality must be one of {QUALITY_SOURCES} or 'module:function', got "
                             f"{self.quality!r}")
        if ":" in self.quality:  # import now, so a bad name fails before any model loads
            from ..callables import import_callable

            object.__setattr__(self, "_scorer", import_callable(self.quality, key="patch_quality",
                                                                example="my_pkg.patches:similarity"))

    def batch_quality(self, batch: Mapping[str, Any], latent_size: tuple[int, int]) -> torch.Tensor | None:
        """(B, 2, 1, H, W) quality from :attr:`quality`'s source (None: the dataset's maps)."""
        if self.quality == "maps":
            return None
        if self.quality == "regions":
            return region_quality(batch, latent_size, self.resolution or 8 * latent_size[0])
        quality = self._scorer(batch, latent_size)
        if not isinstance(quality, torch.Tensor) or quality.ndim != 5 or quality.shape[1:3] != (2, 1):
            raise ValueError(f"patch-dpo: patch_quality {self.quality!r} must return a (B, 2, 1, H, W) tensor, got "
                             f"{tuple(quality.shape) if isinstance(quality, torch.Tensor) else type(quality).__name__}")
        return quality

    @property
    def needs_reference(self) -> bool:
        return self.form == "dpo"

    @classmethod
    def from_config(cls, config: Any = None) -> PatchDPO:
        if config is None:
            return cls()
        return cls(form=config.patch_form, norm=config.patch_norm, beta=config.beta,
                   convention=config.beta_convention, proportion_empty_prompts=config.proportion_empty_prompts,
                   quality=config.patch_quality, resolution=config.resolution)

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        from ..models import adapters_disabled, unwrap_model

        latents = batch["latents"]  # (B, 2, C, h, w)
        if latents.ndim != 5 or latents.shape[1] != 2:
            raise ValueError(f"patch-dpo: batch latents must be (B, 2, C, h, w) pairs, got {tuple(latents.shape)}")
        B, _, _, h, w = latents.shape
        w_w, w_l = pair_quality_weights(batch, (h, w), self.form, self.batch_quality(batch, (h, w)))
        patch = getattr(ctx.process, "patch", 1)
        w_w, w_l = token_grid(w_w, patch, "mean"), token_grid(w_l, patch, "mean")
        weights = torch.cat([w_w, w_l])  # (2B, 1, h, w)
        x0 = torch.cat([latents[:, 0], latents[:, 1]])
        t = ctx.process.sample_t(B, ctx.generator).repeat(2)
        noise = sample_noise(x0[:B], ctx.generator).repeat(2, 1, 1, 1)
        cond = repeat_cond(drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts,
                                        ctx.generator), 2)
        x_t, target = ctx.process.add_noise(x0, noise, t)
        metrics = {"weight_chosen": w_w.mean(), "weight_rejected": w_l.mean()}
        if self.form == "weighted":
            err = denoise_error(ctx.process.predict(ctx.unet, x_t, t, cond), target, weights, self.norm)  # (2B,)
            per_pair = err[:B] + err[B:]
            loss = err.mean()  # = the released mean over 2B·C·h·w for norm="all"
            metrics |= {"err_chosen": err[:B].detach().mean(), "err_rejected": err[B:].detach().mean()}
            return ObjectiveOutput(loss=loss, per_sample=per_pair.detach(), metrics=metrics)
        with torch.no_grad(), adapters_disabled(ctx.unet):
            ref = denoise_error(ctx.process.predict(unwrap_model(ctx.unet), x_t, t, cond), target, weights, self.norm)
        err = denoise_error(ctx.process.predict(ctx.unet, x_t, t, cond), target, weights, self.norm)
        per_pair, logit = dpo_loss(err[:B], err[B:], ref[:B], ref[B:], beta=self.beta, convention=self.convention)
        metrics |= {"implicit_acc": (logit.detach() > 0).float().mean(), "logit": logit.detach().mean(),
                    "policy_err_w": err[:B].detach().mean(), "policy_err_l": err[B:].detach().mean()}
        return ObjectiveOutput(loss=per_pair.mean(), per_sample=per_pair.detach(), metrics=metrics)
