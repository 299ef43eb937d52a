"""ComfyUI's part of sampling one region for :mod:`.refine` (Refine Regions): the graph's conditioning cut to
the crop, differential diffusion, and the ``sample(crop, noise_mask, job)`` callable that
:func:`vitruvian.core.refine.refine_regions` runs (encode with the VAE, ``comfy.sample.sample`` with the
region's soft mask, decode). The choices are documented in :mod:`.refine`'s docstring.
"""

from __future__ import annotations

import time

import torch

from ..core.refine import RegionFailed
from ..core.refine.conditioning import crop_area, crop_cond_mask, crop_hint
from ._convert import image_from_core, image_to_core

__all__ = ["crop_conditioning", "differential", "make_sampler"]


# ----------------------------------------------------------------------------------- conditioning


def _crop_control(control, plan, batch_size: int):
    """A copy of a ControlNet / T2I-adapter chain whose hints show the crop."""
    new = control.copy()
    if isinstance(getattr(control, "cond_hint_original", None), torch.Tensor):
        new.cond_hint_original = crop_hint(control.cond_hint_original, plan, batch_size=batch_size)
    previous = getattr(control, "previous_controlnet", None)
    if previous is not None:
        new.set_previous_controlnet(_crop_control(previous, plan, batch_size))
    return new


def crop_conditioning(conditioning: list, plan, batch_size: int) -> list:
    """ComfyUI CONDITIONING for the whole image → for one crop (masks, areas, control hints cut to it).
    Entries whose area misses the crop, or whose mask is empty there, are dropped."""
    out = []
    for embedding, options in conditioning:
        options = dict(options)
        if "area" in options:
            area = crop_area(options["area"], plan)
            if area is None:
                continue
            options["area"] = area
        if isinstance(options.get("mask"), torch.Tensor):
            mask = crop_cond_mask(options["mask"], plan, batch_size=batch_size)
            if not bool((mask > 0).any()):
                continue
            options["mask"] = mask
        if options.get("control") is not None:
            options["control"] = _crop_control(options["control"], plan, batch_size)
        out.append([embedding, options])
    return out


# ----------------------------------------------------------------------------------- sampling


def differential(model):
    """MODEL with ComfyUI's differential-diffusion denoise-mask function, or (model, note) when it
    cannot be applied."""
    if model.model_options.get("denoise_mask_function") is not None:
        return model, "MODEL already has a denoise-mask function (e.g. Differential Diffusion); used as it is"
    try:
        from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion
    except ImportError:
        return model, "differential diffusion is not available in this ComfyUI; the soft mask is used as a plain noise mask"
    import inspect

    forward = DifferentialDiffusion.forward
    if "self" in inspect.signature(forward).parameters:  # the V1 node (before 0.3.64): an instance method
        forward = DifferentialDiffusion().forward
    # ComfyUI 0.3.64 added a strength argument; older versions take (sigma, denoise_mask, extra_options).
    kwargs = {"strength": 1.0} if "strength" in inspect.signature(forward).parameters else {}
    patched = model.clone()
    patched.set_model_denoise_mask_function(
        lambda sigma, denoise_mask, extra_options: forward(sigma, denoise_mask, extra_options, **kwargs))
    return patched, None


def make_sampler(*, model, vae, positive, negative, clip, region_prompts: dict, steps, cfg, sampler_name, scheduler,
                  denoise, batch_size):
    """The ``sample(crop, noise_mask, job)`` callable :func:`refine_regions` runs for each region."""
    import comfy.model_management
    import comfy.sample

    encoded: dict[str, list] = {}

    def positive_for(label: str) -> list:
        text = region_prompts.get(label, region_prompts.get(None))
        if text is None:
            return positive
        if text not in encoded:
            encoded[text] = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        return encoded[text]

    def interrupted(*_args):
        comfy.model_management.throw_exception_if_processing_interrupted()

    def sample(crop: torch.Tensor, noise_mask: torch.Tensor, job) -> torch.Tensor:
        interrupted()
        t0 = time.perf_counter()
        latent = vae.encode(image_from_core(crop)[..., :3])
        job.seconds["encode"] = time.perf_counter() - t0
        latent = latent.repeat(job.variants, *([1] * (latent.ndim - 1)))
        pos = crop_conditioning(positive_for(job.region.label), job.plan, batch_size)
        neg = crop_conditioning(negative, job.plan, batch_size)
        if not pos:
            raise RegionFailed("no positive conditioning covers this region (its areas/masks miss the crop); add a "
                               "conditioning without an area, or use region_prompt")
        if not neg and negative:
            neg = [[e, {k: v for k, v in o.items() if k not in ("area", "mask", "set_area_to_bounds")}]
                   for e, o in negative]
            job.notes.append("the negative's areas/masks miss this crop; it is used without them")
        t0 = time.perf_counter()
        noise = comfy.sample.prepare_noise(latent, job.seed)
        samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, pos, neg, latent,
                                      denoise=denoise, noise_mask=noise_mask, callback=interrupted,
                                      disable_pbar=True, seed=job.seed)
        job.seconds["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = vae.decode(samples)
        job.seconds["decode"] = time.perf_counter() - t0
        decoded = decoded.reshape(-1, *decoded.shape[-3:])
        return image_to_core(decoded)[:, :3]

    return sample
