"""Regional refinement nodes: re-diffuse faces, hands (any region) of a whole batch and paste them
back without seams; or, split, crop → any sampler → paste.

Thin adapters over :mod:`vitruvian.core.refine`: this module only does ComfyUI's part of a region,
encode the crop with the graph's VAE, sample it with ComfyUI's own ``comfy.sample.sample`` and a
``noise_mask`` (the region's soft shape), decode it, and cut the conditioning to the crop. Choices,
documented once:

- Differential diffusion (on by default) clones MODEL and sets ComfyUI's own
  ``DifferentialDiffusion`` denoise-mask function, so the soft mask edge is denoised less than the
  centre; a MODEL that already has a denoise-mask function is used as it is.
- Variants of a region are one sampler batch with one seed (``seed + global region index``); ComfyUI
  draws the batch's noise from it, so variant 0 starts from the noise a single variant would get.
- Conditioning masks, areas and ControlNet hints are cut to each crop
  (:mod:`vitruvian.core.refine.conditioning`); a region no positive conditioning covers fails with
  that reason instead of being sampled unconditioned.
- Refined regions keep only scores that describe their new pixels (``seam_colour``,
  ``seam_gradient``, ``pick_<name>``); re-score them to gate a second pass.
- ``labels`` or a ``score_name`` the regions cannot carry are errors; Paste Regions refuses refined crops of
  another size than Crop Regions cut (never stretched silently).

The sampling glue (conditioning cut to a crop, differential diffusion, the sampler) is in :mod:`._refine_sampling`.
"""

from __future__ import annotations

import torch

from ..core.checks import check_regions
from ..core.errors import ConfigError
from ..core.refine import (
    MASK_LABEL,
    PICKS,
    CropSet,
    RefineSettings,
    make_crops,
    paste_crops,
    refine_regions,
    refined_problem,
    regions_from_mask,
)
from ..core.refine.plan import parse_region_prompts
from ..core.regions import LABEL, SCORE, RegionBatch, absent_warning
from ._checks import NodeInputError, check_names, register_type
from ._comfy import REGIONS, VitruvianNode, category, io, ui
from ._convert import image_from_core, image_to_core, mask_from_core, mask_to_core
from ._refine_sampling import crop_conditioning, differential, make_sampler

__all__ = ["NODES", "CROPS", "crop_conditioning"]

#: The split form's geometry (:class:`vitruvian.core.refine.CropSet`).
CROPS = io.Custom("VITRUVIAN_CROPS")
register_type(CROPS.io_type, lambda value: isinstance(value, CropSet), "VITRUVIAN_CROPS from Crop Regions (Vitruvian)")
DEFAULT_LABELS = "face,hand"
MAX_SEED = 0xFFFFFFFFFFFFFFFF
#: The longest region_prompt: ~2,000 CLIP tokens. A 1 MB text is 125,000 tokens, 1,700 text-encoder passes and a
#: cross-attention context to match for every region: a queue that seems to hang, never a better prompt.
MAX_REGION_PROMPT = 10_000


def _samplers() -> tuple[list[str], list[str]]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


# ----------------------------------------------------------------------------------- inputs


def _region_inputs() -> list:
    return [
        REGIONS.Input("regions", optional=True, tooltip="Regions to refine (Detect Regions). Or connect a mask."),
        io.Mask.Input("mask", optional=True,
                      tooltip="Instead of regions: each blob of this mask (image-sized) is one region."),
    ]


def _geometry_inputs() -> list:
    return [
        io.String.Input("labels", default=DEFAULT_LABELS,
                        tooltip="Comma list of region labels to refine (empty = all); ignored for a mask. A label the "
                        "regions cannot carry is an error; one no image has is a warning."),
        io.Float.Input("context_factor", default=2.5, min=1.0, max=100.0, step=0.1,
                       tooltip="Context around each region, × its box. Too tight a crop shifts colours."),
        io.Int.Input("target_size", default=512, min=64, max=8192, step=8,
                     tooltip="The region's longer side is sampled at this many pixels. A region already larger "
                     "is skipped (too large), never shrunk."),
        io.Int.Input("max_size", default=1024, min=64, max=8192, step=8,
                     tooltip="Largest crop side; the context is cut to fit."),
        io.Int.Input("min_size", default=16, min=1, max=8192,
                     tooltip="Regions whose shorter side is below this many pixels are skipped (too small)."),
        io.Int.Input("mask_dilation", default=4, min=-512, max=512,
                     tooltip="Grow (> 0) or shrink (< 0) the region's shape before pasting, pixels."),
        io.Int.Input("mask_feather", default=8, min=0, max=512, tooltip="Blur radius of the paste edge, pixels."),
        io.String.Input("score_name", default="",
                        tooltip="Refine only regions whose score of this name (from Score Regions) is below "
                        "refine_if_score_below; empty = refine all. A name the regions do not carry is an error."),
        io.Float.Input("refine_if_score_below", default=0.0, min=-1e9, max=1e9, step=0.01),
    ]


