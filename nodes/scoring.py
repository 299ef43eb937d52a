"""Scoring nodes: score regions (sharpness, detector confidence, hand plausibility, FaceScore, any ONNX
crop scorer), rank a batch of images by a per-image aggregate, and preview scored regions.

Thin adapters over :mod:`vitruvian.core.scoring`. Scores stay per region inside REGIONS; the nodes
also give per-image aggregates as a FLOAT list and a JSON report, and show the numbers on the node.

Model files: ``models/vitruvian/scorers`` (folder name ``vitruvian_scorers``): FaceScore weights
(``FS_model.pt`` or a ``.safetensors`` conversion, listed as ``facescore:<file>``) and ``.onnx``
crop scorers (listed as ``onnx:<file>``).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import replace

import torch

from ..core.checks import check_image, check_regions
from ..core.errors import ModelNotFoundError
from ..core.regions import SCORE, RegionBatch, absent_warning
from ..core.scoring import (
    AGGREGATES,
    NORMALIZATIONS,
    ConfidenceScorer,
    FaceScorer,
    HandScorer,
    OnnxScorer,
    SharpnessScorer,
    load_facescore,
    score_regions,
)
from ..core.scoring import aggregate as aggregate_scores
from ..core.scoring.preview import draw_regions, format_score
from ._checks import NodeInputError, check_names
from ._comfy import REGIONS, VitruvianNode, category, io, ui
from ._convert import image_from_core, image_to_core

__all__ = ["NODES", "scorer_options", "resolve_scorer", "register_folders"]

SCORERS_FOLDER = "vitruvian_scorers"
SCORER_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors", ".onnx")
BUILTIN_SCORERS = ("sharpness", "confidence", "hand plausibility")
FACESCORE_PREFIX, ONNX_PREFIX = "facescore:", "onnx:"
ORDERS = ("descending", "ascending")
MISSING = ("last", "drop")

_cache_lock = threading.Lock()
_facescore_cache: dict[tuple, object] = {}


# ----------------------------------------------------------------------------------- model files


def register_folders() -> None:
    """Register ``vitruvian_scorers`` → ``models/vitruvian/scorers`` (weights and ``.onnx`` files)."""
    import folder_paths  # ComfyUI's

    folder_paths.add_model_folder_path(SCORERS_FOLDER, os.path.join(folder_paths.models_dir, "vitruvian", "scorers"))
    paths, _ = folder_paths.folder_names_and_paths[SCORERS_FOLDER]
    folder_paths.folder_names_and_paths[SCORERS_FOLDER] = (paths, set(SCORER_EXTENSIONS))


def _searched() -> list[str]:
    import folder_paths

    register_folders()
    return folder_paths.get_folder_paths(SCORERS_FOLDER)


def scorer_options() -> list[str]:
    """The built-in scorers, then ``facescore:<file>`` for weights and ``onnx:<file>`` for ONNX files."""
    import folder_paths

    register_folders()
    files = folder_paths.get_filename_list(SCORERS_FOLDER)
    weights = [FACESCORE_PREFIX + f for f in files if not f.lower().endswith(".onnx")]
    onnx = [ONNX_PREFIX + f for f in files if f.lower().endswith(".onnx")]
    return list(BUILTIN_SCORERS) + sorted(weights) + sorted(onnx)


def resolve_scorer(option: str) -> str:
    """Absolute path of a ``facescore:`` / ``onnx:`` option's file; ModelNotFoundError listing the folders."""
    name = option.split(":", 1)[1] if ":" in option else option
    for root in _searched():
        path = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([os.path.realpath(root), path]) == os.path.realpath(root) and os.path.isfile(path):
            return path
    raise ModelNotFoundError(
        f"VitruvianScoreRegions: scorer file {name!r} (put FaceScore weights or .onnx scorers in "
        "models/vitruvian/scorers, then refresh)",
        _searched(),
    )


