"""OpenPose JSON and comfyui_controlnet_aux ``POSE_KEYPOINT``: reading and writing.

Both share the OpenPose person layout: flat ``[x, y, c] * K`` lists under
``pose_keypoints_2d`` (18 = coco18, 25 = body25), ``face_keypoints_2d`` (70 or 68),
``hand_left_keypoints_2d`` and ``hand_right_keypoints_2d`` (21). A missing part is ``null``
(aux) or ``[]`` (OpenPose); a missing point is ``0, 0, 0``.

- ``POSE_KEYPOINT``: a list with one dict per image, ``{"people": [...], "canvas_width": W,
  "canvas_height": H}``; huchenlei's editor passes a single such dict. aux writes pixels for
  DWPose and 0-1 fractions for its OpenPose estimator, always with confidences binarised to 1.
- OpenPose JSON: one dict per image with ``"version"`` and ``people``; no canvas.

Lossless round trips: the OpenPose fields can hold only coco18/body25 bodies and no separate
feet, so the writers add a ``"vitruvian"`` entry to a person whose parts those fields cannot
express (e.g. a MediaPipe 33 body, COCO-WholeBody feet) holding the original parts, and one to
each frame declaring its coordinate space. Other tools ignore unknown keys. The reader uses a
person's entry only while the standard fields still equal what the entry implies, so an edit
made in another editor wins over the stale original (and is reported).
"""

from __future__ import annotations

import math

import torch

from ..errors import PoseFormatError
from ._parse import canvas_from, json_floats, parse_flat, resolve_canvas, type_name, where
from .formats import FORMATS, PART_KINDS, get_format
from .keypoints import SPACES, Part, Person, PoseBatch, PoseFrame, Space

__all__ = ["read_openpose", "to_pose_keypoint", "to_openpose_json", "PERSON_KEYS", "EXTENSION_KEY"]

#: Person part → OpenPose JSON key.
PERSON_KEYS = {
    "body": "pose_keypoints_2d",
    "face": "face_keypoints_2d",
    "left_hand": "hand_left_keypoints_2d",
    "right_hand": "hand_right_keypoints_2d",
}
_SIZES = {"body": {18: "coco18", 25: "body25"}, "face": {70: "face70", 68: "face68"}, "left_hand": {21: "hand21"}, "right_hand": {21: "hand21"}}
EXTENSION_KEY = "vitruvian"
#: Largest |coordinate| of a confident point that still reads as 0-1 normalised data.
NORMALIZED_LIMIT = 3.0


def _standard_person(person: Person, body_format: str) -> Person:
    """What the OpenPose fields of ``person`` read back as (no extension)."""
    body = person.body_as(body_format)
    return Person(
        body=None if body is None else Part(body_format, body),
        face=person.face,
        left_hand=person.left_hand,
        right_hand=person.right_hand,
    )


def _read_extension(ext, *, loc: str) -> dict[str, Part]:
    if not isinstance(ext, dict):
        raise PoseFormatError(f"{loc}, {EXTENSION_KEY} must be an object of parts, got {type_name(ext)}")
    parts = {}
    for name, entry in ext.items():
        key = f"{EXTENSION_KEY}.{name}"
        if name not in PART_KINDS or not isinstance(entry, dict):
            raise PoseFormatError(f"{loc}, {key} must be a part ({', '.join(PART_KINDS)}) holding {{format, keypoints}}")
        fmt = entry.get("format")
        if fmt not in FORMATS:
            raise PoseFormatError(f"{loc}, {key} has format {fmt!r}, expected one of {', '.join(FORMATS)}")
        f = get_format(fmt)
        if f.kind != PART_KINDS[name]:
            raise PoseFormatError(f"{loc}, {key} has format {fmt!r}, expected a {PART_KINDS[name]} format")
        k, _ = parse_flat(entry.get("keypoints"), loc=loc, key=key, sizes={f.num_keypoints: fmt})
        parts[name] = Part(fmt, k)
    return parts


