"""Per-region scores attached to regions, and per-image aggregates as lists.

A scorer never reduces a batch to one number: it gives one value per region (or ``None`` where it
does not apply: a face scorer on a hand, a hand without 21 keypoints), and :func:`aggregate` turns
those into per-image lists (``min``, ``mean``, ``max``, ``count``). An image with no scored region
has ``count`` 0 and ``None`` for the others, so "no face" is never confused with "a bad face".

Shape:
    - values per image: ``list[list[float | None]]``, same nesting as ``RegionBatch.regions``.
    - aggregates: one entry per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from ..regions import RegionBatch

__all__ = ["AGGREGATES", "ImageAggregates", "attach_scores", "read_scores", "aggregate", "scores_report"]

#: Per-image reductions, in the order nodes offer them.
AGGREGATES = ("min", "mean", "max", "count")


@dataclass(frozen=True)
class ImageAggregates:
    """Per-image reductions of one score; lists have one entry per image.

    Attributes:
        name: the score name.
        min, mean, max: ``None`` for an image without a scored region.
        count: how many regions of the image carry the score.
    """

    name: str
    min: list[float | None]
    mean: list[float | None]
    max: list[float | None]
    count: list[int]

    def get(self, which: str) -> list[float | None]:
        """One of :data:`AGGREGATES` as a list (counts as floats)."""
        if which not in AGGREGATES:
            raise ValueError(f"ImageAggregates.get: which must be one of {', '.join(AGGREGATES)}, got {which!r}")
        values = getattr(self, which)
        return [float(v) for v in values] if which == "count" else list(values)

    def to_dict(self) -> dict:
        return {"min": self.min, "mean": self.mean, "max": self.max, "count": self.count}


def attach_scores(batch: RegionBatch, name: str, values_per_image: Sequence[Sequence[float | None]]) -> RegionBatch:
    """A new batch with ``scores[name]`` set where a value is given; ``None`` leaves that region
    without the score (other scores it had are kept).

    ``values_per_image[b][i]`` belongs to ``batch.regions[b][i]``. Values must be finite.
    When every region gets a value this is exactly ``batch.with_scores(name, values_per_image)``.
    """
    values_per_image = [list(v) for v in values_per_image]
    counts, got = [len(r) for r in batch.regions], [len(v) for v in values_per_image]
    if counts != got:
        raise ValueError(f"attach_scores: values_per_image must match the regions per image {counts}, got {got}")
    for b, values in enumerate(values_per_image):
        for i, v in enumerate(values):
            if v is not None and not math.isfinite(float(v)):
                raise ValueError(f"attach_scores: {name} of image {b}, region {i} must be finite or None, got {v}")
    if all(v is not None for values in values_per_image for v in values):
        return batch.with_scores(name, values_per_image)
    regions = tuple(
        tuple(r if v is None else r.with_score(name, float(v)) for r, v in zip(per_image, values))
        for per_image, values in zip(batch.regions, values_per_image)
    )
    return replace(batch, regions=regions)


def read_scores(batch: RegionBatch, name: str) -> list[list[float | None]]:
    """``scores[name]`` of every region (``None`` where absent), nested like ``batch.regions``."""
    return [[r.scores.get(name) for r in per_image] for per_image in batch.regions]


def aggregate(batch: RegionBatch, name: str, *, labels: Sequence[str] | None = None) -> ImageAggregates:
    """Per-image ``min``, ``mean``, ``max`` and ``count`` of ``scores[name]``, optionally only over
    regions whose label is in ``labels`` (FairHuman reports faces and hands apart).

    Example:
        >>> from vitruvian.core.regions import Region
        >>> batch = RegionBatch(((Region("face", (0, 0, 2, 2), 0.5), Region("face", (1, 1, 3, 3), 0.9)), ()),
        ...                     ((4, 4), (4, 4)))
        >>> a = aggregate(attach_scores(batch, "q", [[1.0, 3.0], []]), "q")
        >>> a.min, a.mean, a.count
        ([1.0, None], [2.0, None], [2, 0])
    """
    wanted = None if labels is None else set(labels)
    mins, means, maxs, counts = [], [], [], []
    for per_image in batch.regions:
        values = [
            r.scores[name] for r in per_image if name in r.scores and (wanted is None or r.label in wanted)
        ]
        counts.append(len(values))
        mins.append(min(values) if values else None)
        maxs.append(max(values) if values else None)
        means.append(math.fsum(values) / len(values) if values else None)
    return ImageAggregates(name, mins, means, maxs, counts)


def scores_report(batch: RegionBatch, names: Sequence[str]) -> dict:
    """A JSON-safe summary for node UI text and files: every region with its label, box, detector
    score and quality scores, and per image the aggregates of each name in ``names``, overall and
    per label.

    Returns:
        ``{"scores": [names], "images": [{"index", "size": [H, W], "regions": [...],
        "aggregates": {name: {min, mean, max, count}}, "by_label": {label: {name: {...}}}}]}``
    """
    names = list(names)
    overall = {n: aggregate(batch, n) for n in names}
    labels = sorted({r.label for _, _, r in batch.flat()})
    per_label = {(label, n): aggregate(batch, n, labels=[label]) for label in labels for n in names}
    images = []
    for b, per_image in enumerate(batch.regions):
        image = {
            "index": b,
            "size": list(batch.image_sizes[b]),
            "regions": [
                {"label": r.label, "box": list(r.box), "score": r.score, "scores": dict(r.scores)}
                for r in per_image
            ],
            "aggregates": {n: _one(overall[n], b) for n in names},
            "by_label": {
                label: {n: _one(per_label[label, n], b) for n in names}
                for label in labels
                if any(r.label == label for r in per_image)
            },
        }
        images.append(image)
    return {"scores": names, "images": images}


def _one(agg: ImageAggregates, b: int) -> dict:
    return {"min": agg.min[b], "mean": agg.mean[b], "max": agg.max[b], "count": agg.count[b]}
