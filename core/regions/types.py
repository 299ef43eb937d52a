"""Regions as data: labelled boxes with an optional crop-local shape mask, per image.

A :class:`Region` is what a detector found (a face, a hand, a person); a :class:`RegionBatch`
holds the regions of every image of an IMAGE batch. Scorers attach numbers to regions with
:meth:`RegionBatch.with_scores`; nodes turn regions into masks with :meth:`RegionBatch.to_masks`.

Shape:
    - ``Region.box``: ``(x0, y0, x1, y1)`` float pixels of the image, ``x0 < x1``, ``y0 < y1``,
      inside ``[0, W] × [0, H]`` once in a :class:`RegionBatch`.
    - ``Region.mask``: ``(h, w)`` float32 in [0, 1] covering the box's pixel extent
      (:func:`pixel_box`); pasted as is when ``(h, w)`` equals that extent, else resized
      (bilinear) to it. ``None`` means "the box is the shape".
    - ``Region.keypoints``: ``(K, 3)`` float32 ``x, y, confidence`` in image pixels, or None.
    - ``RegionBatch.to_masks()``: ``(B, 1, H, W)`` float32 in [0, 1].

The dataclasses are frozen; tensors and the ``scores`` dict are not copied on access, so treat
them as read-only (every method returns new objects).
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from .names import parse_names

__all__ = [
    "LABELS", "HANDEDNESS", "COMBINE", "Region", "RegionBatch", "region_mask", "pixel_box",
]

#: The labels the pack's detectors emit. Other labels (from a user's ONNX model or from SEGS) are kept as they come.
LABELS = ("face", "hand", "person")
HANDEDNESS = ("left", "right")
#: How :meth:`RegionBatch.to_masks` merges overlapping regions: the maximum, or the sum clipped to 1.
COMBINE = ("max", "sum")
_BOX_TOLERANCE = 1e-3  # pixels; float noise from resizing must not fail the inside-image check


def _check_box(box, where: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box must be 4 numbers (x0, y0, x1, y1), got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: box must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"{where}: box must have x0 < x1 and y0 < y1 (pixels, corners), got {values}; "
                         "a (x, y, w, h) box must be converted to corners first")
    return values


def _check_float_tensor(t, shape_doc: str, where: str, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor {shape_doc} or None, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{where}: {name} must be a float tensor {shape_doc}, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{where}: {name} must be finite, got NaN or inf")
    return t


@dataclass(frozen=True, eq=False)
class Region:
    """One detected region of one image.

    Attributes:
        label: ``"face"``, ``"hand"``, ``"person"`` (:data:`LABELS`) or a detector's own class name.
        box: ``(x0, y0, x1, y1)`` float pixels.
        score: detector confidence in [0, 1].
        mask: ``(h, w)`` float32 in [0, 1] over the box's pixel extent, or None (box = shape).
        keypoints: ``(K, 3)`` float32 x, y, confidence in image pixels, or None.
        handedness: ``"left"`` / ``"right"`` (the person's own side) or None.
        source: where it came from, e.g. ``"keypoints:mediapipe33"``, ``"onnx:face_yolov8n.onnx"``.
        scores: quality scores attached by scorers, name → float (e.g. ``{"sharpness": 0.42}``).

    Example:
        >>> r = Region("face", (10, 20, 50, 70), 0.9)
        >>> r.width, r.height, pixel_box(r)
        (40.0, 50.0, (10, 20, 50, 70))
    """

    label: str
    box: tuple[float, float, float, float]
    score: float
    mask: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    handedness: str | None = None
    source: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Region: label must be a non-empty str (e.g. {', '.join(LABELS)}), got {self.label!r}")
        object.__setattr__(self, "box", _check_box(self.box, "Region"))
        score = float(self.score)
        if not (0.0 <= score <= 1.0):
            raise ValueError(f"Region: score must be a confidence in [0, 1], got {self.score!r}")
        object.__setattr__(self, "score", score)
        if self.mask is not None:
            m = _check_float_tensor(self.mask, "(h, w) in [0, 1]", "Region", "mask")
            if m.ndim != 2 or 0 in m.shape:
                raise ValueError(f"Region: mask must be (h, w) over the box, got shape {tuple(m.shape)}")
            if m.min() < 0 or m.max() > 1:
                raise ValueError(f"Region: mask values must be in [0, 1], got [{float(m.min())}, {float(m.max())}]")
            object.__setattr__(self, "mask", m)
        if self.keypoints is not None:
            k = _check_float_tensor(self.keypoints, "(K, 3)", "Region", "keypoints")
            if k.ndim != 2 or k.shape[1] != 3:
                raise ValueError(f"Region: keypoints must be (K, 3) x, y, confidence, got shape {tuple(k.shape)}")
            object.__setattr__(self, "keypoints", k)
        if self.handedness not in (None, *HANDEDNESS):
            raise ValueError(f"Region: handedness must be 'left', 'right' or None, got {self.handedness!r}")
        if not isinstance(self.source, str):
            raise TypeError(f"Region: source must be a str, got {type(self.source).__name__}")
        scores = {}
        for name, value in dict(self.scores).items():
            if not isinstance(name, str):
                raise TypeError(f"Region: scores keys must be str, got {name!r}")
            scores[name] = float(value)
        object.__setattr__(self, "scores", scores)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height

    def with_score(self, name: str, value: float) -> "Region":
        """A copy with ``scores[name] = value``."""
        return replace(self, scores={**self.scores, name: float(value)})

    def crop_mask(self) -> torch.Tensor:
        """The shape over the box's pixel extent: ``-> (h, w)`` float32 in [0, 1], h, w from
        :func:`pixel_box` (ones where the region has no mask)."""
        x0, y0, x1, y1 = pixel_box(self)
        h, w = y1 - y0, x1 - x0
        if self.mask is None:
            return torch.ones(h, w)
        if tuple(self.mask.shape) == (h, w):
            return self.mask
        resized = torch.nn.functional.interpolate(self.mask[None, None], size=(h, w), mode="bilinear", align_corners=False)
        return resized[0, 0].clamp(0, 1)

    def clipped(self, height: int, width: int) -> "Region | None":
        """This region clipped to a ``width`` × ``height`` image (its mask cropped to match), or
        None when nothing of it is inside. Returns ``self`` when it is already inside."""
        x0, y0, x1, y1 = self.box
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
            return self
        mask = None
        if self.mask is not None:
            px0, py0, _, _ = pixel_box(self)
            full = self.crop_mask()
            inner = replace(self, box=(cx0, cy0, cx1, cy1), mask=None)
            qx0, qy0, qx1, qy1 = pixel_box(inner)
            mask = full[qy0 - py0 : qy1 - py0, qx0 - px0 : qx1 - px0]
        return replace(self, box=(cx0, cy0, cx1, cy1), mask=mask)


def pixel_box(region: "Region | Sequence[float]") -> tuple[int, int, int, int]:
    """The integer pixel extent of a region's box (or of a box ``(x0, y0, x1, y1)``):
    ``floor(x0), floor(y0), ceil(x1), ceil(y1)``, the rectangle a region's ``mask`` covers."""
    x0, y0, x1, y1 = region.box if isinstance(region, Region) else region
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


def region_mask(region: Region, height: int, width: int) -> torch.Tensor:
    """The region's shape pasted onto an empty ``height`` × ``width`` canvas; parts outside the
    canvas are dropped. ``-> (H, W)`` float32 in [0, 1].

    Example:
        >>> region_mask(Region("hand", (2, 2, 4, 5), 1.0), 8, 8).sum()
        tensor(6.)
    """
    canvas = torch.zeros(height, width)
    x0, y0, x1, y1 = pixel_box(region)
    crop = region.crop_mask()
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 < cx1 and cy0 < cy1:
        canvas[cy0:cy1, cx0:cx1] = crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


def _labels_set(labels, where: str) -> frozenset[str] | None:
    if labels is None:
        return None
    parsed = parse_names(labels)
    if parsed is None:
        raise ValueError(f"{where}: labels must name at least one label (e.g. 'face,hand'), or be None for all")
    return frozenset(parsed)


@dataclass(frozen=True, eq=False)
class RegionBatch:
    """The regions of each image of a batch. The pack's ``VITRUVIAN_REGIONS`` value.

    Attributes:
        regions: one tuple of :class:`Region` per image (may be empty).
        image_sizes: ``(H, W)`` per image, same length as ``regions``.
        searched: the labels the detection that made the batch looked for, found or not (``()`` = not
            recorded); :mod:`.names` tells an unknown label from one that was looked for and not found.
        scored: the score names scorers computed over the batch, whether or not a region got one.

    Example:
        >>> batch = RegionBatch(((Region("face", (1, 1, 3, 3), 0.8),), ()), ((4, 4), (4, 4)))
        >>> len(batch), batch.count(), batch.to_masks().shape
        (2, 1, torch.Size([2, 1, 4, 4]))
    """

    regions: tuple[tuple[Region, ...], ...] = ()
    image_sizes: tuple[tuple[int, int], ...] = ()
    searched: tuple[str, ...] = ()
    scored: tuple[str, ...] = ()

    def __post_init__(self):
        regions = tuple(tuple(r) for r in self.regions)
        sizes = tuple(tuple(s) for s in self.image_sizes)
        for name in ("searched", "scored"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"RegionBatch: {name} must be a tuple of non-empty names, got {values!r}")
            object.__setattr__(self, name, tuple(dict.fromkeys(values)))
        if len(regions) != len(sizes):
            raise ValueError(
                f"RegionBatch: image_sizes must have one (H, W) per image, got {len(sizes)} sizes "
                f"for {len(regions)} images"
            )
        for b, size in enumerate(sizes):
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise ValueError(f"RegionBatch: image_sizes[{b}] must be (H, W) positive ints, got {size!r}")
        for b, (per_image, (h, w)) in enumerate(zip(regions, sizes)):
            for i, r in enumerate(per_image):
                if not isinstance(r, Region):
                    raise TypeError(f"RegionBatch: regions[{b}][{i}] must be a Region, got {type(r).__name__}")
                x0, y0, x1, y1 = r.box
                t = _BOX_TOLERANCE
                if x0 < -t or y0 < -t or x1 > w + t or y1 > h + t:
                    raise ValueError(
                        f"RegionBatch: regions[{b}][{i}] ({r.label}) has box {r.box}, outside its {w}×{h} image; "
                        "clip it first with Region.clipped(H, W)"
                    )
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "image_sizes", sizes)

    def __len__(self) -> int:
        return len(self.regions)

    def __iter__(self) -> Iterator[tuple[Region, ...]]:
        return iter(self.regions)

    def __getitem__(self, b: int) -> tuple[Region, ...]:
        return self.regions[b]

    def count(self, label: str | None = None) -> int:
        """How many regions (of ``label``, or all) over the batch."""
        return sum(1 for _, _, r in self.flat() if label is None or r.label == label)

    def flat(self) -> list[tuple[int, int, Region]]:
        """``(image index, region index, Region)`` for every region, image by image."""
        return [(b, i, r) for b, per_image in enumerate(self.regions) for i, r in enumerate(per_image)]

    def with_scores(self, name: str, values_per_image: Sequence[Sequence[float]]) -> "RegionBatch":
        """A new batch with ``scores[name]`` set on every region; ``values_per_image[b][i]`` is the
        value for ``regions[b][i]`` (same nesting as ``regions``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"RegionBatch.with_scores: name must be a non-empty str, got {name!r}")
        values_per_image = list(values_per_image)
        counts = [len(r) for r in self.regions]
        got = [len(v) for v in values_per_image]
        if got != counts:
            raise ValueError(
                f"RegionBatch.with_scores: values_per_image must match the regions per image {counts}, got {got}"
            )
        regions = tuple(
            tuple(r.with_score(name, float(v)) for r, v in zip(per_image, values))
            for per_image, values in zip(self.regions, values_per_image)
        )
        return replace(self, regions=regions)

    def filter(self, labels: str | Iterable[str] | None = None, *, min_score: float = 0.0) -> "RegionBatch":
        """Keep regions whose label is in ``labels`` (a list or a comma list; None = all) and whose
        score is at least ``min_score``. Images stay, possibly empty."""
        wanted = _labels_set(labels, "RegionBatch.filter")
        regions = tuple(
            tuple(r for r in per_image if (wanted is None or r.label in wanted) and r.score >= min_score)
            for per_image in self.regions
        )
        return replace(self, regions=regions)

    def to_masks(self, labels: str | Iterable[str] | None = None, *, combine: str = "max") -> torch.Tensor:
        """One mask per image: the union of the (``labels``-filtered) region shapes.

        ``combine`` is ``"max"`` (overlaps stay ≤ 1) or ``"sum"`` (added, then clipped to 1).
        All images must have the same size. ``-> (B, 1, H, W)`` float32 in [0, 1].
        """
        if combine not in COMBINE:
            raise ValueError(f"RegionBatch.to_masks: combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        if len(set(self.image_sizes)) > 1:
            raise ValueError(
                f"RegionBatch.to_masks: images must share one size to stack masks, got {sorted(set(self.image_sizes))}"
            )
        if not self.regions:
            raise ValueError("RegionBatch.to_masks: the batch has no images, so there is no mask size")
        h, w = self.image_sizes[0]
        wanted = _labels_set(labels, "RegionBatch.to_masks")
        out = torch.zeros(len(self), 1, h, w)
        for b, _, r in self.flat():
            if wanted is not None and r.label not in wanted:
                continue
            m = region_mask(r, h, w)
            out[b, 0] = torch.maximum(out[b, 0], m) if combine == "max" else out[b, 0] + m
        return out.clamp_(0, 1)

    def summary(self) -> str:
        """One line for node UI text, e.g. ``"2 images: 1 face, 2 hands, 1 person"``."""
        n = len(self)
        order = {label: i for i, label in enumerate(LABELS)}
        labels = sorted({r.label for _, _, r in self.flat()}, key=lambda s: (order.get(s, len(LABELS)), s))
        plural = {"face": "faces", "hand": "hands", "person": "people"}
        parts = []
        for label in labels:
            c = self.count(label)
            parts.append(f"{c} {label if c == 1 else plural.get(label, label)}")
        return f"{n} image{'s' * (n != 1)}: " + (", ".join(parts) if parts else "no regions")

    # ------------------------------------------------------------------ JSON
    def to_dict(self, *, masks: bool = True) -> dict:
        """A JSON-safe dict (lossless; masks zlib-compressed float32 in base64). ``masks=False``
        leaves the masks out (for UI text); :meth:`from_dict` then reads them as None."""
        out = {
            "image_sizes": [list(s) for s in self.image_sizes],
            "regions": [[_region_to_dict(r, masks) for r in per_image] for per_image in self.regions],
        }
        out.update({k: list(getattr(self, k)) for k in ("searched", "scored") if getattr(self, k)})
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "RegionBatch":
        """The inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "regions" not in data or "image_sizes" not in data:
            raise ValueError(
                "RegionBatch.from_dict: data must be a dict with 'regions' and 'image_sizes', "
                f"got {type(data).__name__} with keys {sorted(data) if isinstance(data, Mapping) else '-'}"
            )
        return cls(
            regions=tuple(tuple(_region_from_dict(d) for d in per_image) for per_image in data["regions"]),
            image_sizes=tuple((int(h), int(w)) for h, w in data["image_sizes"]),
            searched=tuple(data.get("searched", ())), scored=tuple(data.get("scored", ())),
        )


