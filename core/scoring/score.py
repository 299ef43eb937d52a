"""Run one scorer over every region of a batch, in one batched call, and attach the scores.

A scorer is any object with ``names`` (the score names it writes, the main one first), ``labels``
(the region labels it scores by default; ``None`` for all) and ``score(image, regions,
image_index)`` returning one ``(P,)`` float tensor per name, NaN where it does not apply.
:func:`score_regions` checks the image against the regions (``core.checks``), hands the scorer all
selected regions of all images at once, and returns the batch with the scores attached plus per-image
aggregates.

Shape:
    - image: ``(B, C, H, W)`` float in [0, 1], C = 3 (1 is repeated, a 4th alpha channel dropped)
    - image_index: ``(P,)`` int64; scorer outputs: ``(P,)`` float
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from ..checks import check_image, check_regions
from ..regions import Region, RegionBatch, parse_names
from .aggregate import ImageAggregates, aggregate, attach_scores, scores_report

__all__ = ["RegionScorer", "ScoreResult", "score_regions"]


class RegionScorer(Protocol):
    names: tuple[str, ...]
    labels: tuple[str, ...] | None

    def score(self, image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        ...


@dataclass(frozen=True)
class ScoreResult:
    """What :func:`score_regions` returns.

    Attributes:
        regions: the input batch with the scores attached (regions not scored keep their scores).
        names: the score names written, the main one first.
        per_region: name → values nested like ``regions.regions`` (``None`` = not scored).
        per_image: name → :class:`ImageAggregates` (lists, one entry per image).
    """

    regions: RegionBatch
    names: tuple[str, ...]
    per_region: dict[str, list[list[float | None]]]
    per_image: dict[str, ImageAggregates]

    @property
    def name(self) -> str:
        return self.names[0]

    def report(self) -> dict:
        """JSON-safe: :func:`~.aggregate.scores_report` over this scorer's names."""
        return scores_report(self.regions, self.names)


def score_regions(
    image: torch.Tensor, batch: RegionBatch, scorer: RegionScorer, *, labels: str | Sequence[str] | None = None
) -> ScoreResult:
    """Score every region (whose label the scorer takes) of every image in one scorer call.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1], the images the regions were found on.
        batch: B images' regions, each image ``(H, W)``.
        scorer: a :class:`RegionScorer`.
        labels: which labels to score (``"face,hand"``); default the scorer's own ``labels``.

    Returns:
        :class:`ScoreResult`; images without regions get ``count`` 0, never an error.

    Example:
        >>> from vitruvian.core.regions import Region
        >>> from vitruvian.core.scoring.confidence import ConfidenceScorer
        >>> batch = RegionBatch(((Region("face", (0, 0, 4, 4), 0.8),), ()), ((8, 8), (8, 8)))
        >>> score_regions(torch.rand(2, 3, 8, 8), batch, ConfidenceScorer()).per_image["confidence"].mean
        [0.8, None]
    """
    where = "score_regions"
    image = check_image(image, where)
    check_regions(batch, image, where)
    wanted = parse_names(labels) or scorer.labels
    flat = [(b, i, r) for b, i, r in batch.flat() if wanted is None or r.label in wanted]
    index = torch.tensor([b for b, _, _ in flat], dtype=torch.int64)
    raw = scorer.score(image, [r for _, _, r in flat], index) if flat else {n: torch.zeros(0) for n in scorer.names}
    missing = [n for n in scorer.names if n not in raw]
    if missing:
        raise RuntimeError(f"score_regions: scorer {type(scorer).__name__} did not return {missing}")
    per_region, out = {}, batch
    for name in scorer.names:
        values = raw[name].detach().to("cpu", torch.float64)
        if values.shape != (len(flat),):
            raise RuntimeError(
                f"score_regions: scorer {type(scorer).__name__} returned {name} of shape {tuple(values.shape)}, "
                f"expected ({len(flat)},), one per region"
            )
        nested: list[list[float | None]] = [[None] * len(per_image) for per_image in batch.regions]
        for (b, i, _), v in zip(flat, values.tolist()):
            nested[b][i] = None if v != v else float(v)  # NaN: the scorer does not apply to this region
        per_region[name] = nested
        out = attach_scores(out, name, nested)
    per_image = {name: aggregate(out, name, labels=None) for name in scorer.names}
    return ScoreResult(out, tuple(scorer.names), per_region, per_image)
