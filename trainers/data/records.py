"""``metadata.jsonl`` records: the schema, and ``validate_jsonl`` which checks the whole file at once.

A dataset folder holds ``metadata.jsonl``, one JSON object per line (blank lines are skipped), and the
files it names, by paths relative to the folder. Every record in one file is of the same kind.

Pair records (DPO family)::

    {"prompt": "a woman waving", "chosen": "w/001.png", "rejected": "l/001.png",
     "chosen_source": "generated",                       # or "real" / "reconstructed"; default "generated"
     "face_boxes": [[x0, y0, x1, y1], ...],              # pixels of the image; optional
     "hand_boxes": {"chosen": [[...]], "rejected": []},  # or one list for both images
     "chosen_quality": "q/001_w.npy", "rejected_quality": "q/001_l.png"}  # optional patch-quality maps

Single-image records (SFT, pose-adapter)::

    {"prompt": "...", "image": "img/001.png", "source": "real",     # default "real"
     "face_boxes": [...], "hand_boxes": [...], "quality": "q/001.npy",
     "pose": "poses/001.json"}              # or the keypoint JSON inline; optional (see ``poses``)

Boxes: a plain list applies to *both* images of a pair, read in each image's own pixels (pairs are
normally the same size); ``{"chosen": [...], "rejected": [...]}`` gives each image its own list (a
missing side has no boxes). A box must lie inside its image with ``x0 < x1`` and ``y0 < y1``.
Quality maps: ``.npy`` (read with ``allow_pickle=False``) of shape (H, W) or (1, H, W) with values in
[0, 1], or a greyscale PNG (8-bit divided by 255, 16-bit by 65535); any resolution, as the map is
stretched over its image.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import DatasetError
from .items import read_quality_map
from .poses import check_pose_field

__all__ = ["Record", "validate_jsonl", "PAIR_KEYS", "SINGLE_KEYS", "SOURCES", "METADATA"]

METADATA = "metadata.jsonl"
PAIR_KEYS = ("prompt", "chosen", "rejected", "chosen_source", "face_boxes", "hand_boxes",
             "chosen_quality", "rejected_quality")
SINGLE_KEYS = ("prompt", "image", "source", "face_boxes", "hand_boxes", "quality", "pose")
SOURCES = ("generated", "real", "reconstructed")
BOX_KEYS = ("face_boxes", "hand_boxes")


@dataclass(frozen=True)
class Record:
    """One validated line of ``metadata.jsonl``; per-image tuples are ordered chosen, rejected (or image).

    ``boxes[kind][i]`` is a tuple of ``(x0, y0, x1, y1)`` in pixels of image ``i``; ``sizes[i]`` is (W, H).
    ``text`` is the record as canonical JSON (sorted keys), part of the item's content key.
    ``pose``: the absolute path of its keypoint file, or ``pose_json``: inline keypoint JSON (or neither).
    """

    line: int
    text: str
    prompt: str
    images: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    source: str
    boxes: dict[str, tuple[tuple[tuple[float, float, float, float], ...], ...]]
    quality: tuple[str | None, ...]
    pose: str | None = None
    pose_json: str | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.images) == 2


def validate_jsonl(folder: str | os.PathLike) -> list[Record]:
    """Check every line of ``<folder>/metadata.jsonl`` and return the records, or raise one error.

    Opens each image's header (PIL) and loads each quality map; decodes no pixels otherwise.

    Raises
    ------
    DatasetError
        Listing every bad line with its number: bad JSON, unknown keys (with the valid ones), missing
        prompt, missing or unreadable files, boxes outside their image or with x1 <= x0, quality maps
        out of [0, 1], unreadable or empty poses, pair and single-image records mixed, or an empty file.
    """
    root = Path(folder).expanduser()
    meta = root / METADATA
    if not meta.is_file():
        raise DatasetError(f"validate_dataset: data must be a folder containing {METADATA}, got {str(root)!r} "
                           f"({'no such folder' if not root.is_dir() else f'no {METADATA} in it'})")
    problems: list[tuple[int, str]] = []
    records: list[Record] = []
    kinds: dict[int, str] = {}
    with open(meta, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            found: list[str] = []
            record = _parse_line(root, number, line, found, kinds)
            problems += [(number, p) for p in found]
            if record is not None and not found:
                records.append(record)
    if not kinds and not problems:
        raise DatasetError(f"validate_dataset: {meta} must hold one JSON record per line, got an empty file; "
                           f"fix: write records like {{\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}}")
    if len(set(kinds.values())) > 1:  # report the minority kind (ties: the kind of the first record)
        counts = {k: list(kinds.values()).count(k) for k in kinds.values()}
        main = max(counts, key=counts.get)
        for number, kind in kinds.items():
            if kind != main:
                problems.append((number, f"is a {kind} record but {counts[main]} other line(s) are {main} records; "
                                         "one dataset holds only pairs or only single images"))
    if problems:
        problems.sort(key=lambda p: p[0])
        bad_lines = len({n for n, _ in problems})
        listing = "\n".join(f"  line {n}: {p}" for n, p in problems)
        raise DatasetError(f"validate_dataset: every line of {meta} must be a valid record, got {bad_lines} bad "
                           f"line(s):\n{listing}\nfix: correct or delete these lines (schema: "
                           f"vitruvian.trainers.data.records)")
    return records


def _parse_line(root: Path, number: int, line: str, problems: list[str], kinds: dict[int, str]) -> Record | None:
    """Parse one line, appending every problem to ``problems``; returns None when it cannot go on."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        problems.append(f"not valid JSON ({e.msg} at column {e.colno})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"must be a JSON object, got {type(obj).__name__}")
        return None
    is_pair, is_single = "chosen" in obj or "rejected" in obj, "image" in obj
    if is_pair and is_single:
        problems.append("must have either chosen + rejected (a pair) or image (a single image), got both")
        return None
    if not (is_pair or is_single):
        problems.append(f"must have chosen + rejected (a pair) or image (a single image), got keys {sorted(obj)}")
        return None
    kind, valid = ("pair", PAIR_KEYS) if is_pair else ("single-image", SINGLE_KEYS)
    kinds[number] = kind
    unknown = sorted(k for k in obj if k not in valid)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys for {kind} records: "
                        f"{', '.join(valid)}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        problems.append("missing prompt" if prompt is None else f"prompt must be a string, got {prompt!r}")
    roles = ("chosen", "rejected") if is_pair else ("image",)
    images, sizes = [], []
    for role in roles:
        path, size = _check_image(root, role, obj.get(role), problems)
        images.append(path)
        sizes.append(size)
    source_key = "chosen_source" if is_pair else "source"
    source = obj.get(source_key, "generated" if is_pair else "real")
    if source not in SOURCES:
        problems.append(f"{source_key} must be one of {', '.join(SOURCES)}, got {source!r}")
    boxes = {kind_: _check_boxes(kind_, obj.get(kind_, []), roles, sizes, problems) for kind_ in BOX_KEYS}
    quality_keys = ("chosen_quality", "rejected_quality") if is_pair else ("quality",)
    quality = tuple(_check_quality(root, k, obj.get(k), problems) for k in quality_keys)
    pose, pose_json = (None, None) if is_pair else check_pose_field(root, obj.get("pose"), sizes[0], problems)
    if problems:
        return None
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return Record(line=number, text=text, prompt=prompt, images=tuple(images), sizes=tuple(sizes),
                  source=source, boxes=boxes, quality=quality, pose=pose, pose_json=pose_json)


