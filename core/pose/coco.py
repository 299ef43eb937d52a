"""COCO-17 and COCO-WholeBody-133 keypoints in COCO annotation style.

Accepted shapes (pixels, as COCO stores them):

- a COCO file ``{"images": [{id, width, height}], "annotations": [{image_id, keypoints}]}``
  (one frame per image, in ``images`` order);
- a list of annotations (grouped by ``image_id`` when every one has it, else one frame);
- a single annotation ``{"keypoints": [...], "format"?: "coco17" | "wholebody133"}``.

``keypoints`` is flat ``[x, y, c] * K`` with K = 17 (coco17) or 133 (wholebody133, mmpose
results); COCO-WholeBody ground truth instead stores 17 body points plus ``foot_kpts``,
``face_kpts``, ``lefthand_kpts`` and ``righthand_kpts``. Ground-truth ``c`` is a visibility
flag 0/1/2, read as confidence ``v / 2`` (and written back with ``flags=True``). In WholeBody
data a part whose values are all zero is absent.
"""

from __future__ import annotations

import torch

from ..errors import PoseFormatError
from ._parse import canvas_from, json_floats, check_confidences, parse_flat, resolve_canvas, type_name, where
from .formats import WHOLEBODY133_LAYOUT, join_wholebody, split_wholebody
from .keypoints import Part, Person, PoseBatch, PoseFrame

__all__ = ["read_coco", "to_coco_keypoints", "COCO_FORMATS"]

COCO_FORMATS = ("coco17", "wholebody133")
#: COCO-WholeBody ground-truth keys for the parts beyond the 17 body points.
_WB_KEYS = {"feet": "foot_kpts", "face": "face_kpts", "left_hand": "lefthand_kpts", "right_hand": "righthand_kpts"}
_WB_SIZES = {part: {b - a: fmt} for part, fmt, a, b in WHOLEBODY133_LAYOUT}


def _frames_of(data, fn: str) -> list[tuple[tuple[int, int] | None, list]]:
    """Group the input into frames: ``[(canvas or None, [annotation, ...]), ...]``."""
    if isinstance(data, dict) and "annotations" in data:
        anns = data["annotations"]
        if not isinstance(anns, list):
            raise PoseFormatError(f"{fn}: annotations must be a list, got {type_name(anns)}")
        images = data.get("images")
        if images is None:
            return _group_by_image(anns, fn)
        if not isinstance(images, list):
            raise PoseFormatError(f"{fn}: images must be a list of {{id, width, height}}, got {type_name(images)}")
        frames, index = [], {}
        for i, img in enumerate(images):
            if not isinstance(img, dict) or "id" not in img:
                raise PoseFormatError(f"{where(fn, i)} must be an object with id, width, height, got {img!r}")
            index[img["id"]] = i
            frames.append((canvas_from(img, loc=where(fn, i)), []))
        for j, ann in enumerate(anns):
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if image_id not in index:
                raise PoseFormatError(f"{fn}: annotation {j} has image_id {image_id!r}, which is not in images")
            frames[index[image_id]][1].append(ann)
        return frames
    if isinstance(data, dict):
        return [(canvas_from(data, loc=where(fn, 0)), [data])]
    if isinstance(data, list):
        if data and all(isinstance(a, dict) and "image_id" in a for a in data):
            return _group_by_image(data, fn)
        return [(None, data)]
    raise PoseFormatError(f"{fn}: COCO keypoints must be an annotation object, a list of them or a COCO file, got {type_name(data)}")


def _group_by_image(anns: list, fn: str):
    order: dict = {}
    for ann in anns:
        if not isinstance(ann, dict):
            raise PoseFormatError(f"{fn}: every annotation must be an object, got {type_name(ann)}")
        order.setdefault(ann.get("image_id"), []).append(ann)
    return [(None, group) for group in order.values()]


