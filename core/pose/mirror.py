"""Horizontal mirroring of poses: x → W − x and every left/right label swapped.

Mirroring an image turns a person's left side into the mirrored person's right side, so a detector run on
the flipped image labels the joint that was ``left_wrist`` as ``right_wrist``. :func:`mirror_frame` does
both halves of a flip: it moves every point and swaps the labels, so the result is what a detector would
report on the mirrored image.

Labels are swapped per format by joint name (:func:`mirror_permutation`):

- body and feet formats: the tokens ``left`` ↔ ``right`` (``left_eye_inner`` ↔ ``right_eye_inner``,
  ``mouth_left`` ↔ ``mouth_right``); ``nose``, ``neck``, ``mid_hip`` stay;
- face68/face70: the iBUG-68 contours run left to right in the image, so the jaw reverses
  (``jaw_j`` ↔ ``jaw_{16−j}``), the brows and eyes swap sides with their order reversed, the lower nose
  and the lips reverse about their centre, the pupils swap;
- hand21: no sides inside a hand; the person's ``left_hand`` and ``right_hand`` parts swap instead.

Missing points ``(0, 0, 0)`` stay ``(0, 0, 0)`` (the OpenPose convention), so they are not moved to x = W.
Coordinates are continuous (a point at the left edge of pixel 0 is x = 0), the convention of
the trainer's box transform: pixel column ``i`` of the mirrored image shows column ``W − 1 − i``.

Example:
    >>> import torch
    >>> from vitruvian.core.pose import Part, Person, PoseFrame
    >>> body = torch.zeros(17, 3); body[9] = torch.tensor([10.0, 20.0, 1.0])   # coco17 left_wrist
    >>> flipped = mirror_frame(PoseFrame((Person(body=Part("coco17", body)),), 64, 48))
    >>> flipped.people[0].body.keypoints[10].tolist()                             # now the right_wrist
    [54.0, 20.0, 1.0]
"""
from __future__ import annotations

import functools
from dataclasses import replace

import torch

from .formats import get_format
from .keypoints import Part, Person, PoseBatch, PoseFrame

__all__ = ["mirror_permutation", "mirror_frame", "mirror_pose"]

#: iBUG-68 regions: (region, mirrored region, index j → mirrored index). Each contour is numbered left to
#: right in the image (jaw 0-16, brows outer→inner / inner→outer, eyes clockwise from the outer corner).
_FACE_MIRROR = {
    "jaw": ("jaw", lambda j: 16 - j),
    "right_brow": ("left_brow", lambda j: 4 - j),
    "left_brow": ("right_brow", lambda j: 4 - j),
    "nose_bridge": ("nose_bridge", lambda j: j),
    "nose_lower": ("nose_lower", lambda j: 4 - j),
    "right_eye": ("left_eye", lambda j: (3 - j) % 6),
    "left_eye": ("right_eye", lambda j: (3 - j) % 6),
    "outer_lip": ("outer_lip", lambda j: (6 - j) % 12),
    "inner_lip": ("inner_lip", lambda j: (4 - j) % 8),
}
_SIDES = {"left": "right", "right": "left"}


def _swap_sides(name: str) -> str:
    return "_".join(_SIDES.get(token, token) for token in name.split("_"))


def _mirror_name(kind: str, name: str) -> str:
    if kind == "face":
        region, _, j = name.rpartition("_")
        if region in _FACE_MIRROR and j.isdigit():
            other, index = _FACE_MIRROR[region]
            return f"{other}_{index(int(j))}"
    if kind == "hand":
        return name
    return _swap_sides(name)


@functools.cache
def mirror_permutation(format_name: str) -> tuple[int, ...]:
    """Row order of a mirrored part: mirrored row ``i`` is original row ``perm[i]`` (an involution).

    Example:
        >>> perm = mirror_permutation("coco17")
        >>> [get_format("coco17").joints[i] for i in perm[:3]]
        ['nose', 'right_eye', 'left_eye']
    """
    fmt = get_format(format_name)
    index = {joint: i for i, joint in enumerate(fmt.joints)}
    perm = tuple(index[_mirror_name(fmt.kind, joint)] for joint in fmt.joints)
    if sorted(perm) != list(range(len(perm))):  # a table error, never user input
        raise AssertionError(f"mirror_permutation: {format_name} does not mirror onto itself")
    return perm


def _mirror_part(part: Part, width: float) -> Part:
    k = part.keypoints[list(mirror_permutation(part.format))].clone()
    present = k.ne(0).any(dim=1)  # (0, 0, 0) = missing, stays put
    k[:, 0] = torch.where(present, width - k[:, 0], k[:, 0])
    return Part(part.format, k)


def _mirror_person(person: Person, width: float) -> Person:
    parts = {name: _mirror_part(part, width) for name, part in person.parts()}
    parts["left_hand"], parts["right_hand"] = parts.pop("right_hand", None), parts.pop("left_hand", None)
    return Person(**parts)


def mirror_frame(frame: PoseFrame) -> PoseFrame:
    """``frame`` as seen in the horizontally mirrored image (same canvas and coordinate space).

    Args:
        frame: the poses of one image, in pixels (x in [0, canvas_width]) or normalized (x in [0, 1]).

    Returns:
        A new :class:`PoseFrame`: x → W − x (or 1 − x), left/right labels and hands swapped.
    """
    width = float(frame.canvas_width) if frame.space == "pixels" else 1.0
    return replace(frame, people=tuple(_mirror_person(p, width) for p in frame.people))


def mirror_pose(pose: PoseBatch) -> PoseBatch:
    """:func:`mirror_frame` on every frame of a :class:`PoseBatch`."""
    return PoseBatch(tuple(mirror_frame(f) for f in pose))
