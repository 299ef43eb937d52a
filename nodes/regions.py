"""Region nodes: detect faces, hands and people (from keypoints or an ONNX detector), turn regions
into masks, and convert to and from Impact Pack's SEGS.

Thin adapters over :mod:`vitruvian.core.regions`. Choices the nodes make, documented here once:

- A POSE whose canvas differs from the image size is **rescaled** to the image when the aspect
  ratio is the same (the node's text says so) and the scale is at most 32× either way; another
  aspect ratio, a larger rescale or an image under 16 pixels a side is an error naming ``pose`` (the
  keypoints belong to another image; :func:`vitruvian.core.regions.from_pose.pose_fit_problem`).
- ``labels`` that no region can ever match (a typo, a label no detector here makes) are errors that
  list the labels the regions carry; a known label that some image has no region of is a warning in
  the node's text (nobody in that picture is a legitimate outcome). Detect Regions records the labels
  it looked for in the REGIONS, so later nodes can tell the two apart.
- A region partly outside the image is **clipped** to it (and said so in the node's text where it
  came from SEGS); one wholly outside is dropped. REGIONS never hold boxes outside their image.
- Regions from the pose and from the detector are merged: where a detector region and a keypoint
  region of the same label overlap by more than ``iou``, the one with the higher score is kept
  (keypoint regions never suppress each other: one person's two hands may overlap).

Detector files: ``.onnx`` files in ``models/vitruvian/detectors`` (folder name ``vitruvian_detectors``)
and in Impact Subpack's ``models/ultralytics/bbox`` and ``segm`` (listed as ``bbox/…``, ``segm/…``).
"""

from __future__ import annotations

import os
import sys


from ..core.errors import ModelNotFoundError
from ..core.pose import PoseBatch
from ..core.regions import (
    LABEL,
    LABELS,
    RegionBatch,
    absent_warning,
    detect_regions,
    feather_mask,
    grow_mask,
    load_detector,
    regions_to_segs,
    segs_to_regions,
)
from ..core.regions.detect import labels_problem
from ..core.regions.from_pose import MAX_RESCALE, MIN_IMAGE_SIDE, pose_fit_problem
from ..core.regions.segs import SEG
from ._checks import NodeInputError, check_names
from ._comfy import POSE, REGIONS, SEGS, VitruvianNode, category, io, ui
from ._convert import image_to_core, mask_from_core

__all__ = ["NODES", "detector_files", "resolve_detector", "register_folders"]

NO_MODEL = "none"
DETECTORS_FOLDER = "vitruvian_detectors"
#: Impact Subpack's folder names and the prefix their files get in our list.
ULTRALYTICS_FOLDERS = (("ultralytics_bbox", "bbox"), ("ultralytics_segm", "segm"))
DEFAULT_LABELS = ",".join(LABELS)
MAX_RADIUS = 512


# ----------------------------------------------------------------------------------- model folders


def register_folders() -> None:
    """Register ``vitruvian_detectors`` (``models/vitruvian/detectors``, ``.onnx`` only) and, when no
    other pack did, Impact Subpack's ``ultralytics_bbox`` / ``ultralytics_segm`` folders."""
    import folder_paths  # ComfyUI's

    ours = os.path.join(folder_paths.models_dir, "vitruvian", "detectors")
    folder_paths.add_model_folder_path(DETECTORS_FOLDER, ours)
    paths, _ = folder_paths.folder_names_and_paths[DETECTORS_FOLDER]
    folder_paths.folder_names_and_paths[DETECTORS_FOLDER] = (paths, {".onnx"})
    for name, sub in ULTRALYTICS_FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            # Same paths and extensions Impact Subpack uses, so whichever pack loads first, both agree.
            folder_paths.folder_names_and_paths[name] = (
                [os.path.join(folder_paths.models_dir, "ultralytics", sub)],
                set(folder_paths.supported_pt_extensions),
            )


def _searched() -> list[tuple[str, str]]:
    """``(list prefix, folder)`` for every folder searched, ours first (registering them first)."""
    import folder_paths

    register_folders()
    out = [("", p) for p in folder_paths.get_folder_paths(DETECTORS_FOLDER)]
    for name, sub in ULTRALYTICS_FOLDERS:
        if name in folder_paths.folder_names_and_paths:
            out += [(f"{sub}/", p) for p in folder_paths.get_folder_paths(name)]
    return out


