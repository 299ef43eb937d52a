"""Pose nodes: load keypoints (any format), convert to and from aux's POSE_KEYPOINT, preview.

Thin adapters over :mod:`vitruvian.core.pose`; a ``PoseFormatError`` raised there becomes the
node's error message in ComfyUI.
"""

from __future__ import annotations

import os

from ..core.errors import NodeInputError, PoseFormatError
from ..core.pose import LOAD_FORMATS, PoseBatch, load_pose, overlay_pose, render_pose, to_pose_keypoint
from ..core.regions.from_pose import pose_fit_problem
from ._comfy import POSE, POSE_KEYPOINT, VitruvianNode, category, io, ui
from ._convert import image_from_core, image_to_core

__all__ = ["NODES"]

NO_FILE = "none"
SPACE_OPTIONS = ("auto", "pixels", "normalized")
CONFIDENCE_OPTIONS = ("keep", "binarize")
MAX_CANVAS = 16384


def _input_directory() -> str:
    import folder_paths  # ComfyUI's; imported here so the module imports without a running host

    return folder_paths.get_input_directory()


def json_files() -> list[str]:
    """``"none"`` then every ``.json`` file under ComfyUI's input folder (relative, ``/``-separated)."""
    root = _input_directory()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.lower().endswith(".json"):
                found.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return [NO_FILE] + sorted(found)


def resolve_input_file(name: str) -> str:
    """Absolute path of ``name`` inside the input folder; PoseFormatError for anything else."""
    root = os.path.realpath(_input_directory())
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise PoseFormatError(
            f"VitruvianLoadPose: file must be inside ComfyUI's input folder ({root}), got {name!r}; "
            "copy the JSON file into the input folder and pick it from the list"
        )
    if not name.lower().endswith(".json") or not os.path.isfile(path):
        raise PoseFormatError(
            f"VitruvianLoadPose: file must be an existing .json file in the input folder, got {name!r}; "
            "refresh the node list after adding files"
        )
    return path


def _canvas(width: int, height: int) -> tuple[int, int] | None:
    if (width == 0) != (height == 0):
        raise PoseFormatError(
            f"VitruvianLoadPose: canvas_width and canvas_height must both be 0 (size from the data) or both "
            f"set, got {width}×{height}"
        )
    return (width, height) if width else None


class VitruvianLoadPose(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianLoadPose",
            display_name="Load Pose (Vitruvian)",
            category=category("pose"),
            description="Read keypoints from JSON text or a .json file in the input folder: aux POSE_KEYPOINT, "
            "OpenPose JSON, COCO-17, COCO-WholeBody-133 or MediaPipe 33. Keeps real confidences.",
            inputs=[
                io.String.Input("json_text", multiline=True, default="", tooltip="Keypoint JSON; leave empty to load `file`."),
                io.Combo.Input("file", options=json_files(), default=NO_FILE, tooltip=".json files in ComfyUI's input folder."),
                io.Combo.Input("format", options=list(LOAD_FORMATS), default="auto", tooltip="auto detects the format."),
                io.Int.Input("canvas_width", default=0, min=0, max=MAX_CANVAS, tooltip="0 = from the data. Needed for normalised MediaPipe landmarks and OpenPose JSON."),
                io.Int.Input("canvas_height", default=0, min=0, max=MAX_CANVAS, tooltip="0 = from the data."),
            ],
            outputs=[POSE.Output(display_name="pose"), io.String.Output(display_name="info")],
        )

    @classmethod
    def validate_inputs(cls, json_text, file, format, canvas_width, canvas_height):
        # Inputs named here skip ComfyUI's own combo/range checks, so they are all checked here.
        try:
            if format is not None and format not in LOAD_FORMATS:
                return f"VitruvianLoadPose: format must be one of {', '.join(LOAD_FORMATS)}, got {format!r}"
            for name, value in (("canvas_width", canvas_width), ("canvas_height", canvas_height)):
                if value is not None and not 0 <= value <= MAX_CANVAS:
                    return f"VitruvianLoadPose: {name} must be in [0, {MAX_CANVAS}], got {value}"
            if canvas_width is not None and canvas_height is not None:
                _canvas(canvas_width, canvas_height)
            if file is not None and file != NO_FILE:
                resolve_input_file(file)
                if json_text:
                    return "VitruvianLoadPose: give json_text or file, not both; clear json_text or set file to none"
            elif file == NO_FILE and json_text is not None and not json_text.strip():
                return "VitruvianLoadPose: nothing to load, json_text is empty and file is none; paste keypoint JSON or pick a file"
        except PoseFormatError as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, json_text, file, format, canvas_width, canvas_height):
        # A file edited under the same name must be read again.
        if file and file != NO_FILE:
            try:
                st = os.stat(resolve_input_file(file))
                return f"{file}:{st.st_mtime_ns}:{st.st_size}"
            except (OSError, PoseFormatError):
                return float("nan")
        return ""

    @classmethod
    def execute(cls, json_text, file, format, canvas_width, canvas_height) -> io.NodeOutput:
        canvas = _canvas(canvas_width, canvas_height)
        if file and file != NO_FILE:
            with open(resolve_input_file(file), encoding="utf-8") as f:
                json_text = f.read()
        try:
            loaded = load_pose(json_text, format=format, canvas=canvas)
        except PoseFormatError as exc:
            source = f"file {file!r}" if file and file != NO_FILE else "json_text"
            raise PoseFormatError(f"VitruvianLoadPose: {source}: {exc}") from exc
        return io.NodeOutput(loaded.pose, loaded.message)


