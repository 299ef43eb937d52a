"""Refine every region of every image: crop → sample (a callable) → pick the best variant → paste.

The sampler is injected: :func:`refine_regions` knows nothing of ComfyUI, so the whole pipeline
runs in tests with a plain function as the "sampler", and the node passes one that encodes with
the graph's VAE, samples with ComfyUI and decodes.

Per region (``RegionBatch.flat()`` order, global index ``g``):

1. :func:`~.plan.decide`: skip with a reason, or a :class:`~.crop.CropPlan`;
2. crop the **current** image (regions refined earlier in the same image are already pasted, so
   overlapping regions compose), build the paste mask and the sampler's noise mask;
3. ``sample(crop, noise_mask, job)`` with ``job.seed = (seed + g) mod 2**64``, so a batch gives
   the same pixels on every run; it returns ``job.variants`` candidates;
4. pick one (:data:`~.plan.PICKS` or a callable), resize it back, paste it, measure the seam.

Shape:
    - image: ``(B, 3, H, W)`` float in [0, 1]
    - sample: ``crop (1, 3, h, w), noise_mask (1, 1, h, w), job -> (V, 3, h', w')`` in [0, 1]
    - pick callable: ``variants (V, 3, h, w), noise_mask (1, 1, h, w) -> (V,)``, higher is better
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..checks import check_image, check_regions
from ..errors import VitruvianError
from ..regions import Region, RegionBatch
from .crop import CropPlan, crop_image, resize_back
from .paste import noise_mask, paste, paste_mask
from .plan import RefineReport, RefineSettings, RegionReport, decide
from .seam import seam_metric

__all__ = ["RegionJob", "RegionFailed", "RefineResult", "refine_regions", "check_inputs", "pick_scores", "apply_variants"]

SEED_MODULO = 2**64


class RegionFailed(VitruvianError):
    """Raised by a sampler to mark one region ``failed`` (with this message as the reason) while the
    other regions go on."""


@dataclass
class RegionJob:
    """What the sampler is told about the region it samples.

    ``seconds`` is for the sampler to add its own phases (e.g. ``encode``, ``sample``, ``decode``);
    ``notes`` lands in the region's report.
    """

    image_index: int
    region_index: int
    index: int
    region: Region
    plan: CropPlan
    seed: int
    variants: int
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class RefineResult:
    """``image`` ``(B, 3, H, W)``; ``regions`` with the refinement scores; ``mask`` ``(B, 1, H, W)``
    the union of the paste masks actually used (0 = pixel untouched); ``report``."""

    image: torch.Tensor
    regions: RegionBatch
    mask: torch.Tensor
    report: RefineReport


def check_inputs(image: torch.Tensor, batch: RegionBatch, where: str = "refine_regions") -> None:
    """TypeError / ValueError unless ``image`` is ``(B, 3, H, W)`` float, finite, and ``batch`` describes it
    (``core.checks``)."""
    check_regions(batch, check_image(image, where, channels=(3,)), where)


def pick_scores(how: str, variants: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Score variants for picking, higher is better: ``"sharpness"`` (Laplacian variance inside the
    noise mask, :func:`vitruvian.core.scoring.laplacian_variance`) or ``"first"`` (None). ``"seam"``
    needs the paste, so :func:`refine_regions` scores it itself.

    Example:
        >>> flat, noisy = torch.full((1, 3, 16, 16), 0.5), torch.rand(1, 3, 16, 16)
        >>> pick_scores("sharpness", torch.cat([flat, noisy]), torch.ones(1, 1, 16, 16)).argmax().item()
        1
    """
    if how == "first":
        return None
    if how == "sharpness":
        from kornia.color import rgb_to_grayscale

        from ..scoring.sharpness import laplacian_variance

        weight = torch.nn.functional.interpolate(mask.float(), size=variants.shape[-2:], mode="bilinear", align_corners=False)
        return laplacian_variance(rgb_to_grayscale(variants.float()), weight.expand(len(variants), -1, -1, -1))
    raise ValueError(f"pick_scores: how must be 'sharpness' or 'first', got {how!r}")