def _check_image(root: Path, role: str, rel: Any, problems: list[str]) -> tuple[str, tuple[int, int] | None]:
    from PIL import Image, UnidentifiedImageError

    if not isinstance(rel, str) or not rel:
        problems.append(f"{role} must be an image path relative to the folder, got {rel!r}")
        return "", None
    path = root / rel
    if not path.is_file():
        problems.append(f"{role}: file not found {rel!r}")
        return str(path), None
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # checks the file's structure (PNG chunk CRCs) without decoding pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        problems.append(f"{role}: cannot read {rel!r} as an image ({type(e).__name__}: {e})")
        return str(path), None
    return str(path), size


def _check_boxes(key: str, value: Any, roles: tuple[str, ...], sizes: list, problems: list[str]) -> tuple:
    """Per-image tuples of boxes; a plain list is shared by every image of the record."""
    split = isinstance(value, dict) and len(roles) == 2
    if split:
        extra = sorted(k for k in value if k not in roles)
        if extra:
            problems.append(f"{key} keys must be chosen and/or rejected, got {', '.join(map(repr, extra))}")
        per_image = [value.get(role, []) for role in roles]
    else:
        per_image = [value] * len(roles)
    out = []
    for role, boxes, size in zip(roles, per_image, sizes):
        where = f"{key}[{role}]" if split else key
        found = []
        if not isinstance(boxes, list):
            found.append(f"{where} must be a list of [x0, y0, x1, y1] boxes"
                         f"{' or {chosen: [...], rejected: [...]}' if len(roles) == 2 else ''}, got {boxes!r}")
            boxes = []
        good = []
        for j, box in enumerate(boxes):
            problem = _box_problem(box, size)
            if problem:
                found.append(f"{where}[{j}] {problem}")
            else:
                good.append(tuple(float(v) for v in box))
        problems += [p for p in found if p not in problems]  # a shared list is reported once, not per image
        out.append(tuple(good))
    return tuple(out)


def _box_problem(box: Any, size: tuple[int, int] | None) -> str | None:
    numeric = isinstance(box, list) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    if not numeric:
        return f"must be 4 finite numbers [x0, y0, x1, y1], got {box!r}"
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        return f"must have x0 < x1 and y0 < y1, got {box!r}"
    if size is not None and not (0 <= x0 and 0 <= y0 and x1 <= size[0] and y1 <= size[1]):
        return (f"must lie inside the {size[0]}x{size[1]} image (0 <= x0 < x1 <= {size[0]}, "
                f"0 <= y0 < y1 <= {size[1]}), got {box!r}; fix: clip the box to the image")
    return None


def _check_quality(root: Path, key: str, rel: Any, problems: list[str]) -> str | None:
    if rel is None:
        return None
    if not isinstance(rel, str) or not rel:
        problems.append(f"{key} must be a path to a .npy or greyscale .png map, got {rel!r}")
        return None
    path = root / rel
    if not path.is_file():
        problems.append(f"{key}: file not found {rel!r}")
        return None
    try:
        read_quality_map(path.read_bytes(), path.name)
    except ValueError as e:
        problems.append(f"{key}: {e}")
        return None
    return str(path)