def _read_person(obj, *, loc: str, notes: list[str]) -> Person:
    if not isinstance(obj, dict):
        raise PoseFormatError(f"{loc} must be an object with {', '.join(PERSON_KEYS.values())}, got {type_name(obj)}")
    parts = {}
    for name, key in PERSON_KEYS.items():
        values = obj.get(key)
        if values is None or (isinstance(values, list) and len(values) == 0):
            continue
        k, fmt = parse_flat(values, loc=loc, key=key, sizes=_SIZES[name])
        parts[name] = Part(fmt, k)
    person = Person(**parts)
    if EXTENSION_KEY not in obj:
        return person
    ext = _read_extension(obj[EXTENSION_KEY], loc=loc)
    candidate = Person(**{**parts, **ext})
    written = person.body.format if person.body is not None else "coco18"
    if _standard_person(candidate, written).equal(person):
        return candidate
    notes.append(f"{loc}: its '{EXTENSION_KEY}' entry no longer matches pose_keypoints_2d (edited elsewhere?); used the standard fields")
    return person


def _detect_space(people: list[Person]) -> Space:
    points = [part.keypoints for p in people for _, part in p.parts()]
    if not points:
        return "pixels"
    k = torch.cat(points)
    k = k[k[:, 2] > 0]
    if len(k) == 0:
        return "pixels"
    return "normalized" if float(k[:, :2].abs().max()) <= NORMALIZED_LIMIT else "pixels"


def read_openpose(data, *, canvas: tuple[int, int] | None = None, space: str = "auto", fn: str = "load_pose") -> tuple[PoseBatch, list[str]]:
    """Read a ``POSE_KEYPOINT`` list, a single OpenPose-style dict, or a list of OpenPose JSON dicts.

    Args:
        data: parsed JSON (list of frame dicts, or one frame dict).
        canvas: ``(width, height)`` for frames that store none; a frame that stores a different
            size is rescaled to it.
        space: ``"auto"`` (a frame's declared ``vitruvian.space``, else normalised when every
            confident coordinate is within ±3), ``"pixels"`` or ``"normalized"``.
        fn: function name used in error messages.

    Returns:
        ``(PoseBatch, notes)``; notes describe detections and rescaling.
    """
    if space not in ("auto",) + SPACES:
        raise PoseFormatError(f"{fn}: space must be one of auto, {', '.join(SPACES)}, got {space!r}")
    frames_obj = data if isinstance(data, list) else [data]
    frames, notes = [], []
    for i, fobj in enumerate(frames_obj):
        loc = where(fn, i)
        if not isinstance(fobj, dict) or not isinstance(fobj.get("people"), list):
            if isinstance(fobj, dict) and "animals" in fobj:
                raise PoseFormatError(f"{loc} holds animal poses ('animals', ap10k), which are not supported; expected 'people'")
            got = f"an object without a 'people' list (keys: {', '.join(map(str, fobj)) or 'none'})" if isinstance(fobj, dict) else type_name(fobj)
            raise PoseFormatError(f"{loc} must be an object with a 'people' list, got {got}")
        found = canvas_from(fobj, loc=loc)
        w, h = resolve_canvas(found, canvas, loc=loc)
        people = [_read_person(p, loc=where(fn, i, j), notes=notes) for j, p in enumerate(fobj["people"])]
        declared = fobj.get(EXTENSION_KEY, {}).get("space") if isinstance(fobj.get(EXTENSION_KEY), dict) else None
        if space != "auto":
            frame_space = space
        elif declared in SPACES:
            frame_space = declared
        else:
            frame_space = _detect_space(people)
            if frame_space == "normalized":
                notes.append(f"image {i}: coordinates read as normalized 0-1 (all within ±{NORMALIZED_LIMIT:g}); pass space='pixels' to override")
        frame = PoseFrame(tuple(people), w, h, frame_space)
        if found is not None and canvas is not None and tuple(canvas) != found:
            frame = frame.resized(*canvas)
            notes.append(f"image {i}: rescaled from the data's {found[0]}×{found[1]} canvas to {canvas[0]}×{canvas[1]}")
        frames.append(frame)
    return PoseBatch(tuple(frames)), notes


