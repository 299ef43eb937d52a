"""One entry point for region detection: keypoints and/or an ONNX detector, merged.

This is what the ``VitruvianDetectRegions`` node runs; headless code can call it the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import torch

from ..checks import check_image
from ..pose import PoseBatch
from .from_pose import regions_from_pose
from .names import parse_names
from .nms import merge_regions
from .onnx_detect import Detector
from .types import LABELS, RegionBatch

__all__ = ["detect_regions", "labels_problem"]


def labels_problem(labels: str | Iterable[str] | None, *, pose: bool, detector: Detector | None) -> tuple[str, list[str]]:
    """``(problem, notes)`` for the ``labels`` asked of the sources at hand (keypoints when ``pose``,
    ``detector``'s class names when its metadata lists them).

    A label no source here makes gives nothing by construction: one of the pack's own labels (face, hand,
    person: the default asks for all three, and a face-only detector makes one) is a note; any other
    label (a typo, a class the detector does not have) is the problem. With a detector that does not
    list its classes any label may come from it.

    >>> labels_problem("face,hand", pose=False, detector=None)[1]
    ['labels face, hand: no source here makes them (connect a pose, or pick a detector)']
    >>> labels_problem("fcae", pose=True, detector=None)[0][:86]
    'a label that the pose or the detector makes is expected, got fcae; the pose makes face'
    """
    wanted = parse_names(labels)
    if wanted is None:
        return "", []
    if detector is not None and detector.known_labels is None:  # no class names: anything may come from it
        return "", []
    makes = (set(LABELS) if pose else set()) | set(detector.known_labels if detector is not None else ())
    missing = [label for label in wanted if label not in makes]
    odd = [label for label in missing if label not in LABELS]
    sources = ", ".join(([f"the pose makes {', '.join(LABELS)}"] if pose else [])
                        + ([f"the detector makes {', '.join(detector.known_labels)}"] if detector is not None else []))
    if odd:
        shown = ", ".join(label if len(label) <= 40 else label[:40] + "…" for label in odd[:6])
        return (f"a label that the pose or the detector makes is expected, got {shown}; "
                f"{sources or 'no pose or detector is connected'}. Check the spelling, or leave labels empty to "
                "keep every label", [])
    notes = [f"labels {', '.join(missing)}: no source here makes them"
             + (f" ({sources})" if sources else " (connect a pose, or pick a detector)")] if missing else []
    return "", notes


def detect_regions(image: torch.Tensor, *, pose: PoseBatch | None = None, detector: Detector | None = None,
                   labels: Iterable[str] | None = None, threshold: float = 0.5, iou: float = 0.45,
                   max_per_image: int = 20, keypoint_confidence: float = 0.3) -> tuple[RegionBatch, list[str]]:
    """Regions of every image from ``pose`` (keypoints) and/or ``detector`` (an ONNX model).

    Args:
        image: ``(B, 3, H, W)`` float32 in [0, 1].
        pose: B frames (one per image); a canvas of the image's aspect ratio but another size is
            rescaled to the image (and said so in the notes), another aspect ratio is an error.
        detector: a loaded :class:`~.onnx_detect.Detector`, or None.
        labels: labels to keep (a list or a comma list; None = all); keypoints give
            ``face``/``hand``/``person``; see :func:`labels_problem` for labels no source makes.
        threshold: minimum region score (detector confidence or mean keypoint confidence).
        iou: NMS overlap, and the overlap above which a detector region and a keypoint region of
            the same label are merged (the higher score stays; see :func:`~.nms.merge_regions`).
        max_per_image: at most this many regions per image, best score first.
        keypoint_confidence: keypoints below it are not used.

    Returns:
        ``(regions, notes)``: a :class:`RegionBatch` of B images (``searched`` = the labels looked
        for) and a list of lines worth telling the user (rescaled canvases, labels no source makes, the
        provider the detector ran on).
    """
    where = "detect_regions"
    image = check_image(image, where).float()
    if pose is None and detector is None:
        raise ValueError(f"{where}: nothing to detect with; connect a pose or pick a detector file")
    b, _, h, w = image.shape
    problem, label_notes = labels_problem(labels, pose=pose is not None, detector=detector)
    if problem:
        raise ValueError(f"{where}: labels: {problem}")
    wanted = set(parse_names(labels) or ()) or None
    empty = RegionBatch(tuple(() for _ in range(b)), tuple((h, w) for _ in range(b)))
    found, notes = empty, []
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
    # What was looked for, so that later nodes tell "not found" from "never looked for".
    searched = [label for label in LABELS if pose is not None and (wanted is None or label in wanted)]
    if detector is not None:
        names = detector.known_labels if detector.known_labels is not None else wanted
        if names is None:  # a detector without class names, every label kept: nothing to record
            searched = []
        else:
            searched += [label for label in names if wanted is None or label in wanted]
    merged = merge_regions(found, detected, iou=iou, max_per_image=max_per_image)
    return replace(merged, searched=tuple(searched)), notes + label_notes