def _checked_names(where: str, batch: RegionBatch, from_mask: bool, labels, score_name) -> list[str]:
    """NodeInputError for labels / a score name the regions cannot carry; warnings for labels no image has."""
    if from_mask:
        return []
    wanted = check_names(where, "labels", batch, labels)
    names = check_names(where, "score_name", batch, score_name, SCORE)
    if names is not None and len(names) > 1:
        raise NodeInputError(where, "score_name", f"one score name is expected (or empty for no gate), got "
                             f"{score_name[:80]!r}")
    warning = absent_warning(batch, wanted, LABEL)
    return [f"{warning}: nothing to refine there"] if warning else []


def _settings(labels, context_factor, target_size, max_size, min_size, mask_dilation, mask_feather, score_name,
              refine_if_score_below, variants=1, pick="first", square=False) -> RefineSettings:
    return RefineSettings(labels=labels, context_factor=context_factor, target_size=target_size,
                          max_size=max_size, min_size=min_size, mask_dilation=mask_dilation,
                          mask_feather=mask_feather, score_name=score_name or "", score_below=refine_if_score_below,
                          variants=variants, pick=pick, square=square)


def _check_sizes(target_size, max_size) -> bool | str:
    """validate_inputs: the cross-field rule core enforces (max_size ≥ target_size), with core's message,
    before anything runs. (Inputs named in validate_inputs skip ComfyUI's min/max check; RefineSettings
    checks those ranges too.)"""
    if target_size is None or max_size is None:  # linked from another node: checked when it runs
        return True
    try:
        RefineSettings(target_size=target_size, max_size=max_size)
    except ConfigError as e:
        return str(e)
    return True


def _regions_for(where: str, image: torch.Tensor, regions, mask) -> tuple[RegionBatch, bool]:
    """``(RegionBatch, from_mask)`` from exactly one of the regions / mask inputs, checked against ``image``."""
    b, h, w = (int(v) for v in image.shape[:3])
    if regions is not None and mask is not None:
        raise ValueError(f"{where}: connect regions or mask, not both")
    if regions is None and mask is None:
        raise ValueError(f"{where}: nothing to refine; connect regions (Detect Regions) or a mask")
    if regions is not None:
        return check_regions(regions, image_to_core(image), where), False
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{where}: mask must be a ComfyUI MASK (B, H, W), got {got}")
    core = mask_to_core(mask)
    if tuple(core.shape[-2:]) != (h, w):
        raise ValueError(f"{where}: mask must have the image's size {w}×{h}, got {core.shape[-1]}×{core.shape[-2]}; "
                         "make the mask from this image (or scale it to the image first)")
    if core.shape[0] not in (1, b):
        raise ValueError(f"{where}: mask must hold 1 mask or one per image ({b}), got {core.shape[0]}")
    return regions_from_mask(core.expand(b, -1, -1, -1)), True


