"""MediaPipe Pose (BlazePose) 33 landmarks: reading and writing.

Accepted shapes:

- MediaPipe's own landmarks: a list of 33 ``{"x", "y", "z"?, "visibility", "presence"?}``
  normalised to 0-1 (confidence = ``visibility``, else ``presence``; ``z`` is dropped, the
  type is 2-D); a list of such lists is several people;
- pixel triples ``[[x, y, visibility], ...]`` (33 of them), as in the test data's
  ``detections.json``;
- a frame object holding either under ``pose_landmarks``, ``landmarks`` or ``pose_33``
  (``null`` = nobody), with the canvas as ``size: [w, h]``, ``width``/``height`` or
  ``canvas_width``/``canvas_height``; a list of frame objects; or ``{"images": {name: frame}}``
  (``detections.json``), one frame per image in file order.

Normalised landmarks need a canvas (``canvas=(w, h)``) unless the frame object stores one.
"""

from __future__ import annotations

import torch

from ..errors import PoseFormatError
from ._parse import canvas_from, json_floats, parse_number, check_confidences, parse_rows, resolve_canvas, type_name, where
from .keypoints import Part, Person, PoseBatch, PoseFrame

__all__ = ["read_mediapipe", "to_mediapipe_landmarks", "LANDMARK_KEYS", "is_mediapipe"]

#: Keys of a frame object that may hold the landmarks.
LANDMARK_KEYS = ("pose_landmarks", "landmarks", "pose_33")


def _is_landmark(x) -> bool:
    return isinstance(x, dict) and "x" in x and "y" in x


def _is_person(x) -> bool:
    """A list of landmark dicts or of [x, y, c] triples."""
    return isinstance(x, list) and bool(x) and (_is_landmark(x[0]) or (isinstance(x[0], list) and len(x[0]) == 3 and not isinstance(x[0][0], (list, dict))))


def is_mediapipe(data) -> bool:
    """True when ``data`` has one of the shapes this module reads (used by format detection)."""
    if isinstance(data, dict):
        images = data.get("images")
        if isinstance(images, dict):
            return all(isinstance(v, dict) and any(k in v for k in LANDMARK_KEYS) for v in images.values())
        return any(k in data for k in LANDMARK_KEYS)
    if isinstance(data, list) and data:
        first = data[0]
        return _is_person(data) or _is_person(first) or (isinstance(first, dict) and any(k in first for k in LANDMARK_KEYS))
    return False


def _read_landmarks(rows, *, loc: str, key: str) -> torch.Tensor:
    if len(rows) != 33:
        raise PoseFormatError(f"{loc}, {key} has {len(rows)} landmarks, expected 33 (MediaPipe Pose)")
    out = []
    for i, lm in enumerate(rows):
        if not _is_landmark(lm):
            raise PoseFormatError(f"{loc}, {key} landmark {i} is {lm!r}, expected {{x, y, visibility}}")
        conf_key = "visibility" if "visibility" in lm else "presence" if "presence" in lm else None
        if conf_key is None:
            raise PoseFormatError(f"{loc}, {key} landmark {i} has no visibility (or presence), expected a confidence in [0, 1]")
        out.append([parse_number(lm[c], loc=loc, key=key, item="landmark", index=i, coord=c) for c in ("x", "y", conf_key)])
    k = torch.tensor(out, dtype=torch.float32)
    check_confidences(k, loc=loc, key=key, item="landmark")
    return k


def _read_person(rows, *, loc: str, key: str) -> tuple[torch.Tensor, str]:
    if rows and _is_landmark(rows[0]):
        return _read_landmarks(rows, loc=loc, key=key), "normalized"
    k, _ = parse_rows(rows, loc=loc, key=key, sizes={33: "mediapipe33"}, item="landmark")
    return k, "pixels"


