"""``load_pose``: one entry point for every keypoint format, saying what it detected.

========================= ============================================================
format                    what it reads (module)
========================= ============================================================
``pose_keypoint``         comfyui_controlnet_aux list of frame dicts, or huchenlei's
                          single dict (:mod:`.openpose`)
``openpose``              OpenPose JSON: ``{"version", "people": [...]}`` (:mod:`.openpose`)
``coco17``                COCO annotations with 17 keypoints (:mod:`.coco`)
``wholebody133``          COCO-WholeBody, flat 133 or ground-truth part keys (:mod:`.coco`)
``mediapipe33``           MediaPipe Pose landmarks (:mod:`.mediapipe`)
========================= ============================================================

Writers: :func:`~.openpose.to_pose_keypoint`, :func:`~.openpose.to_openpose_json`,
:func:`~.coco.to_coco_keypoints`, :func:`~.mediapipe.to_mediapipe_landmarks`; each
reads back to the same :class:`~.keypoints.PoseBatch` (the native format of each losslessly).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import PoseFormatError
from ._parse import type_name
from .coco import read_coco
from .keypoints import SPACES, PoseBatch, check_canvas
from .mediapipe import is_mediapipe, read_mediapipe
from .openpose import read_openpose

__all__ = ["LOAD_FORMATS", "LoadedPose", "load_pose", "detect_format", "parse_json"]

#: Values of ``load_pose(format=...)`` (and of the load node's combo), ``"auto"`` first.
LOAD_FORMATS = ("auto", "openpose", "pose_keypoint", "coco17", "wholebody133", "mediapipe33")

_SHAPES = (
    "a POSE_KEYPOINT list [{people, canvas_width, canvas_height}], an OpenPose JSON object {version, people}, "
    "COCO keypoints ({keypoints: [...]} or {images, annotations}), or MediaPipe landmarks (33 × {x, y, visibility})"
)


@dataclass(frozen=True)
class LoadedPose:
    """What :func:`load_pose` returns.

    Attributes:
        pose: the poses.
        format: the format read (detected, or the one asked for).
        notes: what was inferred on the way (coordinate space, flags, rescaling).
    """

    pose: PoseBatch
    format: str
    notes: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """``"mediapipe33: 1 image, 1 person (body mediapipe33), 512×512, normalized"`` + notes."""
        return "; ".join((f"{self.format}: {self.pose.summary()}",) + self.notes)


def parse_json(text, *, fn: str = "load_pose"):
    """``json.loads`` with an error that names the input and the position."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not text.strip():
        raise PoseFormatError(f"{fn}: json_text is empty, expected keypoint JSON ({_SHAPES})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PoseFormatError(f"{fn}: json_text is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _coco_kind(ann) -> str:
    if isinstance(ann, dict) and ("foot_kpts" in ann or ann.get("format") == "wholebody133"):
        return "wholebody133"
    keypoints = ann.get("keypoints") if isinstance(ann, dict) else None
    return "wholebody133" if isinstance(keypoints, list) and len(keypoints) == 399 else "coco17"


def detect_format(data, *, fn: str = "load_pose") -> str:
    """The :data:`LOAD_FORMATS` name (not ``"auto"``) for parsed JSON ``data``; PoseFormatError
    when it matches none."""
    if not isinstance(data, (list, dict)):
        raise PoseFormatError(f"{fn}: data must be a JSON list or object ({_SHAPES}), got {type_name(data)}")
    first = data[0] if isinstance(data, list) and data else data
    if isinstance(data, list) and not data:
        return "pose_keypoint"
    if isinstance(first, dict):
        if "people" in first:
            return "openpose" if "version" in first else "pose_keypoint"
        if "animals" in first:
            raise PoseFormatError(f"{fn}: the data holds animal poses ('animals', ap10k), which are not supported; expected people")
        if "annotations" in first:
            anns = first["annotations"]
            return _coco_kind(anns[0]) if isinstance(anns, list) and anns else "coco17"
        if "keypoints" in first:
            return _coco_kind(first)
    if is_mediapipe(data):
        return "mediapipe33"
    what = f"an object with keys {', '.join(map(str, first))[:200]}" if isinstance(first, dict) else f"a list of {type_name(first)}"
    raise PoseFormatError(f"{fn}: could not recognise the keypoint data, expected {_SHAPES}; got {what}")


def _check_canvas_arg(canvas, fn: str):
    if canvas is None:
        return None
    if not isinstance(canvas, (tuple, list)) or len(canvas) != 2:
        raise PoseFormatError(f"{fn}: canvas must be None or (width, height), got {canvas!r}")
    check_canvas(canvas[0], canvas[1], where=f"{fn}: canvas")
    return int(canvas[0]), int(canvas[1])


def load_pose(text_or_obj, *, format: str = "auto", canvas: tuple[int, int] | None = None, space: str = "auto") -> LoadedPose:
    """Read keypoints in any supported format into a :class:`PoseBatch`.

    Args:
        text_or_obj: JSON text (str/bytes), a path (``os.PathLike``) to a JSON file, or the
            already-parsed object (e.g. a ``POSE_KEYPOINT`` value).
        format: one of :data:`LOAD_FORMATS`; ``"auto"`` detects it.
        canvas: ``(width, height)`` in pixels for data that stores no image size (OpenPose
            JSON, normalised MediaPipe landmarks, bare COCO annotations). Data that stores a
            different size is rescaled to it.
        space: for OpenPose / POSE_KEYPOINT data, ``"pixels"`` or ``"normalized"`` overrides the
            detection (aux writes both); ``"auto"`` uses a declared space, else detects.

    Returns:
        :class:`LoadedPose` with ``pose``, the ``format`` read and ``notes``.

    Raises:
        PoseFormatError: malformed data; the message names the image, person, part and
            keypoint index.

    Example:
        >>> loaded = load_pose('[{"people": [], "canvas_width": 64, "canvas_height": 48}]')
        >>> loaded.format, len(loaded.pose)
        ('pose_keypoint', 1)
    """
    fn = "load_pose"
    if format not in LOAD_FORMATS:
        raise PoseFormatError(f"{fn}: format must be one of {', '.join(LOAD_FORMATS)}, got {format!r}")
    if space not in ("auto",) + SPACES:
        raise PoseFormatError(f"{fn}: space must be one of auto, {', '.join(SPACES)}, got {space!r}")
    canvas = _check_canvas_arg(canvas, fn)
    if isinstance(text_or_obj, os.PathLike):
        with open(text_or_obj, encoding="utf-8") as f:
            text_or_obj = f.read()
    data = parse_json(text_or_obj, fn=fn) if isinstance(text_or_obj, (str, bytes)) else text_or_obj
    detected = detect_format(data, fn=fn) if format == "auto" else format
    if not isinstance(data, (list, dict)):
        raise PoseFormatError(f"{fn}: data must be a JSON list or object ({_SHAPES}), got {type_name(data)}")
    if space != "auto" and detected not in ("openpose", "pose_keypoint"):
        raise PoseFormatError(f"{fn}: space={space!r} applies to openpose/pose_keypoint data only, got {detected} data")
    if detected in ("openpose", "pose_keypoint"):
        batch, notes = read_openpose(data, canvas=canvas, space=space, fn=fn)
    elif detected in ("coco17", "wholebody133"):
        batch, notes, detected = read_coco(data, format=format, canvas=canvas, fn=fn)
    else:
        batch, notes = read_mediapipe(data, canvas=canvas, fn=fn)
    return LoadedPose(batch, detected, tuple(notes))
