"""Keypoint formats as data: joint names and bone lists, one table per format.

Joints carry *canonical names* shared between formats ("left_shoulder" is the same joint in
COCO-17, COCO-18, BODY-25 and MediaPipe 33), so converting one body format to another is a
lookup by name (:func:`convert_body`); two joints some formats lack are synthesised as the
midpoint of a pair, with the lower of the two confidences: ``neck`` (shoulders) and
``mid_hip`` (hips).

Formats and the person part each belongs to:

=========== ===== === ====================================================================
name        part   K  origin
=========== ===== === ====================================================================
coco18      body   18 OpenPose COCO (what comfyui_controlnet_aux writes): COCO-17 + neck
body25      body   25 OpenPose BODY-25: COCO-18 + mid-hip + 6 foot points
coco17      body   17 MS-COCO person keypoints
mediapipe33 body   33 MediaPipe / BlazePose pose landmarks
feet6       feet    6 COCO-WholeBody feet (big toe, small toe, heel; left then right)
face68      face   68 iBUG 300-W face landmarks (COCO-WholeBody, DWPose)
face70      face   70 OpenPose face: face68 + right pupil + left pupil
hand21      hand   21 OpenPose / MediaPipe hand: wrist + 4 joints per finger
=========== ===== === ====================================================================

Bone tables are the published ones (OpenPose's limb order, the COCO annotation skeleton,
MediaPipe's ``POSE_CONNECTIONS``, the hand's finger chains). feet6 joins its two toes as
BODY-25 does (the ankle links are in :data:`PART_LINKS`). The face has no published bones: its
bones follow the iBUG region contours plus a few links that join the regions into one graph.

COCO-WholeBody-133 is not one part but a concatenation (:data:`WHOLEBODY133_LAYOUT`):
17 body + 6 feet + 68 face + 21 left hand + 21 right hand; :func:`split_wholebody` cuts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PoseFormatError

__all__ = [
    "KeypointFormat",
    "FORMATS",
    "PART_NAMES",
    "PART_KINDS",
    "BODY_FORMATS",
    "WHOLEBODY133_LAYOUT",
    "PART_LINKS",
    "get_format",
    "convert_body",
    "split_wholebody",
    "join_wholebody",
]

#: The parts of a person, in the order they are stored and drawn.
PART_NAMES = ("body", "feet", "face", "left_hand", "right_hand")
#: Which kind of format each part holds (both hands hold a "hand" format).
PART_KINDS = {"body": "body", "feet": "feet", "face": "face", "left_hand": "hand", "right_hand": "hand"}


@dataclass(frozen=True)
class KeypointFormat:
    """One keypoint layout.

    Attributes
    ----------
    name : str
        Table key, e.g. ``"coco18"``.
    kind : str
        ``"body"``, ``"feet"``, ``"face"`` or ``"hand"``: which person part may hold it.
    joints : tuple of str
        Canonical joint names in storage order; ``len(joints)`` is K.
    bones : tuple of (int, int)
        Pairs of joint indices; the bone id is the position in this tuple.
    """

    name: str
    kind: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        """Position of ``joint`` in this format (ValueError if absent)."""
        return self.joints.index(joint)


def _chain(*indices: int) -> tuple[tuple[int, int], ...]:
    return tuple(zip(indices[:-1], indices[1:]))


# ---- body formats -----------------------------------------------------------------------

_COCO18_JOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# OpenPose's COCO limb order (the order its colour table follows).
_COCO18_BONES = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

_BODY25_JOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
_BODY25_BONES = (
    (1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11), (8, 12),
    (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19), (19, 20), (14, 21),
    (11, 22), (22, 23), (11, 24),
)

_COCO17_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
# The COCO annotation file's "skeleton", 0-based.
_COCO17_BONES = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

_MEDIAPIPE33_JOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)
# MediaPipe's POSE_CONNECTIONS.
_MEDIAPIPE33_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)

# ---- feet, face, hands ------------------------------------------------------------------

_FEET6_JOINTS = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
# The toes and heel hang off the ankle (see PART_LINKS); within the part only the toes join.
_FEET6_BONES = ((0, 1), (3, 4))

# iBUG 68 regions: (name, first index, end index, closed contour).
_FACE68_REGIONS = (
    ("jaw", 0, 17, False),
    ("right_brow", 17, 22, False),
    ("left_brow", 22, 27, False),
    ("nose_bridge", 27, 31, False),
    ("nose_lower", 31, 36, False),
    ("right_eye", 36, 42, True),
    ("left_eye", 42, 48, True),
    ("outer_lip", 48, 60, True),
    ("inner_lip", 60, 68, True),
)
_FACE68_JOINTS = tuple(f"{name}_{i - a}" for name, a, b, _ in _FACE68_REGIONS for i in range(a, b))
_FACE68_BONES = tuple(
    bone
    for _, a, b, closed in _FACE68_REGIONS
    for bone in _chain(*range(a, b), *((a,) if closed else ()))
) + (
    # Links between the regions so the face is one connected graph: brows' inner ends and eyes'
    # inner corners to the top of the nose bridge, bridge tip to the lower nose, lower nose to the
    # upper lip, lip corners outer to inner, jaw ends to the brows' outer ends.
    (21, 27), (22, 27), (39, 27), (42, 27), (30, 33), (33, 51), (48, 60), (54, 64), (0, 17), (16, 26),
)
# OpenPose face: 68 = right pupil (inside 36-41), 69 = left pupil (inside 42-47).
_FACE70_JOINTS = _FACE68_JOINTS + ("right_pupil", "left_pupil")
_FACE70_BONES = _FACE68_BONES + ((68, 36), (68, 39), (69, 42), (69, 45))

_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
_HAND21_JOINTS = ("wrist",) + tuple(
    f"{finger}_{joint}"
    for finger in _FINGERS
    for joint in (("cmc", "mcp", "ip", "tip") if finger == "thumb" else ("mcp", "pip", "dip", "tip"))
)
_HAND21_BONES = tuple(bone for f in range(5) for bone in _chain(0, *range(1 + 4 * f, 5 + 4 * f)))

FORMATS: dict[str, KeypointFormat] = {
    f.name: f
    for f in (
        KeypointFormat("coco18", "body", _COCO18_JOINTS, _COCO18_BONES),
        KeypointFormat("body25", "body", _BODY25_JOINTS, _BODY25_BONES),
        KeypointFormat("coco17", "body", _COCO17_JOINTS, _COCO17_BONES),
        KeypointFormat("mediapipe33", "body", _MEDIAPIPE33_JOINTS, _MEDIAPIPE33_BONES),
        KeypointFormat("feet6", "feet", _FEET6_JOINTS, _FEET6_BONES),
        KeypointFormat("face68", "face", _FACE68_JOINTS, _FACE68_BONES),
        KeypointFormat("face70", "face", _FACE70_JOINTS, _FACE70_BONES),
        KeypointFormat("hand21", "hand", _HAND21_JOINTS, _HAND21_BONES),
    )
}
BODY_FORMATS = tuple(name for name, f in FORMATS.items() if f.kind == "body")

#: COCO-WholeBody-133 as (part, format, start, stop) slices of the 133 rows.
WHOLEBODY133_LAYOUT = (
    ("body", "coco17", 0, 17),
    ("feet", "feet6", 17, 23),
    ("face", "face68", 23, 91),
    ("left_hand", "hand21", 91, 112),
    ("right_hand", "hand21", 112, 133),
)

#: Bones between parts, by canonical joint name: (part a, joint a, part b, joint b).
#: A link is made only when both joints exist in the person's formats.
PART_LINKS = (
    ("body", "left_wrist", "left_hand", "wrist"),
    ("body", "right_wrist", "right_hand", "wrist"),
    ("body", "left_ankle", "feet", "left_big_toe"),
    ("body", "left_ankle", "feet", "left_small_toe"),
    ("body", "left_ankle", "feet", "left_heel"),
    ("body", "right_ankle", "feet", "right_big_toe"),
    ("body", "right_ankle", "feet", "right_small_toe"),
    ("body", "right_ankle", "feet", "right_heel"),
    ("body", "nose", "face", "nose_bridge_3"),
)

#: Joints some formats lack, synthesised as the midpoint of two others (confidence = min).
_SYNTHESISED = {"neck": ("left_shoulder", "right_shoulder"), "mid_hip": ("left_hip", "right_hip")}


def get_format(name: str) -> KeypointFormat:
    """The :class:`KeypointFormat` called ``name``; PoseFormatError listing the names otherwise."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise PoseFormatError(
            f"get_format: format must be one of {', '.join(FORMATS)}, got {name!r}"
        ) from None


