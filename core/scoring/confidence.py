"""Detector confidence as a score: FairHuman's face / hand confidence metric, per region.

FairHuman (methods.md §3 f) reports the mean MediaPipe face-detection score and the mean hand
handedness score per image. Here the region's own ``score`` (whatever detector made it) becomes
``scores["confidence"]``, so the same per-image aggregates (``mean`` per label) give that metric
for any detector, and low-confidence regions can be ranked or gated like any other score.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..regions import Region

__all__ = ["ConfidenceScorer"]


class ConfidenceScorer:
    """``scores["confidence"]`` = the region's detector confidence, in [0, 1].

    Example:
        >>> ConfidenceScorer().score(None, [Region("hand", (0, 0, 2, 2), 0.7)], torch.tensor([0]))
        {'confidence': tensor([0.7000], dtype=torch.float64)}
    """

    names = ("confidence",)
    labels = None

    def score(self, image, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"confidence": torch.tensor([r.score for r in regions], dtype=torch.float64)}
