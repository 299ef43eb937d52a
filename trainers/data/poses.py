"""Keypoints in ``metadata.jsonl`` records: the optional ``pose`` field of single-image records.

``pose`` holds the people in the record's image, in any format :func:`vitruvian.core.pose.load_pose`
reads (POSE_KEYPOINT / OpenPose JSON, COCO-17, COCO-WholeBody, MediaPipe landmarks), either

- as a path to a JSON file relative to the dataset folder: ``"pose": "poses/001.json"``, or
- inline: the JSON itself, ``"pose": [{"people": [...], "canvas_width": 512, "canvas_height": 768}]``
  (a JSON object/list, or a string holding one).

It must describe exactly one image with at least one person. Its canvas is mapped onto the image:
normalised data and data that stores no size use the image's size; data stored for another size (a
detector run on a resized copy) is scaled by ``(W / w, H / h)``.

In an item the pose goes through the image's own augmentation (:func:`warp_pose`): scaled with the resize,
shifted by the crop (canvas R × R, pixels; points outside the crop are kept, the renderer clips them),
and on a flip mirrored with every left/right label swapped (:func:`vitruvian.core.pose.mirror_frame`).
Missing points ``(0, 0, 0)`` stay ``(0, 0, 0)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...core.errors import PoseFormatError
from ...core.pose import Part, Person, PoseFrame, load_pose, mirror_frame

__all__ = ["check_pose_field", "read_record_pose", "warp_pose"]


def check_pose_field(root: Path, value: Any, size: tuple[int, int] | None,
                     problems: list[str]) -> tuple[str | None, str | None]:
    """Validate a record's ``pose`` value; returns ``(file path, inline JSON text)`` (one of them set, or neither).

    ``size`` is the image's (W, H), or None when the image itself is bad (then only the file is checked).
    Problems are appended as ``"pose: ..."`` strings.
    """
    if value is None:
        return None, None
    path = text = None
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    elif isinstance(value, str) and value.strip()[:1] in ("{", "["):
        text = value
    elif isinstance(value, str) and value.strip():
        p = root / value
        if not p.is_file():
            problems.append(f"pose: file not found {value!r}")
            return None, None
        path = str(p)
    else:
        problems.append(f"pose must be a path to a keypoint JSON file relative to the folder, or inline keypoint "
                        f"JSON (an object or list), got {value!r}")
        return None, None
    if size is not None:
        try:
            read_record_pose(Path(path).read_bytes() if path else text, size)
        except (PoseFormatError, UnicodeDecodeError) as e:
            problems.append(f"pose: {e}")
            return None, None
    return path, text


def read_record_pose(data: bytes | str, size: tuple[int, int]) -> PoseFrame:
    """The one frame of a ``pose`` value on the image's ``size`` (W, H) canvas, in pixels.

    Raises:
        PoseFormatError: unreadable keypoints, not exactly one image, or nobody in it.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    batch = load_pose(text, canvas=tuple(size)).pose
    if len(batch) != 1:
        raise PoseFormatError(f"must hold the poses of exactly one image, got {len(batch)} images")
    frame = batch[0]
    if not frame.people:
        raise PoseFormatError("must hold at least one person, got none (pose-adapter training needs a skeleton "
                              "in every image); fix: drop the record or its pose field")
    return frame.resized(*size).to_pixels()


def _moved(part: Part, sx: float, sy: float, dx: float, dy: float) -> Part:
    k = part.keypoints.clone()
    present = k.ne(0).any(dim=1)  # (0, 0, 0) = missing, stays put
    k[:, 0] = torch.where(present, k[:, 0] * sx - dx, k[:, 0])
    k[:, 1] = torch.where(present, k[:, 1] * sy - dy, k[:, 1])
    return Part(part.format, k)


def warp_pose(frame: PoseFrame, g: Any) -> PoseFrame:
    """A frame on the source image (canvas ``g.size``, pixels) → the same people on the R × R training crop.

    ``g`` is the image's :class:`~.items.Geometry` (size, resized, crop, flip, resolution).
    """
    frame = frame.resized(*g.size).to_pixels()
    sx, sy = g.resized[0] / g.size[0], g.resized[1] / g.size[1]
    dx, dy = g.crop
    people = tuple(Person(**{name: _moved(part, sx, sy, dx, dy) for name, part in person.parts()})
                   for person in frame.people)
    out = PoseFrame(people, g.resolution, g.resolution, "pixels")
    return mirror_frame(out) if g.flip else out
