"""Regional refinement: crop each region with context, re-diffuse it, paste it back seamlessly.

Modules: :mod:`.crop` (crop geometry and resizing), :mod:`.paste` (feathered shape-mask paste that
leaves every other pixel bit-identical), :mod:`.seam` (colour / gradient discontinuity along the
paste boundary), :mod:`.plan` (settings, per-region decisions with reasons, the report),
:mod:`.refine` (the driver, with the sampler injected as a callable), :mod:`.from_mask` (regions
from a mask's connected components) and :mod:`.crops` (the crop set of the split form).

Never imports ComfyUI; kornia is imported inside the functions that use it.
"""

from .crop import MIN_SIDE, MULTIPLE, CropPlan, crop_image, plan_crop, region_scale, resize_back, square_size
from .crops import CropSet, make_crops, paste_crops, refined_problem
from .from_mask import MASK_LABEL, regions_from_mask
from .paste import noise_mask, paste, paste_mask, shape_mask
from .plan import PICKS, STATUSES, RefineReport, RefineSettings, RegionReport, decide
from .refine import RefineResult, RegionFailed, RegionJob, apply_variants, check_inputs, pick_scores, refine_regions
from .seam import SEAM_KEYS, seam_metric

__all__ = [
    "MULTIPLE", "MIN_SIDE", "CropPlan", "plan_crop", "region_scale", "crop_image", "resize_back", "square_size",
    "CropSet", "make_crops", "paste_crops", "refined_problem", "MASK_LABEL", "regions_from_mask",
    "shape_mask", "paste_mask", "noise_mask", "paste",
    "SEAM_KEYS", "seam_metric",
    "PICKS", "STATUSES", "RefineSettings", "RegionReport", "RefineReport", "decide",
    "RegionJob", "RegionFailed", "RefineResult", "refine_regions", "check_inputs", "pick_scores", "apply_variants",
]
