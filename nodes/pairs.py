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

from ..core.checks import check_image
from ..core.compare import before_after_grid, score_plot
from ..core.pairs import (
    MIN_SIDE, PAIRINGS, PER_IMAGE, SAME_INDEX, append_pairs, check_pairing, collect_pairs, dataset_images,
    format_value, image_scores,
)
from . import _train_host as host
from ._checks import check_output_prefix
from ._comfy import REGIONS, VitruvianNode, category, io, ui
from ._convert import image_from_core, image_to_core, mask_to_core

__all__ = ["NODES", "DEFAULT_DATASET", "MIN_SIDE"]

DEFAULT_DATASET = "vitruvian/pairs"


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
        check_pairing(pairing, regions=regions is not None, real_images=real_images is not None, where=where)
        core = dataset_images(image_to_core(image), where, "image")
        scores = None if regions is None else image_scores(core, regions, score, aggregate, labels, where=where)
        folder = host.resolve_folder(dataset, where, "dataset")
        collected = collect_pairs(
            prompt, core, scores, pairing=pairing, regions=regions, labels=labels, aggregate=aggregate,
            real_images=None if real_images is None else image_to_core(real_images), real_regions=real_regions,
            quality=None if quality is None else mask_to_core(quality)[:, 0], max_pairs=max_pairs,
            min_margin=min_margin, higher_is_better=higher_is_better, where=where)
        result = append_pairs(folder, collected.records)
        warning = [scores.warning] if scores is not None and scores.warning else []
        report = (f"{result.added} pair(s) added, {result.duplicates} duplicate(s) skipped; {result.total} in "
                  f"{folder}\n" + "\n".join([*collected.lines, *warning]))
        return io.NodeOutput(str(folder), result.added, report, ui=ui.PreviewText(report))


MAX_SCORE_NAME = 64


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
        per_image, warnings = {}, []
        for name, images, regions in (("before", before, before_regions), ("after", after, after_regions)):
            if regions is not None:
                scored = image_scores(image_to_core(images), regions, score, aggregate, labels, where=where,
                                      name=name, regions_name=f"{name}_regions")
                per_image[name] = scored.values
                warnings.append(scored.warning)
        sb, sa = per_image.get("before"), per_image.get("after")
        b, a = check_image(image_to_core(before), where, "before"), check_image(image_to_core(after), where, "after")
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
        shown = {name: [format_value(v) for v in values or []] for name, values in (("before", sb), ("after", sa))}
        report = "no scores connected" if sb is None and sa is None else (
            f"{score} {aggregate} per image: before {shown['before']}, after {shown['after']}")
        report += "".join(f"\n{w}" for w in warnings if w)
        return io.NodeOutput(grid_out, plot_out, report, ui=ui.SavedImages(saved))


NODES = [VitruvianCollectPairs, VitruvianCompare]
