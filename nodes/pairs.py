"""Preference data in and out of training: collect pairs from a scored batch, compare before and after.

- **Collect Pairs** chooses winners and losers in a batch by a per-image aggregate of a region score and
  appends them to a trainer dataset (``core.pairs``: images stored once by content hash, records appended
  atomically, repeated pairs skipped). Real images, when connected, are the winners (HG-DPO); face and
  hand boxes come from the regions (MPD); an optional MASK batch gives patch-quality maps (PatchDPO).
  Pairing ``same_index`` pairs real image i with image i, scores optional: real face crops against the
  same crops inpainted at low quality make the ``train-scorer`` objective's pairs (FaceScore).
- **Compare** draws the before/after grid of the same prompts and seeds and the score distributions
  (``core.compare``) and saves both.

Datasets live under ComfyUI's output folder by default; a path outside the output, input and temp
folders, or one the OS refuses (too long, NUL, a file where a folder should be), is refused. Images
written into a dataset must be at least :data:`MIN_SIDE` pixels a side (Train's smallest resolution)
and quality maps the size of their images; labels or a score the regions cannot carry are errors,
while a batch where no image carries the score adds no pair, with a warning.
"""

from __future__ import annotations

import torch

from ..core.compare import before_after_grid, score_plot
from ..core.pairs import (
    PAIRINGS, SAME_INDEX, PairRecord, append_pairs, choose_pairs, choose_real_pairs, choose_same_index_pairs,
)
from ..core.regions import SCORE, RegionBatch
from ..core.scoring import aggregate as aggregate_scores
from . import _train_host as host
from ._checks import NodeInputError, check_names, check_output_prefix
from ._comfy import REGIONS, VitruvianNode, category, io, ui
from ._convert import image_from_core, image_to_core, mask_to_core

__all__ = ["NODES", "DEFAULT_DATASET", "MIN_SIDE"]

PER_IMAGE = ("min", "mean", "max")
DEFAULT_DATASET = "vitruvian/pairs"
#: The smallest image side Collect Pairs writes into a dataset: Train's smallest ``resolution``.
MIN_SIDE = 64