def _frames_of(data, fn: str) -> list[tuple[object, str]]:
    """``[(frame object or landmark list, key name), ...]``."""
    if isinstance(data, dict) and isinstance(data.get("images"), dict):
        return [(v, "pose landmarks") for v in data["images"].values()]
    if isinstance(data, dict) or _is_person(data) or (isinstance(data, list) and data and _is_person(data[0])):
        return [(data, "landmarks")]
    if isinstance(data, list):
        return [(d, "landmarks") for d in data]
    raise PoseFormatError(f"{fn}: MediaPipe landmarks must be a list or an object, got {type_name(data)}")


def read_mediapipe(data, *, canvas: tuple[int, int] | None = None, fn: str = "load_pose") -> tuple[PoseBatch, list[str]]:
    """Read MediaPipe 33-landmark poses (see the module docstring for the shapes).

    Args:
        data: parsed JSON.
        canvas: ``(width, height)`` for frames that store none (needed for normalised
            landmarks); a frame storing a different size is rescaled to it.
        fn: function name used in error messages.

    Returns:
        ``(PoseBatch, notes)``; each frame's space is ``"normalized"`` for landmark dicts and
        ``"pixels"`` for triples.
    """
    frames, notes = [], []
    for i, (obj, key) in enumerate(_frames_of(data, fn)):
        loc = where(fn, i)
        found = None
        if isinstance(obj, dict):
            present = [k for k in LANDMARK_KEYS if k in obj]
            if not present:
                raise PoseFormatError(f"{loc} must hold landmarks under one of {', '.join(LANDMARK_KEYS)}, got keys {', '.join(map(str, obj)) or 'none'}")
            key = present[0]
            found = canvas_from(obj, loc=loc)
            people_obj = obj[key]
        else:
            people_obj = obj
        if people_obj is None or people_obj == []:
            people_rows = []
        elif _is_person(people_obj):
            people_rows = [people_obj]
        elif isinstance(people_obj, list) and all(isinstance(p, list) for p in people_obj):
            people_rows = people_obj
        else:
            raise PoseFormatError(
                f"{loc}, {key} must be 33 landmarks {{x, y, visibility}}, 33 [x, y, c] triples, or a list of "
                f"such lists (one per person), got {type_name(people_obj)}"
            )
        people, spaces = [], set()
        for j, rows in enumerate(people_rows):
            k, space = _read_person(rows, loc=where(fn, i, j), key=key)
            people.append(Person(body=Part("mediapipe33", k)))
            spaces.add(space)
        if len(spaces) > 1:
            raise PoseFormatError(f"{loc} mixes normalised landmark dicts and pixel triples; use one kind per image")
        w, h = resolve_canvas(found, canvas, loc=loc)
        frame = PoseFrame(tuple(people), w, h, spaces.pop() if spaces else "pixels")
        if found is not None and canvas is not None and tuple(canvas) != found:
            frame = frame.resized(*canvas)
            notes.append(f"image {i}: rescaled from the data's {found[0]}×{found[1]} canvas to {canvas[0]}×{canvas[1]}")
        frames.append(frame)
    return PoseBatch(tuple(frames)), notes


def to_mediapipe_landmarks(batch: PoseBatch) -> list[dict]:
    """One frame object per frame: ``{"pose_landmarks": [[33 × {x, y, visibility}] per person],
    "canvas_width": W, "canvas_height": H}``, normalised to 0-1 as MediaPipe reports them.

    Other body formats are converted by joint name (joints they lack are ``0, 0, 0``); people
    without a body are skipped.
    """
    out = []
    for frame in batch.to_normalized():
        people = []
        for person in frame.people:
            k = person.body_as("mediapipe33")
            if k is None:
                continue
            v = json_floats(k)
            people.append([{"x": v[3 * i], "y": v[3 * i + 1], "visibility": v[3 * i + 2]} for i in range(33)])
        out.append({"pose_landmarks": people, "canvas_width": frame.canvas_width, "canvas_height": frame.canvas_height})
    return out