def _check_scorer_option(scorer) -> str | None:
    if scorer in BUILTIN_SCORERS:
        return None
    if not isinstance(scorer, str) or not scorer.startswith((FACESCORE_PREFIX, ONNX_PREFIX)):
        return (f"VitruvianScoreRegions: scorer must be one of {', '.join(BUILTIN_SCORERS)}, "
                f"facescore:<file> or onnx:<file>, got {scorer!r}")
    if scorer.startswith(ONNX_PREFIX) and not scorer.lower().endswith(".onnx"):
        return f"VitruvianScoreRegions: an onnx: scorer must be a .onnx file, got {scorer!r}"
    try:
        resolve_scorer(scorer)
    except ModelNotFoundError as e:
        return str(e)
    return None


def _facescore(path: str, device: torch.device):
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size, str(device))
    with _cache_lock:
        model = _facescore_cache.get(key)
        if model is None:
            _facescore_cache.clear()  # one FaceScore model at a time (ViT-L: 1.8 GB in float32)
            model = _facescore_cache[key] = load_facescore(path, device=device)
    return model


def _device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def _build_scorer(scorer: str, batch_size: int, normalization: str, size: int):
    if scorer == "sharpness":
        return SharpnessScorer()
    if scorer == "confidence":
        return ConfidenceScorer()
    if scorer == "hand plausibility":
        return HandScorer()
    path = resolve_scorer(scorer)
    if scorer.startswith(FACESCORE_PREFIX):
        return FaceScorer(_facescore(path, _device()), batch_size=batch_size)
    return OnnxScorer(path, size=size or None, normalization=normalization, batch_size=batch_size)


# ----------------------------------------------------------------------------------- helpers


def _core_image(image, where: str) -> torch.Tensor:
    """ComfyUI IMAGE (checked by the node base) → ``(B, 3, H, W)``."""
    return check_image(image_to_core(image), where)