def _parse_annotation(ann, *, loc: str, fmt_hint: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(format, {json key: (K, 3) tensor})`` with confidences not yet checked (they may be flags)."""
    if not isinstance(ann, dict) or "keypoints" not in ann:
        got = "keys " + ", ".join(map(str, ann)) if isinstance(ann, dict) else type_name(ann)
        raise PoseFormatError(f"{loc} must be an object with a 'keypoints' list, got {got}")
    hint = ann.get("format", fmt_hint)
    if hint not in ("auto",) + COCO_FORMATS:
        raise PoseFormatError(f"{loc} has format {hint!r}, expected one of {', '.join(COCO_FORMATS)}")
    separate = any(key in ann for key in _WB_KEYS.values())
    if hint == "coco17" or separate:
        sizes = {17: "coco17"}
    elif hint == "wholebody133":
        sizes = {133: "wholebody133"}
    else:
        sizes = {17: "coco17", 133: "wholebody133"}
    k, fmt = parse_flat(ann["keypoints"], loc=loc, key="keypoints", sizes=sizes, check_conf=False)
    raw = {"keypoints": k}
    for part, key in _WB_KEYS.items():
        if ann.get(key) is not None:
            raw[key], _ = parse_flat(ann[key], loc=loc, key=key, sizes=_WB_SIZES[part], check_conf=False)
    return ("wholebody133" if separate or fmt == "wholebody133" else "coco17"), raw


def _to_person(fmt: str, raw: dict[str, torch.Tensor]) -> Person:
    if fmt == "coco17":
        return Person(body=Part("coco17", raw["keypoints"]))
    if raw["keypoints"].shape[0] == 133:
        tensors = split_wholebody(raw["keypoints"])
    else:
        tensors = {"body": raw["keypoints"], **{p: raw[k] for p, k in _WB_KEYS.items() if k in raw}}
    parts = {}
    for name, k in tensors.items():
        if k.any():  # an all-zero WholeBody part is absent
            parts[name] = Part(next(iter(_WB_SIZES[name].values())), k)
    return Person(**parts)


def read_coco(data, *, format: str = "auto", canvas: tuple[int, int] | None = None, fn: str = "load_pose") -> tuple[PoseBatch, list[str], str]:
    """Read COCO-17 / COCO-WholeBody keypoints (see the module docstring for the shapes).

    Args:
        data: parsed JSON.
        format: ``"auto"``, ``"coco17"`` or ``"wholebody133"``; an annotation's own ``format``
            key wins.
        canvas: ``(width, height)`` for frames whose image size is not in the data.
        fn: function name used in error messages.

    Returns:
        ``(PoseBatch in pixels, notes, detected format)``.
    """
    if format not in ("auto",) + COCO_FORMATS:
        raise PoseFormatError(f"{fn}: COCO format must be one of auto, {', '.join(COCO_FORMATS)}, got {format!r}")
    grouped = _frames_of(data, fn)
    parsed = [
        [_parse_annotation(ann, loc=where(fn, i, j), fmt_hint=format) for j, ann in enumerate(anns)]
        for i, (_, anns) in enumerate(grouped)
    ]
    conf = [t[:, 2] for frame in parsed for _, raw in frame for t in raw.values()]
    conf = torch.cat(conf) if conf else torch.zeros(0)
    flags = bool((conf > 1).any()) and bool(((conf == 0) | (conf == 1) | (conf == 2)).all())
    notes = ["read COCO visibility flags 0/1/2 as confidence v / 2"] if flags else []
    frames = []
    for i, ((found, _), anns) in enumerate(zip(grouped, parsed)):
        w, h = resolve_canvas(found, canvas, loc=where(fn, i))
        people = []
        for j, (fmt, raw) in enumerate(anns):
            for key, k in raw.items():
                if flags:
                    raw[key] = k = torch.cat([k[:, :2], k[:, 2:] / 2], 1)
                c = k[:, 2]
                odd = ((c < 0) | (c > 1)) & (c != 2)  # neither a confidence nor a visibility flag
                if odd.any():
                    n = int(odd.nonzero()[0])
                    raise PoseFormatError(
                        f"{where(fn, i, j)}, {key} keypoint {n} has confidence {float(c[n]):g}, expected a "
                        "confidence in [0, 1] or a COCO visibility flag 0, 1 or 2"
                    )
                check_confidences(
                    k, loc=where(fn, i, j), key=key,
                    hint="; this file mixes COCO visibility flags (2) with fractional confidences, use one kind",
                )
            people.append(_to_person(fmt, raw))
        frames.append(PoseFrame(tuple(people), w, h, "pixels"))
    formats = {fmt for frame in parsed for fmt, _ in frame}
    detected = "wholebody133" if "wholebody133" in formats or format == "wholebody133" else "coco17"
    return PoseBatch(tuple(frames)), notes, detected


def to_coco_keypoints(batch: PoseBatch, *, format: str = "auto", flags: bool = False) -> dict:
    """A COCO file: ``{"images": [...], "annotations": [...]}`` in pixels.

    Args:
        batch: the poses.
        format: ``"coco17"``, ``"wholebody133"`` (flat 133 list, mmpose style) or ``"auto"``
            (wholebody133 for a person with feet, face or hands, else coco17). Other body formats
            are converted by joint name; a face70 face loses its two pupils.
        flags: write ``c`` as COCO visibility flags ``round(2 c)`` instead of confidences.

    Returns:
        COCO-style dict; each annotation carries ``format`` so reading it back needs no hint.
    """
    if format not in ("auto",) + COCO_FORMATS:
        raise PoseFormatError(f"to_coco_keypoints: format must be one of auto, {', '.join(COCO_FORMATS)}, got {format!r}")
    images, annotations = [], []
    for i, frame in enumerate(batch.to_pixels()):
        images.append({"id": i, "width": frame.canvas_width, "height": frame.canvas_height})
        for person in frame.people:
            fmt = format
            if fmt == "auto":
                extra = any(getattr(person, p) is not None for p in ("feet", "face", "left_hand", "right_hand"))
                fmt = "wholebody133" if extra else "coco17"
            body = person.body_as("coco17")
            if fmt == "coco17":
                k = body if body is not None else torch.zeros(17, 3)
            else:
                parts = {name: part.keypoints for name, part in person.parts() if name not in ("body", "face")}
                parts["body"] = body
                if person.face is not None:
                    parts["face"] = person.face.keypoints[:68]
                k = join_wholebody(parts)
            if flags:
                k = torch.cat([k[:, :2], torch.round(k[:, 2:] * 2)], 1)
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": i,
                    "category_id": 1,
                    "format": fmt,
                    "keypoints": json_floats(k),
                    "num_keypoints": int((k[:, 2] > 0).sum()),
                }
            )
    return {"images": images, "annotations": annotations}