_MASK_ENCODING = "zlib-float32le-base64"


def _encode_tensor(t: torch.Tensor) -> dict:
    raw = t.contiguous().numpy().astype("<f4").tobytes()
    return {"shape": list(t.shape), "encoding": _MASK_ENCODING, "data": base64.b64encode(zlib.compress(raw)).decode()}


def _decode_tensor(d: Mapping) -> torch.Tensor:
    if d.get("encoding") != _MASK_ENCODING:
        raise ValueError(f"RegionBatch.from_dict: mask encoding must be {_MASK_ENCODING!r}, got {d.get('encoding')!r}")
    raw = bytearray(zlib.decompress(base64.b64decode(d["data"])))
    return torch.frombuffer(raw, dtype=torch.float32).reshape(d["shape"]).clone()


def _region_to_dict(r: Region, masks: bool) -> dict:
    d = {"label": r.label, "box": list(r.box), "score": r.score, "handedness": r.handedness, "source": r.source,
         "scores": dict(r.scores)}
    if r.keypoints is not None:
        d["keypoints"] = r.keypoints.tolist()
    if masks and r.mask is not None:
        d["mask"] = _encode_tensor(r.mask)
    return d


def _region_from_dict(d: Mapping) -> Region:
    return Region(
        label=d["label"], box=tuple(d["box"]), score=d["score"],
        mask=_decode_tensor(d["mask"]) if d.get("mask") is not None else None,
        keypoints=torch.tensor(d["keypoints"], dtype=torch.float32) if d.get("keypoints") is not None else None,
        handedness=d.get("handedness"), source=d.get("source", ""), scores=d.get("scores", {}),
    )
