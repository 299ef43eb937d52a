"""The split form: crop every region into one batch, sample it with any sampler, paste it back.

:func:`make_crops` cuts all regions of all images to the **same square size** (``square=True``
geometry, :mod:`.crop`), so they stack into one IMAGE batch a user's own KSampler (with
SetLatentNoiseMask) can take; the noise masks stack the same way. The :class:`CropSet` carries
the geometry, the paste masks and the skip reasons to :func:`paste_crops`, which pastes each
refined crop with its feathered shape mask (pixels outside the masks stay bit-identical) and
fills in the report, seam metric included.

All crops are cut from the original image, so where two regions' masks overlap the later region
(batch order) wins; the one-node form refines them in turn instead.

Refined crops must come back at the size they were cut (``S × S``): a size change on the way (an
upscaler, a VAE that crops to its own multiple) would otherwise be pasted stretched without a word.
``paste_crops(..., resize=True)`` takes any size of the crops' aspect ratio and resizes it back.

Shape:
    - image: ``(B, 3, H, W)``; crops: ``(N, 3, S, S)``; noise masks: ``(N, 1, S, S)``
    - refined: ``(N, 3, S, S)`` (with ``resize=True``: ``(N, 3, S', S')`` of the same aspect ratio)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch

from ..regions import RegionBatch
from .crop import CropPlan, crop_image, square_size
from .paste import noise_mask, paste_mask
from .plan import RefineReport, RefineSettings, RegionReport, decide
from .refine import RefineResult, apply_variants, check_inputs

__all__ = ["CropSet", "make_crops", "paste_crops", "refined_problem"]

ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class CropSet:
    """The geometry between :func:`make_crops` and :func:`paste_crops` (the ``VITRUVIAN_CROPS`` value).

    Attributes:
        regions: the regions the crops were made from.
        plans: one :class:`CropPlan` per crop, in crop-batch order.
        masks: the paste mask of each crop, ``(1, 1, rh, rw)`` over its rectangle.
        report: every region's entry; the cropped ones are completed by :func:`paste_crops`.
        settings: the settings used.
        image_shape: ``(B, H, W)`` of the images cropped.
        size: ``(S, S)`` of every crop.
    """

    regions: RegionBatch
    plans: tuple[CropPlan, ...]
    masks: tuple[torch.Tensor, ...]
    report: RefineReport
    settings: RefineSettings
    image_shape: tuple[int, int, int]
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.plans)

    def summary(self) -> str:
        n = len(self.plans)
        skipped = [r for r in self.report.regions if r.status == "skipped"]
        lines = [f"{n} crop{'s' * (n != 1)} of {self.size[1]}×{self.size[0]} from {self.image_shape[0]} image(s); "
                 f"{len(skipped)} region(s) skipped"]
        lines += [f"image {r.image} {r.label} #{r.region}: skipped ({r.reason})" for r in skipped]
        return "\n".join(lines)


def make_crops(image: torch.Tensor, batch: RegionBatch, settings: RefineSettings) -> tuple[torch.Tensor, torch.Tensor, CropSet]:
    """Crop every region that :func:`~.plan.decide` keeps, at one square size.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1].
        batch: the regions of those images.
        settings: with ``square=True`` (set here if not).

    Returns:
        ``(crops (N, 3, S, S), noise_masks (N, 1, S, S), CropSet)``; N may be 0.

    Example:
        >>> from vitruvian.core.regions import Region
        >>> batch = RegionBatch(((Region("face", (8, 8, 24, 24), 1.0), Region("hand", (30, 30, 48, 50), 1.0)),), ((64, 64),))
        >>> crops, masks, cropset = make_crops(torch.rand(1, 3, 64, 64), batch, RefineSettings(target_size=64, max_size=128))
        >>> crops.shape, masks.shape, len(cropset)
        (torch.Size([2, 3, 128, 128]), torch.Size([2, 1, 128, 128]), 2)
    """
    check_inputs(image, batch, "make_crops")
    if not isinstance(settings, RefineSettings):
        raise TypeError(f"make_crops: settings must be a RefineSettings, got {type(settings).__name__}")
    settings = replace(settings, square=True)
    b, _, h, w = image.shape
    image = image.detach().float()
    report = RefineReport(images=int(b), settings=settings.to_dict())
    plans, masks, crops, nmasks = [], [], [], []
    for g, (k, i, region) in enumerate(batch.flat()):
        entry = RegionReport(image=k, region=i, index=g, label=region.label, box=[round(v, 2) for v in region.box])
        report.regions.append(entry)
        t0 = time.perf_counter()
        plan, reason, notes = decide(region, (h, w), settings, image_index=k, region_index=i)
        entry.notes += notes
        if plan is None:
            entry.status, entry.reason = "skipped", reason
            continue
        entry.crop, entry.variants = plan.to_dict(), 1
        entry.status, entry.reason = "failed", "cropped, not pasted yet"
        pmask = paste_mask(region, plan, dilation=settings.mask_dilation, feather=settings.mask_feather)
        plans.append(plan)
        masks.append(pmask)
        crops.append(crop_image(image, plan))
        nmasks.append(noise_mask(pmask, plan))
        entry.seconds["crop"] = round(time.perf_counter() - t0, 4)
    size = square_size(settings)
    crops_t = torch.cat(crops) if crops else torch.zeros(0, 3, *size)
    nmasks_t = torch.cat(nmasks) if nmasks else torch.zeros(0, 1, *size)
    cropset = CropSet(batch, tuple(plans), tuple(masks), report, settings, (int(b), int(h), int(w)), tuple(size))
    return crops_t, nmasks_t, cropset


def refined_problem(refined, cropset: CropSet, *, resize: bool = False) -> str:
    """Why ``refined`` cannot be pasted back with ``cropset``, or ``""`` (nothing was cropped: always fine).

    Example:
        >>> from vitruvian.core.regions import Region
        >>> batch = RegionBatch(((Region("face", (8, 8, 24, 24), 1.0),),), ((64, 64),))
        >>> crops, _, cropset = make_crops(torch.rand(1, 3, 64, 64), batch, RefineSettings(target_size=64, max_size=128))
        >>> refined_problem(crops, cropset), refined_problem(crops[:, :, :64, :64], cropset)[:47]
        ('', 'refined crops must be 128×128 pixels, the size ')
    """
    n = len(cropset)
    if n == 0:
        return ""
    if not isinstance(refined, torch.Tensor) or refined.ndim != 4 or refined.shape[1] != 3:
        got = tuple(refined.shape) if isinstance(refined, torch.Tensor) else type(refined).__name__
        return f"refined crops must be (N, 3, h, w), got {got}"
    if refined.shape[0] != n:
        return (f"refined crops must be the {n} crops of Crop Regions, in order, got {refined.shape[0]} images; sample "
                "the crop batch with batch size 1 per crop (no repeats, no extra images)")
    (sh, sw), (rh, rw) = cropset.size, tuple(refined.shape[-2:])
    if resize and abs((rw / rh) / (sw / sh) - 1) > ASPECT_TOLERANCE:
        return (f"refined crops must keep the crops' aspect ratio ({sw}×{sh}), got {rw}×{rh}; resize them back (or "
                "scale both sides by the same factor)")
    if not resize and (rh, rw) != (sh, sw):
        return (f"refined crops must be {sw}×{sh} pixels, the size Crop Regions cut, got {rw}×{rh}; scale them back "
                f"to {sw}×{sh} (e.g. Upscale Image) before pasting, or choose target_size / max_size so the crops "
                "survive the sampler and VAE unchanged")
    return ""


def paste_crops(image: torch.Tensor, refined: torch.Tensor, cropset: CropSet, *, resize: bool = False) -> RefineResult:
    """Paste refined crops back into the images they were cut from.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1], the same images given to :func:`make_crops`.
        refined: ``(N, 3, S, S)`` in [0, 1], one per crop, in order, at the crops' size
            (:func:`refined_problem` says what is wrong otherwise).
        cropset: from :func:`make_crops`.
        resize: take refined crops of any size of the crops' aspect ratio, resized back.

    Returns:
        :class:`~.refine.RefineResult` (image, regions with seam scores, paste masks, report).

    Example:
        >>> from vitruvian.core.regions import Region
        >>> batch = RegionBatch(((Region("face", (8, 8, 24, 24), 1.0),),), ((64, 64),))
        >>> image = torch.full((1, 3, 64, 64), 0.5)
        >>> crops, masks, cropset = make_crops(image, batch, RefineSettings(target_size=64, max_size=128))
        >>> out = paste_crops(image, (crops + 0.3 * masks).clamp(0, 1), cropset)
        >>> out.report.counts(), float(out.image[0, 0, 60, 60])
        ({'refined': 1, 'skipped': 0, 'failed': 0}, 0.5)
    """
    where = "paste_crops"
    if not isinstance(cropset, CropSet):
        raise TypeError(f"{where}: crops geometry must be a CropSet (VITRUVIAN_CROPS from Crop Regions), got "
                        f"{type(cropset).__name__}")
    check_inputs(image, cropset.regions, where)
    if tuple(image.shape[:1]) + tuple(image.shape[2:]) != cropset.image_shape:
        b, h, w = cropset.image_shape
        raise ValueError(f"{where}: image must be the {b} image(s) of {w}×{h} that were cropped, got "
                         f"{tuple(image.shape)}")
    n = len(cropset)
    report = copy.deepcopy(cropset.report)
    current = image.detach().float().clone()
    masks = torch.zeros(image.shape[0], 1, *image.shape[-2:])
    regions = [list(per_image) for per_image in cropset.regions.regions]
    if n == 0:
        report.notes.append("no region was cropped; the images are unchanged")
        return RefineResult(current, cropset.regions, masks, report)
    problem = refined_problem(refined, cropset, resize=resize)
    if problem:
        raise ValueError(f"{where}: {problem}")
    if not torch.isfinite(refined).all():
        bad = sorted({int(k) for k in torch.nonzero(~torch.isfinite(refined.flatten(1)).all(dim=1)).flatten().tolist()})
    else:
        bad = []
    entries = [r for r in report.regions if r.crop is not None]
    for k, (plan, pmask, entry) in enumerate(zip(cropset.plans, cropset.masks, entries)):
        if k in bad:
            entry.status, entry.reason = "failed", "the refined crop has NaN/inf pixels; the original pixels are kept"
            continue
        entry.reason = ""
        b, i = plan.image_index, plan.region_index
        nmask = noise_mask(pmask, plan)
        regions[b][i] = apply_variants(current, masks, entry, regions[b][i], plan, pmask, nmask,
                                       refined[k : k + 1].to(current.device))
    for entry in report.regions:
        entry.seconds = {key: round(v, 4) for key, v in entry.seconds.items()}
    out_batch = RegionBatch(tuple(tuple(r) for r in regions), cropset.regions.image_sizes,
                            searched=cropset.regions.searched)
    return RefineResult(current, out_batch, masks, report)