def _summary(regions: RegionBatch, name: str) -> str:
    lines = []
    for b, per_image in enumerate(regions.regions):
        scored = [r for r in per_image if name in r.scores]
        if not scored:
            lines.append(f"image {b}: no region scored")
            continue
        values = ", ".join(f"{r.label} {format_score(r.scores[name])}" for r in scored)
        lines.append(f"image {b}: {values}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- nodes


class VitruvianScoreRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianScoreRegions",
            display_name="Score Regions (Vitruvian)",
            category=category("scoring"),
            description="One score per face / hand / person region, all regions of all images in one batch: "
            "sharpness (Laplacian variance), detector confidence, hand plausibility (21 keypoints), FaceScore, or "
            "any ONNX crop → scalar model. Outputs the regions with scores, a JSON report and per-image values.",
            inputs=[
                io.Image.Input("image"),
                REGIONS.Input("regions"),
                io.Combo.Input("scorer", options=scorer_options(), default="sharpness",
                               tooltip="facescore:/onnx: files live in models/vitruvian/scorers."),
                io.String.Input("labels", default="", tooltip="Comma list of labels to score; empty = the scorer's "
                                "own (FaceScore: face, hand plausibility: hand, others: all). A label the regions "
                                "cannot carry is an error; an image with no region to score is a warning."),
                io.Combo.Input("aggregate", options=list(AGGREGATES), default="mean",
                               tooltip="Per-image value of the FLOAT list output (NaN for an image with no scored region)."),
                io.Int.Input("batch_size", default=16, min=1, max=1024, tooltip="Crops per model forward (FaceScore, ONNX)."),
                io.Combo.Input("onnx_normalization", options=list(NORMALIZATIONS), default="none",
                               tooltip="ONNX scorers: how [0, 1] RGB crops are normalised."),
                io.Int.Input("onnx_size", default=0, min=0, max=4096,
                             tooltip="ONNX scorers with a dynamic input size: crop side (0 = the model's own)."),
            ],
            outputs=[
                REGIONS.Output(display_name="regions"),
                io.String.Output(display_name="report"),
                io.Float.Output(display_name="per_image", is_output_list=True),
                io.String.Output(display_name="score_name"),
            ],
        )

    @classmethod
    def validate_inputs(cls, scorer=None, aggregate=None, onnx_normalization=None):
        # Inputs named here skip ComfyUI's own combo checks, so they are all checked here (no **kwargs: that
        # would switch ComfyUI's range checks off for every input).
        if scorer is not None:
            problem = _check_scorer_option(scorer)
            if problem:
                return problem
        if aggregate is not None and aggregate not in AGGREGATES:
            return f"VitruvianScoreRegions: aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}"
        if onnx_normalization is not None and onnx_normalization not in NORMALIZATIONS:
            return (f"VitruvianScoreRegions: onnx_normalization must be one of {', '.join(NORMALIZATIONS)}, "
                    f"got {onnx_normalization!r}")
        return True

    @classmethod
    def fingerprint_inputs(cls, scorer=None, **kwargs):
        # A model file rewritten under the same name must be scored again.
        if isinstance(scorer, str) and scorer.startswith((FACESCORE_PREFIX, ONNX_PREFIX)):
            try:
                st = os.stat(resolve_scorer(scorer))
                return f"{scorer}:{st.st_mtime_ns}:{st.st_size}"
            except (OSError, ModelNotFoundError):
                return float("nan")
        return ""

    @classmethod
    def execute(cls, image, regions, scorer, labels, aggregate, batch_size, onnx_normalization, onnx_size) -> io.NodeOutput:
        where = "VitruvianScoreRegions"
        core = _core_image(image, where)
        regions = check_regions(regions, core, where)
        if scorer not in BUILTIN_SCORERS and not str(scorer).startswith((FACESCORE_PREFIX, ONNX_PREFIX)):
            raise ValueError(_check_scorer_option(scorer))
        wanted = check_names(where, "labels", regions, labels)
        model = _build_scorer(scorer, batch_size, onnx_normalization, onnx_size)
        result = score_regions(core, regions, model, labels=wanted)
        name = result.name
        # Record the names computed, so later nodes tell "no region got it" from "never computed".
        scored = replace(result.regions, scored=(*regions.scored, *result.names))
        values = [float("nan") if v is None else float(v) for v in result.per_image[name].get(aggregate)]
        warning = absent_warning(scored, (name,), SCORE)
        if warning:
            labelled = wanted or model.labels
            warning += (f" (no {' or '.join(labelled)} region" if labelled else " (no region") + \
                " it could score): per_image is NaN there"
        report = result.report()
        if warning:
            report["warnings"] = [warning]
        report = json.dumps(report, indent=1, allow_nan=False)
        per_image = ", ".join("–" if math.isnan(v) else format_score(v) for v in values)
        text = f"{name} ({aggregate} per image): {per_image}\n{_summary(result.regions, name)}"
        text += f"\n{warning}" if warning else ""
        return io.NodeOutput(scored, report, values, name, ui=ui.PreviewText(text))