def _image(image, where: str, name: str):
    """A ComfyUI IMAGE input → ``(B, 3, H, W)`` in [0, 1], with the node's message for what is wrong."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a ComfyUI IMAGE tensor (B, H, W, C), got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 3, 4) or min(image.shape[1:3]) < 1:
        raise ValueError(f"{where}: {name} must be a non-empty ComfyUI IMAGE (B, H, W, C) with C = 1, 3 or 4, got "
                         f"shape {tuple(image.shape)}")
    if not image.is_floating_point() or not torch.isfinite(image).all():
        raise ValueError(f"{where}: {name} must hold finite float values in [0, 1], got dtype {image.dtype}"
                         + ("" if not image.is_floating_point() else " with NaN or inf"))
    core = image_to_core(image)
    return core[:, :3] if core.shape[1] >= 3 else core.expand(-1, 3, -1, -1)


def _dataset_image(image, where: str, name: str) -> torch.Tensor:
    """:func:`_image`, refusing images too small to train on (a 1×1 "winner" is no preference)."""
    core = _image(image, where, name)
    h, w = (int(v) for v in core.shape[-2:])
    if min(h, w) < MIN_SIDE:
        raise NodeInputError(where, name, f"images of at least {MIN_SIDE}×{MIN_SIDE} pixels are expected in a "
                             f"training dataset (Train's smallest resolution), got {w}×{h}; feed the full-size "
                             f"images, or crops of at least {MIN_SIDE} pixels (Crop Regions' target_size)")
    return core


def _score_name(where: str, regions: RegionBatch, score) -> str:
    """The one score name typed into ``score``; NodeInputError when it is empty, several or one the regions
    cannot carry."""
    names = check_names(where, "score", regions, score, SCORE)
    if names is None or len(names) > 1:
        raise NodeInputError(where, "score", f"one region score name is expected (e.g. sharpness; link Score "
                             f"Regions' score_name), got {str(score)[:80]!r}")
    return names[0]


def _scores(image, regions, score: str, aggregate: str, labels: str, where: str,
            name: str = "image", *, dataset: bool = False) -> tuple[list, object, str, str]:
    """Per-image values of ``score`` from scored REGIONS of the same batch; ``(values, core images, warning,
    score name)``, the warning non-empty when no image carries the score (``dataset``: the images are to be
    written)."""
    core = (_dataset_image if dataset else _image)(image, where, name)
    if len(regions) != core.shape[0] or any(tuple(s) != tuple(core.shape[2:]) for s in regions.image_sizes):
        raise ValueError(f"{where}: regions must belong to this {name} batch ({core.shape[0]} image(s) of "
                         f"{core.shape[3]}×{core.shape[2]}), got regions of {len(regions)} image(s) of sizes "
                         f"{sorted({(w, h) for h, w in regions.image_sizes})}; score the regions of this same IMAGE batch")
    wanted = check_names(where, "labels", regions, labels)
    score = _score_name(where, regions, score)
    values = aggregate_scores(regions, score, labels=wanted).get(aggregate)
    warning = ""
    if all(v is None for v in values):
        warning = (f"warning: no {name} has a region{' labelled ' + ' or '.join(wanted) if wanted else ''} with a "
                   f"{score} score")
    return values, core, warning, score


def _real_scores(real_regions, real: torch.Tensor, score: str, aggregate: str, labels: str, where: str) -> list | None:
    """Per-image values of ``score`` (a name checked on the generated images' regions) on the real images'
    regions, or None when they carry none (they may be there only for their boxes)."""
    if any(tuple(s) != tuple(real.shape[2:]) for s in real_regions.image_sizes):
        raise ValueError(f"{where}: real_regions must belong to real_images ({real.shape[3]}×{real.shape[2]}), got "
                         f"regions of sizes {sorted({(w, h) for h, w in real_regions.image_sizes})}")
    wanted = check_names(where, "labels", real_regions, labels)
    values = aggregate_scores(real_regions, score, labels=wanted).get(aggregate)
    return None if all(v is None for v in values) else values


def _score_note(values: list | None, i: int) -> str:
    return "" if values is None or values[i] is None else f" ({_fmt(values[i])})"


def _boxes(regions: RegionBatch | None, i: int, label: str) -> list:
    if regions is None:
        return []
    return [list(r.box) for r in regions.regions[i] if r.label == label]


class VitruvianCollectPairs(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianCollectPairs",
            display_name="Collect Preference Pairs (Vitruvian)",
            category=category("train"),
            description="Choose winners and losers in a batch by a region score and append them to a trainer "
            "dataset (metadata.jsonl + images) with their face/hand boxes and optional quality maps. Real images, "
            "when connected, are the winners (HG-DPO); pairing same_index pairs real image i with image i (e.g. a "
            "real face crop with the same crop inpainted at low quality), scores optional. Identical images are "
            "stored once; repeated pairs are skipped.",
            inputs=[
                io.Image.Input("image", tooltip=f"The generated batch (at least {MIN_SIDE} pixels a side)."),
                REGIONS.Input("regions", optional=True,
                              tooltip="Scored regions of the same images (Score Regions); only pairing same_index "
                              "works without them."),
                io.String.Input("score", default="sharpness", tooltip="Score name (link Score Regions' score_name)."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt the batch was generated from."),
                io.String.Input("dataset", default=DEFAULT_DATASET,
                                tooltip="Dataset folder, relative to the output folder (or inside output/input/temp)."),
                io.Combo.Input("aggregate", options=list(PER_IMAGE), default="mean",
                               tooltip="min: an image is as good as its worst region."),
                io.String.Input("labels", default="", tooltip="Comma list of region labels to score over; empty = all."),
                io.Combo.Input("pairing", options=[*PAIRINGS, SAME_INDEX], default="extremes",
                               tooltip="extremes: i-th best vs i-th worst; best_vs_rest: the best vs each other image; "
                               "same_index: real image i vs image i (needs real_images, one per image)."),
                io.Int.Input("max_pairs", default=0, min=0, max=4096, tooltip="0 = as many as the pairing gives."),
                io.Float.Input("min_margin", default=0.0, min=0.0, max=1e9, step=0.001,
                               tooltip="Skip pairs whose scores differ by less."),
                io.Boolean.Input("higher_is_better", default=True),
                io.Image.Input("real_images", optional=True,
                               tooltip="Real photos for the same prompt: they win against the worst generated images "
                               f"(same_index: real image i against image i); at least {MIN_SIDE} pixels a side."),
                REGIONS.Input("real_regions", optional=True, tooltip="Regions of the real images (their face/hand boxes)."),
                io.Mask.Input("quality", optional=True, tooltip="Patch-quality maps of the generated images (PatchDPO), "
                              "one per image, at the images' size."),
            ],
            outputs=[io.String.Output(display_name="data"), io.Int.Output(display_name="added"),
                     io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, score, prompt, dataset, aggregate, labels, pairing, max_pairs, min_margin,
                higher_is_better, regions=None, real_images=None, real_regions=None, quality=None) -> io.NodeOutput:
        where = "VitruvianCollectPairs"
        if pairing == SAME_INDEX and real_images is None:
            raise ValueError(f"{where}: pairing same_index pairs real image i with image i, got no real_images; "
                             "connect the good images (e.g. the real crops) to real_images")
        if regions is None and pairing != SAME_INDEX:
            raise ValueError(f"{where}: regions must be the scored regions of image (Score Regions) for pairing "
                             f"{pairing!r}, got none; connect them, or use pairing same_index with real_images")
        warning, score_name = "", None
        if regions is None:
            core = _dataset_image(image, where, "image")
            values = [None] * core.shape[0]
        else:
            values, core, warning, score_name = _scores(image, regions, score, aggregate, labels, where, dataset=True)
        folder = host.resolve_folder(dataset, where, "dataset")
        q = None
        if quality is not None:
            q = mask_to_core(quality)[:, 0]
            if q.shape[0] != core.shape[0] or not torch.isfinite(q).all() or q.min() < 0 or q.max() > 1:
                raise NodeInputError(where, "quality", f"one mask per image ({core.shape[0]}) with values in [0, 1] "
                                     f"is expected, got {q.shape[0]} mask(s) in [{float(q.min())}, {float(q.max())}]")
            if tuple(q.shape[-2:]) != tuple(core.shape[-2:]):
                raise NodeInputError(where, "quality", f"quality maps of the images' size {core.shape[-1]}×"
                                     f"{core.shape[-2]} are expected, got {q.shape[-1]}×{q.shape[-2]}; make the maps "
                                     "from these images (or scale them to the images first)")
        records, lines = [], []
        if real_images is not None:
            real = _dataset_image(real_images, where, "real_images")
            if real_regions is not None and len(real_regions) != real.shape[0]:
                raise ValueError(f"{where}: real_regions describe {len(real_regions)} image(s), real_images has "
                                 f"{real.shape[0]}")
        if pairing == SAME_INDEX:
            if real.shape[0] != core.shape[0]:
                raise ValueError(f"{where}: real_images must hold one image per image ({core.shape[0]}) for pairing "
                                 f"same_index (real i vs image i), got {real.shape[0]}; crop both from the same "
                                 "regions in the same order")
            real_values = None
            if regions is not None and real_regions is not None:
                real_values = _real_scores(real_regions, real, score_name, aggregate, labels, where)
            for r, g in choose_same_index_pairs(values, real.shape[0], real_scores=real_values, max_pairs=max_pairs,
                                                min_margin=min_margin, higher_is_better=higher_is_better):
                records.append(PairRecord(
                    prompt, real[r], core[g], chosen_source="real",
                    face_boxes={"chosen": _boxes(real_regions, r, "face"), "rejected": _boxes(regions, g, "face")},
                    hand_boxes={"chosen": _boxes(real_regions, r, "hand"), "rejected": _boxes(regions, g, "hand")},
                    rejected_quality=None if q is None else q[g]))
                lines.append(f"real {r}{_score_note(real_values, r)} > image {g}{_score_note(values, g)}")
        elif real_images is not None:
            for r, g in choose_real_pairs(values, real.shape[0], max_pairs=max_pairs, higher_is_better=higher_is_better):
                records.append(PairRecord(
                    prompt, real[r], core[g], chosen_source="real",
                    face_boxes={"chosen": _boxes(real_regions, r, "face"), "rejected": _boxes(regions, g, "face")},
                    hand_boxes={"chosen": _boxes(real_regions, r, "hand"), "rejected": _boxes(regions, g, "hand")},
                    rejected_quality=None if q is None else q[g]))
                lines.append(f"real {r} > image {g} ({_fmt(values[g])})")
        else:
            for w, l in choose_pairs(values, pairing=pairing, max_pairs=max_pairs, min_margin=min_margin,
                                     higher_is_better=higher_is_better):
                records.append(PairRecord(
                    prompt, core[w], core[l],
                    face_boxes={"chosen": _boxes(regions, w, "face"), "rejected": _boxes(regions, l, "face")},
                    hand_boxes={"chosen": _boxes(regions, w, "hand"), "rejected": _boxes(regions, l, "hand")},
                    chosen_quality=None if q is None else q[w], rejected_quality=None if q is None else q[l]))
                lines.append(f"image {w} ({_fmt(values[w])}) > image {l} ({_fmt(values[l])})")
        result = append_pairs(folder, records)
        report = (f"{result.added} pair(s) added, {result.duplicates} duplicate(s) skipped; {result.total} in "
                  f"{folder}\n" + "\n".join([*lines, *([warning] if warning else [])]))
        return io.NodeOutput(str(folder), result.added, report, ui=ui.PreviewText(report))


MAX_SCORE_NAME = 64


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}"


class VitruvianCompare(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianCompare",
            display_name="Compare Before / After (Vitruvian)",
            category=category("train"),
            description="A before/after grid of the same prompts and seeds, and a plot of the per-image score "
            "distributions before vs after training. Both are outputs and are saved.",
            inputs=[
                io.Image.Input("before"),
                io.Image.Input("after"),
                io.String.Input("score", default="sharpness", tooltip="Score name the regions carry."),
                io.Combo.Input("aggregate", options=list(PER_IMAGE), default="mean"),
                io.String.Input("labels", default="", tooltip="Comma list of region labels; empty = all."),
                io.Boolean.Input("higher_is_better", default=True),
                io.String.Input("filename_prefix", default="vitruvian/compare"),
                REGIONS.Input("before_regions", optional=True, tooltip="Scored regions of the before images."),
                REGIONS.Input("after_regions", optional=True, tooltip="Scored regions of the after images."),
            ],
            outputs=[io.Image.Output(display_name="grid"), io.Image.Output(display_name="plot"),
                     io.String.Output(display_name="report")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, before, after, score, aggregate, labels, higher_is_better, filename_prefix,
                before_regions=None, after_regions=None) -> io.NodeOutput:
        where = "VitruvianCompare"
        check_output_prefix(where, "filename_prefix", filename_prefix)
        if len(score) > MAX_SCORE_NAME:
            raise ValueError(f"{where}: score must be a score name (at most {MAX_SCORE_NAME} characters), got "
                             f"{len(score)} characters; type the name the regions carry, e.g. 'facescore'")
        sb = sa = None
        warnings = []
        if before_regions is not None:
            sb, _, warning, _ = _scores(before, before_regions, score, aggregate, labels, where, "before")
            warnings.append(warning)
        if after_regions is not None:
            sa, _, warning, _ = _scores(after, after_regions, score, aggregate, labels, where, "after")
            warnings.append(warning)
        b, a = _image(before, where, "before"), _image(after, where, "after")
        if b.shape != a.shape:
            raise ValueError(f"{where}: before and after must be the same prompts and seeds at the same size, got "
                             f"{tuple(before.shape)} and {tuple(after.shape)}")
        grid = before_after_grid(b, a, scores_before=sb, scores_after=sa)
        name = score.strip() if isinstance(score, str) and score.strip() else "score"
        plot = score_plot(sb or [], sa or [], name=name, higher_is_better=higher_is_better)
        grid_out, plot_out = image_from_core(grid[None]), image_from_core(plot[None])
        saved = []
        for suffix, img in (("grid", grid_out), ("scores", plot_out)):
            saved += ui.ImageSaveHelper.save_images(img, f"{filename_prefix}_{suffix}", io.FolderType.output, cls)
        report = "no scores connected" if sb is None and sa is None else (
            f"{score} {aggregate} per image: before {[_fmt(v) for v in sb or []]}, after {[_fmt(v) for v in sa or []]}")
        report += "".join(f"\n{w}" for w in warnings if w)
        return io.NodeOutput(grid_out, plot_out, report, ui=ui.SavedImages(saved))


NODES = [VitruvianCollectPairs, VitruvianCompare]
