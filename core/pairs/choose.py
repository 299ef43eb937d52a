"""Which images of a scored batch win and which lose: index pairs from per-image scores.

:func:`choose_pairs` turns one batch's per-image scores into (winner, loser) index pairs;
:func:`choose_real_pairs` makes real photos the winners against the worst generated images (HG-DPO);
:func:`choose_same_index_pairs` pairs real image i with generated image i, e.g. a real face crop with
the same crop inpainted at low quality (the FaceScore scorer's pairs). Scores are plain numbers, one per
image (None: not scored), best = highest unless ``higher_is_better`` is False.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["PAIRINGS", "SAME_INDEX", "choose_pairs", "choose_real_pairs", "choose_same_index_pairs"]

#: ``extremes``: i-th best against i-th worst (disjoint pairs); ``best_vs_rest``: the best against each other.
PAIRINGS = ("extremes", "best_vs_rest")
#: Real image i against generated image i (:func:`choose_same_index_pairs`); needs real images.
SAME_INDEX = "same_index"


def _ranked(scores: Sequence[float | None], higher_is_better: bool, where: str) -> list[int]:
    """Indices of the scored images, best first (ties keep batch order)."""
    values = list(scores)
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{where}: scores must be finite numbers or None, got {v!r} at index {i}")
    scored = [i for i, v in enumerate(values) if v is not None]
    return sorted(scored, key=lambda i: -values[i] if higher_is_better else values[i])


def choose_pairs(scores: Sequence[float | None], *, pairing: str = "extremes", max_pairs: int = 0,
                 min_margin: float = 0.0, higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(winner, loser)`` batch indices from per-image scores (None = not scored: never paired).

    Args:
        scores: one value per image of the batch.
        pairing: one of :data:`PAIRINGS`.
        max_pairs: at most this many pairs (0 = no limit), the widest margins first.
        min_margin: a pair's scores must differ by at least this much (and by more than 0).
        higher_is_better: False when a lower score is better (an error, a distance).

    Example:
        >>> choose_pairs([0.2, 0.9, 0.5, 0.1])
        [(1, 3), (2, 0)]
        >>> choose_pairs([0.2, 0.9, 0.5, 0.1], pairing="best_vs_rest", min_margin=0.5)
        [(1, 3), (1, 0)]
    """
    where = "choose_pairs"
    if pairing not in PAIRINGS:
        raise ValueError(f"{where}: pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    if not (isinstance(min_margin, (int, float)) and min_margin >= 0):
        raise ValueError(f"{where}: min_margin must be a number >= 0, got {min_margin!r}")
    ranked = _ranked(scores, higher_is_better, where)
    values = list(scores)
    if pairing == "extremes":
        candidates = [(ranked[i], ranked[-1 - i]) for i in range(len(ranked) // 2)]
    else:
        candidates = [(ranked[0], j) for j in reversed(ranked[1:])] if ranked else []
    pairs = [(w, l) for w, l in candidates if abs(values[w] - values[l]) >= min_margin and values[w] != values[l]]
    return pairs[:max_pairs] if max_pairs else pairs


def choose_real_pairs(scores: Sequence[float | None], n_real: int, *, max_pairs: int = 0,
                      higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(real index, generated index)``: real photos win against the generated images, worst first.

    Real images are used in turn (real 0, 1, …, 0, 1, …). Generated images without a score are losers
    only when no image has a score. ``max_pairs`` 0 = one pair per (scored) generated image.

    Example:
        >>> choose_real_pairs([0.2, 0.9, 0.5], 2, max_pairs=2)
        [(0, 0), (1, 2)]
    """
    where = "choose_real_pairs"
    if not isinstance(n_real, int) or n_real < 1:
        raise ValueError(f"{where}: n_real must be >= 1 (connect real images), got {n_real!r}")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    ranked = _ranked(scores, higher_is_better, where)
    losers = list(reversed(ranked)) if ranked else list(range(len(scores)))
    if max_pairs:
        losers = losers[:max_pairs]
    return [(k % n_real, j) for k, j in enumerate(losers)]


def choose_same_index_pairs(scores: Sequence[float | None], n_real: int, *,
                            real_scores: Sequence[float | None] | None = None, max_pairs: int = 0,
                            min_margin: float = 0.0, higher_is_better: bool = True) -> list[tuple[int, int]]:
    """``(i, i)``: real image i wins against generated image i (the same face, degraded).

    Without scores (every entry None) every index is paired, in order. With the generated images'
    scores, unscored images are not paired and the worst come first, so ``max_pairs`` keeps the most
    degraded. Where ``real_scores`` also scores real image i, the pair is kept only when the real image
    is better by more than 0 and by at least ``min_margin`` (a degradation the score cannot see is no
    preference); ``min_margin`` > 0 needs ``real_scores``.

    Example:
        >>> choose_same_index_pairs([None, None, None], 3)
        [(0, 0), (1, 1), (2, 2)]
        >>> choose_same_index_pairs([0.5, 0.1, None], 3, max_pairs=1)
        [(1, 1)]
        >>> choose_same_index_pairs([0.5, 0.1, 0.3], 3, real_scores=[0.9, 0.2, 0.3], min_margin=0.2)
        [(0, 0)]
    """
    where = "choose_same_index_pairs"
    values = list(scores)
    if not isinstance(n_real, int) or n_real != len(values):
        raise ValueError(f"{where}: n_real must equal the number of generated images ({len(values)}): same_index "
                         f"pairs real image i with generated image i, got {n_real!r}; give one real image per "
                         "generated one, in the same order")
    if not isinstance(max_pairs, int) or max_pairs < 0:
        raise ValueError(f"{where}: max_pairs must be an int >= 0 (0 = no limit), got {max_pairs!r}")
    if not (isinstance(min_margin, (int, float)) and min_margin >= 0):
        raise ValueError(f"{where}: min_margin must be a number >= 0, got {min_margin!r}")
    if min_margin and real_scores is None:
        raise ValueError(f"{where}: min_margin compares real and generated scores, got min_margin {min_margin!r} "
                         "without real_scores; score the real images too, or set min_margin to 0")
    ranked = _ranked(values, higher_is_better, where)
    order = list(reversed(ranked)) if ranked else list(range(len(values)))
    if real_scores is not None:
        real = list(real_scores)
        if len(real) != len(values):
            raise ValueError(f"{where}: real_scores must hold one score (or None) per real image ({len(values)}), "
                             f"got {len(real)}")
        _ranked(real, higher_is_better, where + " real_scores")
        sign = 1.0 if higher_is_better else -1.0

        def better(i: int) -> bool:
            if real[i] is None or values[i] is None:
                return True  # nothing to compare: the pair stands on how it was made
            margin = sign * (real[i] - values[i])
            return margin > 0 and margin >= min_margin

        order = [i for i in order if better(i)]
    if max_pairs:
        order = order[:max_pairs]
    return [(i, i) for i in order]