def convert_body(keypoints: torch.Tensor, src: str, dst: str, *, extra: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Re-order body keypoints from format ``src`` to format ``dst`` by joint name.

    Args:
        keypoints: ``(K_src, 3)`` float32 x, y, confidence in ``src`` order.
        src: a body format name (see :data:`BODY_FORMATS`).
        dst: a body format name.
        extra: more joints by canonical name, each ``(3,)`` (e.g. a person's feet part), used
            when ``src`` lacks a joint ``dst`` needs.

    Returns:
        ``(K_dst, 3)`` float32. ``neck`` and ``mid_hip`` are synthesised from the shoulders /
        hips (midpoint, confidence = min of the two) when the source lacks them; any other
        joint the source lacks is ``(0, 0, 0)``, the OpenPose convention for a missing point.

    Example:
        >>> coco17 = torch.rand(17, 3)
        >>> convert_body(coco17, "coco17", "coco18").shape
        torch.Size([18, 3])
    """
    src_f, dst_f = get_format(src), get_format(dst)
    for f in (src_f, dst_f):
        if f.kind != "body":
            raise PoseFormatError(f"convert_body: {f.name!r} is a {f.kind} format, expected one of {', '.join(BODY_FORMATS)}")
    if keypoints.shape != (src_f.num_keypoints, 3):
        raise PoseFormatError(
            f"convert_body: keypoints must be ({src_f.num_keypoints}, 3) for {src}, got {tuple(keypoints.shape)}"
        )
    table = dict(extra or {})
    table.update(zip(src_f.joints, keypoints))
    out = torch.zeros(dst_f.num_keypoints, 3, dtype=torch.float32)
    for i, joint in enumerate(dst_f.joints):
        if joint in table:
            out[i] = table[joint]
        elif joint in _SYNTHESISED:
            a, b = (table.get(j) for j in _SYNTHESISED[joint])
            if a is not None and b is not None:
                out[i, :2] = (a[:2] + b[:2]) / 2
                out[i, 2] = torch.minimum(a[2], b[2])
    return out


def split_wholebody(keypoints: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut COCO-WholeBody ``(133, 3)`` keypoints into parts.

    Returns:
        ``{"body": (17, 3), "feet": (6, 3), "face": (68, 3), "left_hand": (21, 3),
        "right_hand": (21, 3)}`` (clones, float32).
    """
    if keypoints.shape != (133, 3):
        raise PoseFormatError(f"split_wholebody: keypoints must be (133, 3), got {tuple(keypoints.shape)}")
    return {part: keypoints[a:b].clone().float() for part, _, a, b in WHOLEBODY133_LAYOUT}


def join_wholebody(parts: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """Inverse of :func:`split_wholebody`; a missing part (None or absent) becomes zeros. ``-> (133, 3)``."""
    out = torch.zeros(133, 3, dtype=torch.float32)
    for part, _, a, b in WHOLEBODY133_LAYOUT:
        value = parts.get(part)
        if value is not None:
            if value.shape != (b - a, 3):
                raise PoseFormatError(f"join_wholebody: {part} must be ({b - a}, 3), got {tuple(value.shape)}")
            out[a:b] = value
    return out