class VitruvianPoseFromKeypoint(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianPoseFromKeypoint",
            display_name="Pose from POSE_KEYPOINT (Vitruvian)",
            category=category("pose"),
            description="comfyui_controlnet_aux POSE_KEYPOINT (or an OpenPose editor's dict) → POSE.",
            inputs=[
                POSE_KEYPOINT.Input("pose_keypoint"),
                io.Combo.Input(
                    "coordinates", options=list(SPACE_OPTIONS), default="auto",
                    tooltip="aux writes pixels (DWPose) or 0-1 (OpenPose); auto detects it.",
                ),
            ],
            outputs=[POSE.Output(display_name="pose"), io.String.Output(display_name="info")],
        )

    @classmethod
    def execute(cls, pose_keypoint, coordinates) -> io.NodeOutput:
        loaded = load_pose(pose_keypoint, format="pose_keypoint", space=coordinates)
        return io.NodeOutput(loaded.pose, loaded.message)


class VitruvianPoseToKeypoint(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianPoseToKeypoint",
            display_name="Pose to POSE_KEYPOINT (Vitruvian)",
            category=category("pose"),
            description="POSE → comfyui_controlnet_aux POSE_KEYPOINT in pixels (bodies as COCO-18).",
            inputs=[
                POSE.Input("pose"),
                io.Combo.Input(
                    "confidence", options=list(CONFIDENCE_OPTIONS), default="keep",
                    tooltip="keep: real confidences (lossless). binarize: aux's convention, 1 above the threshold, "
                    "else the point is dropped.",
                ),
                io.Float.Input("threshold", default=0.3, min=0.0, max=1.0, step=0.01),
            ],
            outputs=[POSE_KEYPOINT.Output(display_name="pose_keypoint")],
        )

    @classmethod
    def execute(cls, pose, confidence, threshold) -> io.NodeOutput:
        binarize = threshold if confidence == "binarize" else None
        return io.NodeOutput(to_pose_keypoint(pose, space="pixels", binarize=binarize))


class VitruvianPosePreview(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianPosePreview",
            display_name="Preview Pose (Vitruvian)",
            category=category("pose"),
            description="Draw a POSE in OpenPose colours on black, or over an image.",
            inputs=[
                POSE.Input("pose"),
                io.Image.Input("image", optional=True, tooltip="Draw over this image instead of black. A pose canvas "
                               "of the image's aspect ratio is scaled to it (at most 32× either way); another aspect "
                               "ratio or an image under 16 pixels a side is an error, as in Detect Regions."),
                io.Float.Input("min_confidence", default=0.3, min=0.0, max=1.0, step=0.01),
                io.Int.Input("thickness", default=4, min=1, max=64),
            ],
            outputs=[io.Image.Output(display_name="image")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, pose: PoseBatch, min_confidence, thickness, image=None) -> io.NodeOutput:
        if image is None:
            drawn = render_pose(pose, min_confidence=min_confidence, thickness=thickness)
        else:
            h, w = (int(v) for v in image.shape[1:3])
            for i, frame in enumerate(pose):  # the rule Detect Regions follows: never stretch a pose silently
                problem = pose_fit_problem((frame.canvas_width, frame.canvas_height), (w, h), i)
                if problem:
                    raise NodeInputError("VitruvianPosePreview", "image", problem)
            drawn = overlay_pose(image_to_core(image), pose, min_confidence=min_confidence, thickness=thickness)
        out = image_from_core(drawn)
        return io.NodeOutput(out, ui=ui.PreviewImage(out, cls=cls))


NODES = [VitruvianLoadPose, VitruvianPoseFromKeypoint, VitruvianPoseToKeypoint, VitruvianPosePreview]
