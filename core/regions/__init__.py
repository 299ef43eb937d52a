"""Face, hand and person regions: the data type, detectors (from keypoints, from ONNX models)
and conversions (masks, Impact Pack SEGS).

Modules: :mod:`.types` (``Region``, ``RegionBatch``, ``region_mask``), :mod:`.detect` (the one
entry point: keypoints and/or a detector, merged), :mod:`.from_pose`
(regions from keypoints), :mod:`.onnx_detect` (YOLOv8-style ONNX detectors), :mod:`.nms`,
:mod:`.shapes` (hull and ellipse masks), :mod:`.masks` (grow / feather), :mod:`.segs` (Impact SEGS),
:mod:`.names` (labels and score names asked of a batch: unknown → error, absent → warning).

Nothing heavy at import: onnxruntime and kornia are imported inside the functions that use them.
"""

from .detect import detect_regions
from .from_pose import regions_from_person, regions_from_pose
from .masks import feather_mask, grow_mask
from .names import LABEL, SCORE, absent_images, absent_warning, known_names, parse_names, unknown_problem
from .nms import batched_nms, box_iou, merge_regions, nms
from .onnx_detect import Detector, labels_from_filename, letterbox, load_detector
from .segs import SEG, crop_region, regions_to_segs, segs_to_regions
from .types import COMBINE, HANDEDNESS, LABELS, Region, RegionBatch, pixel_box, region_mask

__all__ = [
    "LABELS", "HANDEDNESS", "COMBINE", "Region", "RegionBatch", "region_mask", "pixel_box",
    "detect_regions", "regions_from_pose", "regions_from_person",
    "Detector", "load_detector", "letterbox", "labels_from_filename",
    "nms", "batched_nms", "box_iou", "merge_regions",
    "grow_mask", "feather_mask",
    "SEG", "crop_region", "regions_to_segs", "segs_to_regions",
    "LABEL", "SCORE", "parse_names", "known_names", "unknown_problem", "absent_images", "absent_warning",
]
