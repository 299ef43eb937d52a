"""One entry point for region detection: keypoints and/or an ONNX detector, merged.

This is what the ``VitruvianDetectRegions`` node runs; headless code can call it the same way.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..pose import PoseBatch
from .from_pose import regions_from_pose
from .nms import merge_regions
from .onnx_detect import Detector, check_image
from .types import LABELS, RegionBatch

__all__ = ["detect_regions"]


def detect_regions(image: torch.Tensor, *, pose: PoseBatch | None = None, detector: Detector | None = None,
                   labels: Iterable[str] | None = None, threshold: float = 0.5, iou: float = 0.45,
                   max_per_image: int = 20, keypoint_confidence: float = 0.3) -> tuple[RegionBatch, list[str]]:
    """Regions of every image from ``pose`` (keypoints) and/or ``detector`` (an ONNX model).

    Args:
        image: ``(B, 3, H, W)`` float32 in [0, 1].
        pose: B frames (one per image); a canvas of the image's aspect ratio but another size is
            rescaled to the image (and said so in the notes), another aspect ratio is an error.
        detector: a loaded :class:`~.onnx_detect.Detector`, or None.
        labels: labels to keep (None = all); keypoints give ``face``/``hand``/``person``.
        threshold: minimum region score (detector confidence or mean keypoint confidence).
        iou: NMS overlap, and the overlap above which a detector region and a keypoint region of
            the same label are merged (the higher score stays; see :func:`~.nms.merge_regions`).
        max_per_image: at most this many regions per image, best score first.
        keypoint_confidence: keypoints below it are not used.

    Returns:
        ``(regions, notes)``: a :class:`RegionBatch` of B images and a list of lines worth telling
        the user (rescaled canvases, the provider the detector ran on).
    """
    where = "detect_regions"
    image = check_image(image, where)
    if pose is None and detector is None:
        raise ValueError(f"{where}: nothing to detect with; connect a pose or pick a detector file")
    b, _, h, w = image.shape
    wanted = set(labels) if labels is not None else None
    empty = RegionBatch(tuple(() for _ in range(b)), tuple((h, w) for _ in range(b)))
    notes: list[str] = []
    found = empty
    if pose is not None:
        if not isinstance(pose, PoseBatch):
            raise TypeError(f"{where}: pose must be a PoseBatch (VITRUVIAN_POSE), got {type(pose).__name__}")
        if len(pose) != b:
            raise ValueError(
                f"{where}: pose has {len(pose)} frames but image has {b} images; the batch sizes must match "
                "(one pose frame per image)"
            )
        other = sorted({(f.canvas_width, f.canvas_height) for f in pose} - {(w, h)})
        pose_labels = [label for label in LABELS if wanted is None or label in wanted]
        found = regions_from_pose(pose, [(h, w)] * b, labels=pose_labels, min_confidence=keypoint_confidence)
        found = found.filter(min_score=threshold)
        if other:  # reached only when the aspect ratios matched (regions_from_pose raises otherwise)
            notes.append(f"pose canvas {', '.join(f'{cw}×{ch}' for cw, ch in other)} rescaled to the {w}×{h} image")
    detected = empty
    if detector is not None:
        detected = detector(image, threshold=threshold, iou=iou, max_per_image=max_per_image, labels=wanted)
        notes.append(f"detector {detector.source.removeprefix('onnx:')} on {detector.provider}")
    return merge_regions(found, detected, iou=iou, max_per_image=max_per_image), notes
