"""Preference pairs from scored images, appended to a trainer dataset (``metadata.jsonl`` + images).

Modules: :mod:`.choose` (which images win and lose: index pairs from per-image scores), :mod:`.collect`
(the pair records of a scored batch: images, face / hand boxes, quality maps, real winners; what the
Collect Pairs node runs), :mod:`.dataset` (records appended to a dataset: images stored once by content
hash, repeated pairs skipped, ``metadata.jsonl`` replaced atomically under a lock).

Shape:
    - images: ``(3, H, W)`` float in [0, 1] in a :class:`PairRecord`; batches ``(B, C, H, W)``.
    - quality maps: ``(H, W)`` float in [0, 1]; boxes: ``(x0, y0, x1, y1)`` pixels of their image.
"""

from .choose import PAIRINGS, SAME_INDEX, choose_pairs, choose_real_pairs, choose_same_index_pairs
from .collect import (
    MIN_SIDE, PER_IMAGE, Collected, ImageScores, check_pairing, collect_pairs, dataset_images, format_value,
    image_scores,
)
from .dataset import METADATA, SOURCES, AppendResult, PairRecord, append_pairs, image_hash

__all__ = [
    "PAIRINGS", "SAME_INDEX", "choose_pairs", "choose_real_pairs", "choose_same_index_pairs",
    "MIN_SIDE", "PER_IMAGE", "ImageScores", "Collected", "dataset_images", "image_scores", "check_pairing",
    "collect_pairs", "format_value",
    "SOURCES", "METADATA", "PairRecord", "AppendResult", "image_hash", "append_pairs",
]