def _seam(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor, plan: CropPlan) -> dict[str, float | None]:
    """Seam metric over the rectangle (inside the image), before and after."""
    ix0, iy0, ix1, iy1 = plan.inside
    rx0, ry0, _, _ = plan.rect
    m = mask[:, :, iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0]
    both = torch.cat([before[:, :, iy0:iy1, ix0:ix1], after[:, :, iy0:iy1, ix0:ix1]])
    values = seam_metric(both, m.expand(2, -1, -1, -1))
    out = {}
    for key, v in values.items():
        for name, x in zip(("before", "after"), v.tolist()):
            out[f"{key}_{name}"] = None if x != x else round(x, 6)
    return out


def _seam_cost(seam: dict) -> float:
    c, g = seam.get("colour_after"), seam.get("gradient_after")
    return (c or 0.0) + max(g or 0.0, 0.0)


def apply_variants(current: torch.Tensor, masks: torch.Tensor, entry: RegionReport, region: Region, plan: CropPlan,
                   pmask: torch.Tensor, nmask: torch.Tensor, variants: torch.Tensor, *, pick=None,
                   pick_name: str = "first") -> Region:
    """Pick one of ``variants`` ``(V, 3, h, w)``, paste it into ``current`` ``(B, 3, H, W)`` (in place),
    add its paste mask to ``masks`` ``(B, 1, H, W)``, fill ``entry`` (status, chosen, seam, seconds)
    and return the region with the scores that describe its new pixels (older scores are dropped)."""
    b = plan.image_index
    variants = variants.float().clamp(0, 1)
    t0 = time.perf_counter()
    before = current[b : b + 1].clone()
    if pick is not None:
        scores = pick(variants, nmask)
    elif pick_name == "seam" and len(variants) > 1:
        seams = [_seam(before, paste(before, resize_back(v[None], plan), pmask, plan), pmask, plan) for v in variants]
        scores = torch.tensor([-_seam_cost(s) for s in seams])
    else:
        scores = pick_scores("first" if pick_name == "seam" else pick_name, variants, nmask)
    chosen = 0
    if scores is not None and len(variants) > 1:
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
        valid = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -float("inf")))
        chosen = int(valid.argmax())
        entry.variant_scores = [None if v != v else round(float(v), 6) for v in scores.tolist()]
    entry.chosen, entry.pick = chosen, pick_name
    entry.seconds["pick"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    after = paste(before, resize_back(variants[chosen : chosen + 1], plan), pmask, plan)
    current[b : b + 1] = after
    ix0, iy0, ix1, iy1 = plan.inside
    rx0, ry0, _, _ = plan.rect
    placed = pmask[0, :, iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0]
    masks[b, :, iy0:iy1, ix0:ix1] = torch.maximum(masks[b, :, iy0:iy1, ix0:ix1], placed)
    entry.seconds["paste"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    entry.seam = _seam(before, after, pmask, plan)
    entry.seconds["seam"] = time.perf_counter() - t0
    entry.status = "refined"
    # Scores measured on the old pixels no longer hold: keep only what describes the new ones.
    new_scores = {"seam_colour": entry.seam.get("colour_after"), "seam_gradient": entry.seam.get("gradient_after")}
    if entry.variant_scores:
        new_scores[f"pick_{pick_name}"] = entry.variant_scores[chosen]
    return replace(region, scores={k: v for k, v in new_scores.items() if v is not None})


def refine_regions(image: torch.Tensor, batch: RegionBatch, settings: RefineSettings,
                   sample: Callable[[torch.Tensor, torch.Tensor, RegionJob], torch.Tensor], *, seed: int = 0,
                   pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   on_region: Callable[[RegionReport], None] | None = None) -> RefineResult:
    """Refine the regions of a batch (see the module docstring).

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1].
        batch: the regions of those B images.
        settings: :class:`~.plan.RefineSettings`.
        sample: the sampler (module docstring); raise :class:`RegionFailed` to fail one region.
        seed: base seed; region ``g`` of the batch uses ``seed + g``.
        pick: a callable scoring variants (higher is better), overriding ``settings.pick``.
        on_region: called with each region's report as soon as it is done (progress).

    Returns:
        :class:`RefineResult`. Pixels outside ``result.mask`` equal the input bit for bit.

    Example:
        >>> batch = RegionBatch(((Region("face", (8, 8, 24, 24), 1.0),),), ((64, 64),))
        >>> brighter = lambda crop, mask, job: (crop + 0.2 * mask).clamp(0, 1)
        >>> out = refine_regions(torch.full((1, 3, 64, 64), 0.5), batch, RefineSettings(target_size=64, max_size=128), brighter)
        >>> out.report.counts()["refined"], float(out.image[0, 0, 16, 16]) > 0.6, float(out.image[0, 0, 40, 40])
        (1, True, 0.5)
    """
    check_inputs(image, batch)
    if not isinstance(settings, RefineSettings):
        raise TypeError(f"refine_regions: settings must be a RefineSettings, got {type(settings).__name__}")
    current = image.detach().float().clone()
    masks = torch.zeros(image.shape[0], 1, *image.shape[-2:])
    report = RefineReport(images=int(image.shape[0]), settings=settings.to_dict())
    pick_name = "custom" if pick is not None else settings.pick
    regions = [list(per_image) for per_image in batch.regions]
    h, w = image.shape[-2:]

    for g, (b, i, region) in enumerate(batch.flat()):
        entry = RegionReport(image=b, region=i, index=g, label=region.label, box=[round(v, 2) for v in region.box])
        report.regions.append(entry)
        t0 = time.perf_counter()
        plan, reason, notes = decide(region, (h, w), settings, image_index=b, region_index=i)
        entry.notes += notes
        if plan is None:
            entry.status, entry.reason = "skipped", reason
            if on_region is not None:
                on_region(entry)
            continue
        entry.seed, entry.crop, entry.variants = (seed + g) % SEED_MODULO, plan.to_dict(), settings.variants
        pmask = paste_mask(region, plan, dilation=settings.mask_dilation, feather=settings.mask_feather)
        crop = crop_image(current, plan)
        nmask = noise_mask(pmask, plan)
        entry.seconds["crop"] = time.perf_counter() - t0
        job = RegionJob(b, i, g, region, plan, entry.seed, settings.variants)
        t0 = time.perf_counter()
        try:
            variants = sample(crop, nmask, job)
            if not isinstance(variants, torch.Tensor) or variants.ndim != 4 or variants.shape[0] < 1 \
                    or variants.shape[1] != crop.shape[1]:
                got = tuple(variants.shape) if isinstance(variants, torch.Tensor) else type(variants).__name__
                raise RegionFailed(f"the sampler returned {got}, expected (V, {crop.shape[1]}, h, w) crops")
            if not torch.isfinite(variants).all():
                raise RegionFailed("the sampler returned NaN/inf pixels (a VAE or model precision problem; "
                                   "try --fp32-vae or another VAE); the original pixels are kept")
        except RegionFailed as failure:
            entry.status, entry.reason = "failed", str(failure)
            variants = None
        finally:
            entry.seconds.update(job.seconds)
            entry.seconds["sampler"] = time.perf_counter() - t0
            entry.notes += job.notes
        if variants is not None:
            regions[b][i] = apply_variants(current, masks, entry, region, plan, pmask, nmask, variants,
                                           pick=pick, pick_name=pick_name)
        if on_region is not None:
            on_region(entry)

    for entry in report.regions:
        entry.seconds = {k: round(v, 4) for k, v in entry.seconds.items()}
    # Old scores were dropped from refined regions (apply_variants), so only the search is carried over.
    out_batch = RegionBatch(tuple(tuple(r) for r in regions), batch.image_sizes, searched=batch.searched)
    return RefineResult(current, out_batch, masks, report)