class VitruvianRankImages(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianRankImages",
            display_name="Rank Images by Score (Vitruvian)",
            category=category("scoring"),
            description="Sort (and keep the top k of) a batch of images by a per-image aggregate of a region score; "
            "the regions are reordered with them. Images with no scored region go last or are dropped.",
            inputs=[
                io.Image.Input("image"),
                REGIONS.Input("regions", tooltip="Scored regions (from Score Regions) of the same images."),
                io.String.Input("score", default="facescore", tooltip="Score name, e.g. facescore, sharpness, hand, "
                                "confidence (Score Regions' score_name output can be linked here)."),
                io.Combo.Input("aggregate", options=list(AGGREGATES), default="min",
                               tooltip="min: an image is as good as its worst region."),
                io.Combo.Input("order", options=list(ORDERS), default="descending", tooltip="descending: best first."),
                io.Int.Input("top_k", default=0, min=0, max=4096, tooltip="Keep this many images (0 = all)."),
                io.String.Input("labels", default="", tooltip="Comma list of labels to aggregate over; empty = all."),
                io.Combo.Input("missing", options=list(MISSING), default="last",
                               tooltip="Images with no region carrying the score: last, or dropped. When no image "
                               "carries it, last keeps the batch order (with a warning) and drop is an error."),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                REGIONS.Output(display_name="regions"),
                io.String.Output(display_name="indices", tooltip="Original batch indices, in the new order (comma list)."),
                io.Int.Output(display_name="index", is_output_list=True),
            ],
        )

    @classmethod
    def execute(cls, image, regions, score, aggregate, order, top_k, labels, missing) -> io.NodeOutput:
        where = "VitruvianRankImages"
        core = _core_image(image, where)
        regions = check_regions(regions, core, where)
        wanted = check_names(where, "labels", regions, labels)
        names = check_names(where, "score", regions, score, SCORE)
        if names is None or len(names) > 1:
            raise NodeInputError(where, "score", f"one score name is expected (e.g. sharpness; link Score Regions' "
                                 f"score_name), got {score[:80]!r}")
        score = names[0]
        agg = aggregate_scores(regions, score, labels=wanted)
        warning = ""
        if not any(agg.count):
            where_none = f"no image has a region{' labelled ' + ' or '.join(wanted) if wanted else ''} with a " \
                         f"{score} score"
            if missing == "drop":
                raise NodeInputError(where, "score", f"{where_none}, so missing=drop would output no image; set "
                                     "missing to last (the batch order is kept), or rank by a score the images carry")
            warning = f"warning: {where_none}: nothing to rank, the batch order is kept"
        aggregate_values = agg.get(aggregate)
        scored = [i for i, v in enumerate(aggregate_values) if v is not None]
        scored.sort(key=lambda i: aggregate_values[i], reverse=(order == "descending"))  # stable: ties keep batch order
        unscored = [i for i, v in enumerate(aggregate_values) if v is None]
        keep = scored + (unscored if missing == "last" else [])
        if top_k:
            keep = keep[:top_k]
        ranked = replace(regions, regions=tuple(regions.regions[i] for i in keep),
                         image_sizes=tuple(regions.image_sizes[i] for i in keep))
        text = "\n".join([
            *(f"#{rank}: image {i} {aggregate} {score} "
              + ("–" if aggregate_values[i] is None else format_score(aggregate_values[i]))
              for rank, i in enumerate(keep)),
            *([warning] if warning else []),
        ])
        out = image[torch.tensor(keep, dtype=torch.long)]
        return io.NodeOutput(out, ranked, ",".join(map(str, keep)), keep, ui=ui.PreviewText(text))


class VitruvianScorePreview(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianScorePreview",
            display_name="Preview Scored Regions (Vitruvian)",
            category=category("scoring"),
            description="Draw the regions over the images: shape masks, boxes, labels and scores.",
            inputs=[
                io.Image.Input("image"),
                REGIONS.Input("regions"),
                io.String.Input("scores", default="", tooltip="Comma list of score names to write; empty = all. A "
                                "name the regions do not carry (and no scorer computed) is an error."),
                io.Float.Input("mask_opacity", default=0.35, min=0.0, max=1.0, step=0.05),
                io.Int.Input("thickness", default=2, min=1, max=32),
            ],
            outputs=[io.Image.Output(display_name="image")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, regions, scores, mask_opacity, thickness) -> io.NodeOutput:
        where = "VitruvianScorePreview"
        core = _core_image(image, where)
        regions = check_regions(regions, core, where)
        names = check_names(where, "scores", regions, scores, SCORE)
        drawn = draw_regions(core, regions, score_names=names, mask_opacity=mask_opacity, thickness=thickness)
        out = image_from_core(drawn)
        return io.NodeOutput(out, ui=ui.PreviewImage(out, cls=cls))


NODES = [VitruvianScoreRegions, VitruvianRankImages, VitruvianScorePreview]
