"""Turning JSON keypoint values into ``(K, 3)`` tensors, with errors that say where.

Every reader passes a location string such as ``"load_pose: image 0, person 1"``; each error
names that location, the key, the keypoint index and what was expected, so a user can find
the bad number in a long JSON file.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import PoseFormatError
from .keypoints import check_canvas

__all__ = ["where", "type_name", "parse_number", "parse_flat", "parse_rows", "check_confidences", "canvas_from", "resolve_canvas", "json_floats"]


def where(fn: str, image: int | None = None, person: int | None = None) -> str:
    """``"load_pose: image 0, person 1"`` (the parts that are known)."""
    parts = [f"image {image}" if image is not None else "", f"person {person}" if person is not None else ""]
    located = ", ".join(p for p in parts if p)
    return f"{fn}: {located}" if located else fn


def type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def parse_number(value, *, loc: str, key: str, item: str, index: int, coord: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PoseFormatError(
            f"{loc}, {key} {item} {index} has {coord} = {value!r} ({type_name(value)}), expected a number"
        )
    if not math.isfinite(value):
        raise PoseFormatError(
            f"{loc}, {key} {item} {index} has {coord} = {value}; keypoints must be finite numbers "
            "(write a missing point as 0, 0, 0)"
        )
    return float(value)


def check_confidences(k: torch.Tensor, *, loc: str, key: str, item: str = "keypoint", hint: str = "") -> None:
    """PoseFormatError naming the first row whose confidence ``k[:, 2]`` is outside [0, 1]."""
    bad = ((k[:, 2] < 0) | (k[:, 2] > 1)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise PoseFormatError(
            f"{loc}, {key} {item} {i} has confidence {float(k[i, 2]):g}, expected a value in [0, 1]{hint}"
        )


def _describe_sizes(sizes: dict[int, str]) -> str:
    return " or ".join(f"{3 * k} ({k} keypoints × [x, y, c], {fmt})" for k, fmt in sizes.items())


def parse_flat(values, *, loc: str, key: str, sizes: dict[int, str], check_conf: bool = True) -> tuple[torch.Tensor, str]:
    """Parse a flat ``[x, y, c] * K`` list.

    Args:
        values: the JSON list.
        loc: location prefix for errors (see :func:`where`).
        key: the JSON key the list came from, e.g. ``"hand_left_keypoints_2d"``.
        sizes: allowed keypoint counts and the format each means, e.g. ``{18: "coco18", 25: "body25"}``.
        check_conf: check that confidences lie in [0, 1] (off when the caller must first
            recognise COCO visibility flags).

    Returns:
        ``((K, 3) float32, format name)``.
    """
    if not isinstance(values, (list, tuple)):
        raise PoseFormatError(
            f"{loc}, {key} must be a flat list [x, y, c, x, y, c, ...] or null, got {type_name(values)}"
        )
    n = len(values)
    if any(isinstance(v, (list, tuple)) for v in values):
        raise PoseFormatError(
            f"{loc}, {key} must be a flat list [x, y, c, x, y, c, ...], got nested lists; "
            "flatten the [x, y, c] triples into one list"
        )
    if n % 3:
        k = next(iter(sizes)) if len(sizes) == 1 else None
        expected = f" ({k} keypoints × [x, y, c] = {3 * k})" if k else f": {_describe_sizes(sizes)}"
        raise PoseFormatError(f"{loc}, {key} has {n} values, expected a multiple of 3{expected}")
    if n // 3 not in sizes:
        raise PoseFormatError(f"{loc}, {key} has {n} values ({n // 3} keypoints), expected {_describe_sizes(sizes)}")
    rows = [
        [parse_number(values[3 * i + j], loc=loc, key=key, item="keypoint", index=i, coord=c) for j, c in enumerate("xyc")]
        for i in range(n // 3)
    ]
    k = torch.tensor(rows, dtype=torch.float32).reshape(n // 3, 3)
    if check_conf:
        check_confidences(k, loc=loc, key=key)
    return k, sizes[n // 3]


def parse_rows(rows, *, loc: str, key: str, sizes: dict[int, str], item: str = "keypoint") -> tuple[torch.Tensor, str]:
    """Parse ``[[x, y, c], ...]`` triples. Same contract as :func:`parse_flat`."""
    if not isinstance(rows, (list, tuple)):
        raise PoseFormatError(f"{loc}, {key} must be a list of [x, y, c] triples, got {type_name(rows)}")
    if len(rows) not in sizes:
        raise PoseFormatError(
            f"{loc}, {key} has {len(rows)} {item}s, expected {' or '.join(str(k) for k in sizes)} ({', '.join(sizes.values())})"
        )
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            raise PoseFormatError(f"{loc}, {key} {item} {i} is {row!r}, expected [x, y, c]")
        out.append([parse_number(v, loc=loc, key=key, item=item, index=i, coord=c) for v, c in zip(row, "xyc")])
    k = torch.tensor(out, dtype=torch.float32).reshape(len(rows), 3)
    check_confidences(k, loc=loc, key=key, item=item)
    return k, sizes[len(rows)]


def canvas_from(obj: dict, *, loc: str) -> tuple[int, int] | None:
    """The canvas stored in a JSON object (``canvas_width``/``canvas_height``, ``width``/``height``
    or ``size: [w, h]``), checked; None when it stores none."""
    for wk, hk in (("canvas_width", "canvas_height"), ("width", "height")):
        if wk in obj or hk in obj:
            w, h = obj.get(wk), obj.get(hk)
            if isinstance(w, float) and w.is_integer():
                w = int(w)
            if isinstance(h, float) and h.is_integer():
                h = int(h)
            check_canvas(w, h, where=loc)
            return w, h
    if "size" in obj:
        size = obj["size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise PoseFormatError(f"{loc} has size = {size!r}, expected [width, height]")
        w, h = (int(v) if isinstance(v, float) and v.is_integer() else v for v in size)
        check_canvas(w, h, where=loc)
        return w, h
    return None


def resolve_canvas(found: tuple[int, int] | None, canvas: tuple[int, int] | None, *, loc: str) -> tuple[int, int]:
    """The canvas to use: the data's, else the caller's; PoseFormatError when neither exists."""
    if found is not None:
        return found
    if canvas is not None:
        return canvas
    raise PoseFormatError(
        f"{loc} has no canvas size (canvas_width/canvas_height), expected one for this data; "
        "pass canvas=(width, height) (the node's canvas_width/canvas_height inputs)"
    )


def json_floats(t: torch.Tensor) -> list[float]:
    """Flatten a float32 tensor to Python floats, each the shortest decimal that reads back to the
    same float32 (``0.9993``, not ``0.9993000030517578``): lossless and readable."""
    return [float(str(v)) for v in t.detach().cpu().numpy().astype(np.float32).reshape(-1)]
