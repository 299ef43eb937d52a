"""Pair records from a scored image batch: what Collect Pairs writes, without ComfyUI.

:func:`image_scores` reads each image's aggregate of one region score (the regions checked against the
images, the labels and the score name against the regions). :func:`collect_pairs` chooses winners and
losers (:mod:`.choose`) and builds the :class:`~.dataset.PairRecord` s: the images, their face and hand
boxes from the regions (MPD), their patch-quality maps (PatchDPO); real images, when given, are the
winners (HG-DPO), or with pairing ``same_index`` real image i wins against image i (FaceScore's scorer
pairs, scores optional). Images written into a dataset must be at least :data:`MIN_SIDE` pixels a side.

Errors name the caller (``where``) and the input as Collect Pairs calls it (``image``, ``regions``,
``real_images``, ``real_regions``, ``quality``, ``labels``, ``score``).

Shape:
    - image, real_images: ``(B, C, H, W)`` / ``(R, C, H', W')`` float in [0, 1], C = 1, 3 or 4
      (``core.checks.check_image``); quality: ``(B, H, W)`` float in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..checks import check_image, check_names, check_regions
from ..errors import NodeInputError
from ..regions.names import SCORE
from ..scoring.aggregate import aggregate as aggregate_scores
from .choose import PAIRINGS, SAME_INDEX, choose_pairs, choose_real_pairs, choose_same_index_pairs
from .dataset import PairRecord

__all__ = ["MIN_SIDE", "PER_IMAGE", "ImageScores", "Collected", "dataset_images", "image_scores", "check_pairing",
           "collect_pairs", "format_value"]

#: The smallest image side written into a dataset: Train's smallest ``resolution``.
MIN_SIDE = 64
#: How a region score becomes one value per image (``min``: an image is as good as its worst region).
PER_IMAGE = ("min", "mean", "max")


def format_value(v: float | None) -> str:
    """A score in a report line: 4 significant digits, ``–`` for none."""
    return "–" if v is None else f"{v:.4g}"


@dataclass(frozen=True)
class ImageScores:
    """``values``: one aggregate per image (None: no region of it carries the score); ``score``: the score
    name; ``warning``: a ``"warning: …"`` line when no image carries it, else ``""``."""

    values: list
    score: str
    warning: str = ""


@dataclass
class Collected:
    """What :func:`collect_pairs` chose: the ``records`` to append and one report line per record."""

    records: list = field(default_factory=list)
    lines: list = field(default_factory=list)


def dataset_images(image, where: str, name: str = "image") -> torch.Tensor:
    """``image`` checked (``core.checks.check_image``) as ``(B, 3, H, W)``, refusing images too small to
    train on (a 1×1 "winner" is no preference): NodeInputError naming ``name``."""
    core = check_image(image, where, name)
    h, w = (int(v) for v in core.shape[-2:])
    if min(h, w) < MIN_SIDE:
        raise NodeInputError(where, name, f"images of at least {MIN_SIDE}×{MIN_SIDE} pixels are expected in a "
                             f"training dataset (Train's smallest resolution), got {w}×{h}; feed the full-size "
                             f"images, or crops of at least {MIN_SIDE} pixels (Crop Regions' target_size)")
    return core


def _score_name(where: str, regions, score) -> str:
    """The one score name typed into ``score``; NodeInputError when it is empty, several or unknown."""
    names = check_names(where, "score", regions, score, SCORE)
    if names is None or len(names) > 1:
        raise NodeInputError(where, "score", f"one region score name is expected (e.g. sharpness; link Score "
                             f"Regions' score_name), got {str(score)[:80]!r}")
    return names[0]


def image_scores(image, regions, score, aggregate: str = "mean", labels=None, *, where: str,
                 name: str = "image", regions_name: str = "regions") -> ImageScores:
    """Each image's ``aggregate`` (one of :data:`PER_IMAGE`) of region score ``score`` over the regions
    labelled ``labels`` (a comma list; empty = all). ``regions`` must describe ``image`` ``(B, C, H, W)``
    (``name`` and ``regions_name`` are the inputs' names in messages); a label or score name the regions
    cannot carry is a NodeInputError, a score no image carries a warning.

    Example:
        >>> from vitruvian.core.regions import Region, RegionBatch
        >>> batch = RegionBatch(((Region("face", (0, 0, 4, 4), 0.9, scores={"q": 0.5}),), ()), ((8, 8), (8, 8)))
        >>> image_scores(torch.zeros(2, 3, 8, 8), batch, "q", where="f")
        ImageScores(values=[0.5, None], score='q', warning='')
    """
    core = check_image(image, where, name)
    check_regions(regions, core, where, regions_name, name)
    wanted = check_names(where, "labels", regions, labels)
    score = _score_name(where, regions, score)
    values = aggregate_scores(regions, score, labels=wanted).get(aggregate)
    warning = ""
    if all(v is None for v in values):
        warning = (f"warning: no {name} has a region{' labelled ' + ' or '.join(wanted) if wanted else ''} with a "
                   f"{score} score")
    return ImageScores(values, score, warning)


def check_pairing(pairing: str, *, regions: bool, real_images: bool, where: str) -> None:
    """ValueError unless ``pairing`` can run with what is connected: same_index needs real images, every
    other pairing scored regions."""
    if pairing not in (*PAIRINGS, SAME_INDEX):
        raise ValueError(f"{where}: pairing must be one of {', '.join((*PAIRINGS, SAME_INDEX))}, got {pairing!r}")
    if pairing == SAME_INDEX and not real_images:
        raise ValueError(f"{where}: pairing same_index pairs real image i with image i, got no real_images; "
                         "connect the good images (e.g. the real crops) to real_images")
    if not regions and pairing != SAME_INDEX:
        raise ValueError(f"{where}: regions must be the scored regions of image (Score Regions) for pairing "
                         f"{pairing!r}, got none; connect them, or use pairing same_index with real_images")


def _quality(quality, core: torch.Tensor, where: str) -> torch.Tensor | None:
    """``quality`` ``(B, H, W)`` checked against the images ``core`` ``(B, 3, H, W)``."""
    if quality is None:
        return None
    q = quality
    if q.shape[0] != core.shape[0] or not torch.isfinite(q).all() or q.min() < 0 or q.max() > 1:
        raise NodeInputError(where, "quality", f"one mask per image ({core.shape[0]}) with values in [0, 1] "
                             f"is expected, got {q.shape[0]} mask(s) in [{float(q.min())}, {float(q.max())}]")
    if tuple(q.shape[-2:]) != tuple(core.shape[-2:]):
        raise NodeInputError(where, "quality", f"quality maps of the images' size {core.shape[-1]}×"
                             f"{core.shape[-2]} are expected, got {q.shape[-1]}×{q.shape[-2]}; make the maps "
                             "from these images (or scale them to the images first)")
    return q


def _boxes(regions, i: int, label: str) -> list:
    """The boxes labelled ``label`` in image ``i`` of ``regions`` (none without regions)."""
    return [] if regions is None else [list(r.box) for r in regions.regions[i] if r.label == label]


def _record(prompt: str, chosen, rejected, c: int, r: int, *, real: bool, q) -> PairRecord:
    """The record of image ``c`` of ``chosen = (images, regions)`` against image ``r`` of ``rejected``."""
    (c_images, c_regions), (r_images, r_regions) = chosen, rejected
    return PairRecord(
        prompt, c_images[c], r_images[r], chosen_source="real" if real else "generated",
        face_boxes={"chosen": _boxes(c_regions, c, "face"), "rejected": _boxes(r_regions, r, "face")},
        hand_boxes={"chosen": _boxes(c_regions, c, "hand"), "rejected": _boxes(r_regions, r, "hand")},
        chosen_quality=None if q is None or real else q[c], rejected_quality=None if q is None else q[r])


def collect_pairs(prompt: str, image, scores: ImageScores | None, *, pairing: str = "extremes", regions=None,
                  real_images=None, real_regions=None, quality=None, labels=None, aggregate: str = "mean",
                  max_pairs: int = 0, min_margin: float = 0.0, higher_is_better: bool = True,
                  where: str = "collect_pairs") -> Collected:
    """The pair records of one batch, and a report line for each.

    Args:
        prompt: the prompt the batch was generated from.
        image: ``(B, C, H, W)``, the generated images (:func:`dataset_images`).
        scores: :func:`image_scores` of ``image`` on ``regions`` (None: not scored, same_index only).
        pairing: one of :data:`.choose.PAIRINGS` or ``same_index`` (:func:`check_pairing`).
        regions: the generated images' regions (their face / hand boxes), or None.
        real_images: ``(R, C, H', W')`` real photos, the winners; ``real_regions`` their regions (boxes, and
            with same_index their ``scores.score`` over ``labels``, aggregated by ``aggregate``, so a pair the
            score does not prefer is dropped).
        quality: ``(B, H, W)`` patch-quality maps of the generated images, or None.
        max_pairs, min_margin, higher_is_better: as :func:`.choose.choose_pairs`.

    Returns:
        :class:`Collected`; nothing is written (:func:`.dataset.append_pairs` does).
    """
    check_pairing(pairing, regions=regions is not None, real_images=real_images is not None, where=where)
    core = dataset_images(image, where, "image")
    values = scores.values if scores is not None else [None] * core.shape[0]
    q = _quality(quality, core, where)
    generated = (core, regions)
    if real_images is None:
        out = Collected()
        for w, l in choose_pairs(values, pairing=pairing, max_pairs=max_pairs, min_margin=min_margin,
                                 higher_is_better=higher_is_better):
            out.records.append(_record(prompt, generated, generated, w, l, real=False, q=q))
            out.lines.append(f"image {w} ({format_value(values[w])}) > image {l} ({format_value(values[l])})")
        return out
    real = dataset_images(real_images, where, "real_images")
    if real_regions is not None:
        check_regions(real_regions, real, where, "real_regions", "real_images")
    if pairing != SAME_INDEX:
        out = Collected()
        for r, g in choose_real_pairs(values, real.shape[0], max_pairs=max_pairs, higher_is_better=higher_is_better):
            out.records.append(_record(prompt, (real, real_regions), generated, r, g, real=True, q=q))
            out.lines.append(f"real {r} > image {g} ({format_value(values[g])})")
        return out
    if real.shape[0] != core.shape[0]:
        raise ValueError(f"{where}: real_images must hold one image per image ({core.shape[0]}) for pairing "
                         f"same_index (real i vs image i), got {real.shape[0]}; crop both from the same "
                         "regions in the same order")
    real_values = None
    if scores is not None and real_regions is not None:
        wanted = check_names(where, "labels", real_regions, labels)
        real_values = aggregate_scores(real_regions, scores.score, labels=wanted).get(aggregate)
        real_values = None if all(v is None for v in real_values) else real_values  # there for their boxes only

    def note(v: Sequence | None, i: int) -> str:
        return "" if v is None or v[i] is None else f" ({format_value(v[i])})"

    out = Collected()
    for r, g in choose_same_index_pairs(values, real.shape[0], real_scores=real_values, max_pairs=max_pairs,
                                        min_margin=min_margin, higher_is_better=higher_is_better):
        out.records.append(_record(prompt, (real, real_regions), generated, r, g, real=True, q=q))
        out.lines.append(f"real {r}{note(real_values, r)} > image {g}{note(values, g)}")
    return out