def detector_files() -> list[str]:
    """``"none"`` then every ``.onnx`` file of the detector folders (Impact's listed as ``bbox/…``, ``segm/…``).

    The ultralytics folders are scanned directly: their registered extensions are ``.pt`` files,
    which onnxruntime cannot run."""
    found = []
    for prefix, root in _searched():
        for folder, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, root)
            for name in files:
                if name.lower().endswith(".onnx"):
                    found.append(prefix + (name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"))
    return [NO_MODEL] + sorted(set(found))


def resolve_detector(name: str) -> str:
    """Absolute path of the listed detector ``name``; ModelNotFoundError listing the folders searched."""
    searched = _searched()
    for prefix, root in searched:
        if prefix and not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        path = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([os.path.realpath(root), path]) == os.path.realpath(root) and os.path.isfile(path):
            return path
    raise ModelNotFoundError(
        f"VitruvianDetectRegions: detector {name!r} (put .onnx files in models/vitruvian/detectors, then refresh)",
        [root for _, root in searched],
    )


# ----------------------------------------------------------------------------------- helpers


def _seg_class():
    """Impact Pack's own ``SEG`` when Impact is loaded in this ComfyUI, else the equivalent namedtuple."""
    impact_core = sys.modules.get("impact.core")
    return getattr(impact_core, "SEG", SEG) if impact_core is not None else SEG


# ----------------------------------------------------------------------------------- nodes


class VitruvianDetectRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianDetectRegions",
            display_name="Detect Regions (Vitruvian)",
            category=category("regions"),
            description="Faces, hands and people per image: from keypoints (landmark hull masks, no model) and/or "
            "a YOLOv8-style ONNX detector (bbox or segm). Outputs the regions and their union as a mask. A pose "
            "estimated at another resolution of the same picture is rescaled to the image.",
            inputs=[
                io.Image.Input("image"),
                POSE.Input("pose", optional=True, tooltip=f"Keypoints of the same images (one frame per image). A "
                           f"canvas of another size but the image's aspect ratio is rescaled to the image, by at "
                           f"most {MAX_RESCALE}× either way; another aspect ratio, a larger rescale or an image "
                           f"under {MIN_IMAGE_SIDE} pixels a side is an error."),
                io.Combo.Input("detector", options=detector_files(), default=NO_MODEL,
                               tooltip=".onnx files in models/vitruvian/detectors and models/ultralytics/bbox|segm."),
                io.String.Input("labels", default=DEFAULT_LABELS,
                                tooltip="Comma list of labels to keep (face, hand, person, or a detector's class "
                                "names); empty keeps all. A label neither the pose nor the detector makes is an "
                                "error (face, hand, person only a note)."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Minimum region score: detector confidence, or mean keypoint confidence."),
                io.Float.Input("iou", default=0.45, min=0.0, max=1.0, step=0.01,
                               tooltip="Overlap above which same-label boxes are merged (NMS)."),
                io.Int.Input("max_per_image", default=20, min=1, max=1000),
                io.Float.Input("keypoint_confidence", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Keypoints below this confidence are not used."),
            ],
            outputs=[REGIONS.Output(display_name="regions"), io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def validate_inputs(cls, detector):
        if detector is not None and detector != NO_MODEL:
            try:
                resolve_detector(detector)
            except ModelNotFoundError as e:
                return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, detector=NO_MODEL, **kwargs):
        # A detector rewritten under the same name must run again.
        if detector and detector != NO_MODEL:
            try:
                st = os.stat(resolve_detector(detector))
                return f"{detector}:{st.st_mtime_ns}:{st.st_size}"
            except (OSError, ModelNotFoundError):
                return float("nan")
        return ""

    @classmethod
    def execute(cls, image, detector, labels, threshold, iou, max_per_image, keypoint_confidence,
                pose: PoseBatch | None = None) -> io.NodeOutput:
        where = "VitruvianDetectRegions"
        b, h, w = (int(v) for v in image.shape[:3])
        if pose is not None:
            if len(pose) != b:
                raise NodeInputError(where, "pose", f"pose has {len(pose)} frames but image has {b} images; the "
                                     "batch sizes must match (one pose frame per image)")
            for i, frame in enumerate(pose):
                problem = pose_fit_problem((frame.canvas_width, frame.canvas_height), (w, h), i)
                if problem:
                    raise NodeInputError(where, "pose", problem)
        if pose is None and detector == NO_MODEL:
            raise NodeInputError(where, "detector", "a detector file or a connected pose is expected, got neither: "
                                 "nothing to detect with; connect a pose or pick a detector file")
        model = None
        if detector != NO_MODEL:
            model = load_detector(resolve_detector(detector), [root for _, root in _searched()])
        problem, _ = labels_problem(labels, pose=pose is not None, detector=model)
        if problem:
            raise NodeInputError(where, "labels", problem)
        regions, notes = detect_regions(
            image_to_core(image), pose=pose, detector=model, labels=labels, threshold=threshold, iou=iou,
            max_per_image=max_per_image, keypoint_confidence=keypoint_confidence,
        )
        warning = absent_warning(regions, None, LABEL) if len(regions) > 1 else ""
        text = regions.summary() + "".join(f"\n{n}" for n in [*notes, warning] if n)
        return io.NodeOutput(regions, mask_from_core(regions.to_masks()), ui=ui.PreviewText(text))


class VitruvianRegionsToMask(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianRegionsToMask",
            display_name="Regions to Mask (Vitruvian)",
            category=category("regions"),
            description="The union of the regions' shapes per image, grown or shrunk and feathered.",
            inputs=[
                REGIONS.Input("regions"),
                io.String.Input("labels", default="", tooltip="Comma list of labels to include; empty = all. A label "
                                "the regions cannot carry is an error; one an image has no region of leaves its "
                                "mask empty, with a warning."),
                io.Int.Input("dilation", default=0, min=-MAX_RADIUS, max=MAX_RADIUS,
                             tooltip="Grow (> 0) or shrink (< 0) the mask by this many pixels."),
                io.Int.Input("feather", default=0, min=0, max=MAX_RADIUS, tooltip="Blur radius of the edges, pixels."),
            ],
            outputs=[io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, regions: RegionBatch, labels, dilation, feather) -> io.NodeOutput:
        wanted = check_names("VitruvianRegionsToMask", "labels", regions, labels)
        mask = regions.to_masks(wanted)
        mask = feather_mask(grow_mask(mask, dilation), feather)
        kept = regions.filter(wanted) if wanted else regions
        text = "\n".join(line for line in [f"mask of {kept.summary()}", absent_warning(regions, wanted, LABEL)]
                          if line)
        return io.NodeOutput(mask_from_core(mask), ui=ui.PreviewText(text))


class VitruvianRegionsToSEGS(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianRegionsToSEGS",
            display_name="Regions to SEGS (Vitruvian)",
            category=category("regions"),
            description="One image's regions as Impact Pack SEGS (shape masks kept), for Impact's detailers.",
            inputs=[
                REGIONS.Input("regions"),
                io.Image.Input("image", optional=True, tooltip="The images, to fill each SEG's cropped_image."),
                io.Int.Input("batch_index", default=0, min=0, max=4095, tooltip="SEGS hold one image: which one."),
                io.Float.Input("crop_factor", default=3.0, min=1.0, max=100.0, step=0.1,
                               tooltip="Context around each box (Impact's bbox_crop_factor)."),
                io.String.Input("labels", default="", tooltip="Comma list of labels to include; empty = all. A label "
                                "the regions cannot carry is an error; none found in the image is a warning."),
            ],
            outputs=[SEGS.Output(display_name="segs")],
        )

    @classmethod
    def execute(cls, regions: RegionBatch, batch_index, crop_factor, labels, image=None) -> io.NodeOutput:
        wanted = check_names("VitruvianRegionsToSEGS", "labels", regions, labels)
        if wanted is not None:
            regions = regions.filter(wanted)
        segs = regions_to_segs(regions, batch_index, image=image, crop_factor=crop_factor, seg_type=_seg_class())
        text = f"{len(segs[1])} SEG(s) of image {batch_index}"
        if not segs[1]:
            text += f"\nwarning: no region{' labelled ' + ' or '.join(wanted) if wanted else ''} in image {batch_index}"
        return io.NodeOutput(segs, ui=ui.PreviewText(text))


class VitruvianSEGSToRegions(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianSEGSToRegions",
            display_name="SEGS to Regions (Vitruvian)",
            category=category("regions"),
            description="Impact Pack SEGS (one image) → REGIONS; boxes outside the image are clipped or dropped.",
            inputs=[SEGS.Input("segs")],
            outputs=[REGIONS.Output(display_name="regions")],
        )

    @classmethod
    def execute(cls, segs) -> io.NodeOutput:
        regions, notes = segs_to_regions(segs, source="segs")
        text = regions.summary() + "".join(f"\n{n}" for n in notes)
        return io.NodeOutput(regions, ui=ui.PreviewText(text))


NODES = [VitruvianDetectRegions, VitruvianRegionsToMask, VitruvianRegionsToSEGS, VitruvianSEGSToRegions]