def _rgb(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI IMAGE → core ``(B, 3, H, W)`` plus the alpha channel (kept aside) if any."""
    core = image_to_core(image)
    if core.shape[1] == 1:
        return core.expand(-1, 3, -1, -1), None
    return core[:, :3], (core[:, 3:] if core.shape[1] == 4 else None)


def _output_image(image: torch.Tensor, rgb: torch.Tensor, alpha: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """The refined IMAGE: ``rgb`` (+ the alpha kept aside) where ``mask`` ``(B, 1, H, W)`` > 0 and the
    input IMAGE's own values everywhere else (so even values outside [0, 1] pass through untouched)."""
    out = image_from_core(rgb if alpha is None else torch.cat([rgb, alpha], dim=1))
    original = image.to(out.dtype).expand(*out.shape)  # a 1-channel IMAGE comes back as 3 channels
    return torch.where(mask_from_core(mask)[..., None] > 0, out, original).contiguous()


# ----------------------------------------------------------------------------------- nodes


class VitruvianRefineRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        samplers, schedulers = _samplers()
        return io.Schema(
            node_id="VitruvianRefineRegions",
            display_name="Refine Regions (Vitruvian)",
            category=category("refine"),
            description="Re-diffuse every face / hand (any region) of every image: crop with context, sample with a "
            "soft shape mask (differential diffusion), paste back with a feathered mask; pixels outside the mask "
            "stay bit-identical. Variants per region with pick-best; a report says what was refined, skipped "
            "(and why) or failed, with a seam metric before/after.",
            inputs=[
                io.Image.Input("image"),
                *_region_inputs(),
                io.Model.Input("model"),
                io.Vae.Input("vae"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Clip.Input("clip", optional=True, tooltip="Needed only for region_prompt."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Region g of the batch (all images, in order) uses seed + g."),
                io.Int.Input("steps", default=20, min=1, max=10000),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=samplers, default="euler" if "euler" in samplers else samplers[0]),
                io.Combo.Input("scheduler", options=schedulers, default="normal" if "normal" in schedulers else schedulers[0]),
                io.Float.Input("denoise", default=0.45, min=0.0, max=1.0, step=0.01),
                *_geometry_inputs(),
                io.Boolean.Input("differential_diffusion", default=True,
                                 tooltip="Soft mask edges are denoised less than the centre (ComfyUI's Differential "
                                 "Diffusion applied to a copy of MODEL)."),
                io.Int.Input("variants", default=1, min=1, max=64, tooltip="Samples per region; the best is kept."),
                io.Combo.Input("pick", options=list(PICKS), default="sharpness",
                               tooltip="Best variant: sharpest inside the region, least visible seam, or the first."),
                io.String.Input("region_prompt", multiline=True, default="",
                                tooltip="Optional prompt for the regions instead of positive (needs clip). Lines "
                                "'face: …' / 'hand: …' set one label's prompt; other lines are for all other labels. "
                                f"At most {MAX_REGION_PROMPT} characters."),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                REGIONS.Output(display_name="regions"),
                io.String.Output(display_name="report"),
                io.Mask.Output(display_name="mask", tooltip="Where pixels changed: the paste masks (0 = untouched)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, target_size=None, max_size=None):
        return _check_sizes(target_size, max_size)

    @classmethod
    def execute(cls, image, model, vae, positive, negative, seed, steps, cfg, sampler_name, scheduler, denoise,
                labels, context_factor, target_size, max_size, min_size, mask_dilation, mask_feather, score_name,
                refine_if_score_below, differential_diffusion, variants, pick, region_prompt, regions=None,
                mask=None, clip=None) -> io.NodeOutput:
        import comfy.utils

        where = "VitruvianRefineRegions"
        if len(region_prompt) > MAX_REGION_PROMPT:
            raise NodeInputError(where, "region_prompt", f"a prompt of at most {MAX_REGION_PROMPT} characters is "
                                 f"expected, got {len(region_prompt)}; CLIP reads 75 tokens at a time, so keep the "
                                 "lines 'face: …' / 'hand: …' short")
        batch, from_mask = _regions_for(where, image, regions, mask)
        warnings = _checked_names(where, batch, from_mask, labels, score_name)
        settings = _settings(None if from_mask else labels, context_factor, target_size, max_size, min_size,
                             mask_dilation, mask_feather, score_name, refine_if_score_below, variants, pick)
        rgb, alpha = _rgb(image)
        notes = list(warnings)
        if from_mask:
            notes.append(f"regions from the mask: {batch.count()} blob(s), labelled {MASK_LABEL!r}")
        if differential_diffusion:
            model, note = differential(model)
            if note:
                notes.append(note)
        region_prompts = parse_region_prompts(region_prompt, {r.label for _, _, r in batch.flat()})
        if region_prompts and clip is None:
            raise ValueError(f"{where}: region_prompt needs a CLIP to encode it; connect the checkpoint's CLIP "
                             "(or clear region_prompt to use positive)")
        sampler = make_sampler(model=model, vae=vae, positive=positive, negative=negative, clip=clip,
                                region_prompts=region_prompts, steps=steps, cfg=cfg, sampler_name=sampler_name,
                                scheduler=scheduler, denoise=denoise, batch_size=int(image.shape[0]))
        pbar = comfy.utils.ProgressBar(max(batch.count(), 1))
        result = refine_regions(rgb, batch, settings, sampler, seed=seed, on_region=lambda entry: pbar.update(1))
        result.report.notes[:0] = notes
        report = result.report.to_json()
        return io.NodeOutput(_output_image(image, result.image, alpha, result.mask), result.regions, report,
                             mask_from_core(result.mask),
                             ui=ui.PreviewText(result.report.summary()))


class VitruvianCropRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianCropRegions",
            display_name="Crop Regions (Vitruvian)",
            category=category("refine"),
            description="Split form, step 1: every region of every image cropped with context to one square size "
            "(min(target_size × context_factor, max_size)), as one IMAGE batch, with the soft noise masks (for "
            "SetLatentNoiseMask) and the geometry for Paste Regions. Sample the batch with any sampler (apply "
            "Differential Diffusion to the model for soft edges).",
            inputs=[io.Image.Input("image"), *_region_inputs(), *_geometry_inputs()],
            outputs=[
                io.Image.Output(display_name="crops"),
                io.Mask.Output(display_name="noise_mask"),
                CROPS.Output(display_name="crop_geometry"),
            ],
        )

    @classmethod
    def validate_inputs(cls, target_size=None, max_size=None):
        return _check_sizes(target_size, max_size)

    @classmethod
    def execute(cls, image, labels, context_factor, target_size, max_size, min_size, mask_dilation, mask_feather,
                score_name, refine_if_score_below, regions=None, mask=None) -> io.NodeOutput:
        where = "VitruvianCropRegions"
        batch, from_mask = _regions_for(where, image, regions, mask)
        warnings = _checked_names(where, batch, from_mask, labels, score_name)
        settings = _settings(None if from_mask else labels, context_factor, target_size, max_size, min_size,
                             mask_dilation, mask_feather, score_name, refine_if_score_below, square=True)
        rgb, _ = _rgb(image)
        crops, noise_masks, cropset = make_crops(rgb, batch, settings)
        text = "\n".join([cropset.summary(), *warnings])
        if len(cropset) == 0:
            # A KSampler cannot take an empty batch: one blank crop with an empty mask; Paste Regions ignores it.
            crops, noise_masks = torch.zeros(1, 3, *cropset.size), torch.zeros(1, 1, *cropset.size)
            text += "\nwarning: no region to refine: one blank placeholder crop is output (Paste Regions ignores it)"
        return io.NodeOutput(image_from_core(crops), mask_from_core(noise_masks), cropset, ui=ui.PreviewText(text))


class VitruvianPasteRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianPasteRegions",
            display_name="Paste Regions (Vitruvian)",
            category=category("refine"),
            description="Split form, step 2: paste the refined crops back into the original images with feathered "
            "shape masks (pixels outside stay bit-identical), with a report and a seam metric per region.",
            inputs=[
                io.Image.Input("image", tooltip="The images given to Crop Regions."),
                io.Image.Input("refined_crops", tooltip="The crops after sampling (VAE Decode), same order and the "
                               "size Crop Regions cut (another size is an error, never stretched silently)."),
                CROPS.Input("crop_geometry"),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                REGIONS.Output(display_name="regions"),
                io.String.Output(display_name="report"),
                io.Mask.Output(display_name="mask", tooltip="Where pixels changed: the paste masks (0 = untouched)."),
            ],
        )

    @classmethod
    def execute(cls, image, refined_crops, crop_geometry) -> io.NodeOutput:
        rgb, alpha = _rgb(image)
        refined, _ = _rgb(refined_crops)
        problem = refined_problem(refined, crop_geometry)
        if problem:
            raise NodeInputError("VitruvianPasteRegions", "refined_crops", problem)
        result = paste_crops(rgb, refined, crop_geometry)
        return io.NodeOutput(_output_image(image, result.image, alpha, result.mask), result.regions,
                             result.report.to_json(),
                             mask_from_core(result.mask), ui=ui.PreviewText(result.report.summary()))


NODES = [VitruvianRefineRegions, VitruvianCropRegions, VitruvianPasteRegions]