def _person_dict(person: Person, *, body_format: str, missing, binarize: float | None) -> dict:
    standard = _standard_person(person, body_format)
    out = {}
    for name, key in PERSON_KEYS.items():
        part = getattr(standard, name)
        if part is None:
            out[key] = missing
            continue
        k = part.keypoints
        if binarize is not None:
            keep = k[:, 2:] >= binarize
            k = torch.where(keep, torch.cat([k[:, :2], torch.ones_like(k[:, 2:])], 1), torch.zeros_like(k))
        out[key] = json_floats(k)
    if binarize is None and not standard.equal(person):
        ext = {}
        for name in ("body", "feet"):
            part = getattr(person, name)
            if part is not None and not (name == "body" and part.format == body_format):
                ext[name] = {"format": part.format, "keypoints": json_floats(part.keypoints)}
        out[EXTENSION_KEY] = ext
    return out


def _check_space(space, fn):
    if space not in SPACES:
        raise PoseFormatError(f"{fn}: space must be one of {', '.join(SPACES)}, got {space!r}")


def to_pose_keypoint(batch: PoseBatch, *, space: Space = "pixels", binarize: float | None = None) -> list[dict]:
    """comfyui_controlnet_aux ``POSE_KEYPOINT``: one dict per frame, bodies as coco18.

    Args:
        batch: the poses.
        space: coordinates to write, ``"pixels"`` (as DWPose) or ``"normalized"``.
        binarize: ``None`` keeps real confidences (lossless, with ``vitruvian`` entries where
            needed). A threshold t writes aux's convention instead: confidence >= t → 1.0,
            else the point becomes ``0, 0, 0`` (aux's own drawer skips points below 1.0).

    Returns:
        ``[{"people": [...], "canvas_width": W, "canvas_height": H, "vitruvian": {"space": ...}}, ...]``.
    """
    _check_space(space, "to_pose_keypoint")
    if binarize is not None and not (isinstance(binarize, (int, float)) and 0 <= binarize <= 1 and not math.isnan(binarize)):
        raise PoseFormatError(f"to_pose_keypoint: binarize must be None or a threshold in [0, 1], got {binarize!r}")
    out = []
    for frame in batch.to_space(space):
        people = [_person_dict(p, body_format="coco18", missing=None, binarize=binarize) for p in frame.people]
        out.append(
            {
                "people": people,
                "canvas_width": frame.canvas_width,
                "canvas_height": frame.canvas_height,
                EXTENSION_KEY: {"space": frame.space},
            }
        )
    return out


def to_openpose_json(batch: PoseBatch, *, body_format: str = "auto", space: Space = "pixels") -> list[dict]:
    """OpenPose JSON, one dict per frame (what OpenPose writes per image, plus the canvas).

    Args:
        batch: the poses.
        body_format: ``"coco18"``, ``"body25"``, or ``"auto"`` (body25 for a body25 body or a
            person with feet, else coco18).
        space: ``"pixels"`` (OpenPose's default) or ``"normalized"``.

    Returns:
        ``[{"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": [...], ...}],
        "canvas_width": W, "canvas_height": H, "vitruvian": {"space": ...}}, ...]``.
    """
    _check_space(space, "to_openpose_json")
    if body_format not in ("auto", "coco18", "body25"):
        raise PoseFormatError(f"to_openpose_json: body_format must be one of auto, coco18, body25, got {body_format!r}")
    out = []
    for frame in batch.to_space(space):
        people = []
        for person in frame.people:
            fmt = body_format
            if fmt == "auto":
                body25 = person.feet is not None or (person.body is not None and person.body.format == "body25")
                fmt = "body25" if body25 else "coco18"
            d = {"person_id": [-1], **_person_dict(person, body_format=fmt, missing=[], binarize=None)}
            d.update({k.replace("_2d", "_3d"): [] for k in PERSON_KEYS.values()})
            people.append(d)
        out.append(
            {
                "version": 1.3,
                "people": people,
                "canvas_width": frame.canvas_width,
                "canvas_height": frame.canvas_height,
                EXTENSION_KEY: {"space": frame.space},
            }
        )
    return out
