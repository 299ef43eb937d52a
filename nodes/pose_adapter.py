"""Pose-graph adapter nodes: load an adapter file, apply it to conditioning like a ControlNet; measure the
keypoint error of generated images against the target pose with an ONNX pose estimator.

``VitruvianApplyPoseGraph`` wraps the adapter in :class:`PoseGraphControl`, a ``comfy.controlnet.ControlBase``
subclass, and chains it exactly as ``ControlNetApplyAdvanced`` does (``set_previous_controlnet``), so it
stacks with ControlNets, T2I-Adapters and other pose adapters in any order. Per denoising step ComfyUI
calls ``get_control``; the pose side (skeleton rendering, tokens, pose encoder, each integrator's pose
branch) does not depend on the latent or the timestep and is computed once per sampling run and latent
size, then dropped in ``cleanup``.

Adapter files live in ``models/vitruvian/pose_adapters`` (folder name ``vitruvian_pose_adapters``), pose
estimators in ``models/vitruvian/pose_estimators`` (``vitruvian_pose_estimators``); more folders can be
added under those keys in ``extra_model_paths.yaml``.
"""
from __future__ import annotations

import os

import comfy.controlnet  # ComfyUI's; node modules are only imported inside a running ComfyUI
import torch

from ..core.errors import ModelNotFoundError, PoseFormatError
from ..core.pose import BODY_FORMATS, PoseBatch
from ..core.pose_adapter.io import load_pose_adapter
from ..core.pose_adapter.pose_encoder import check_pose_canvas, prepare_pose_condition
from ._checks import register_type
from ._comfy import POSE, POSE_ADAPTER, VitruvianNode, category, io, ui
from ._convert import image_to_core

__all__ = ["NODES", "FOLDER", "ESTIMATOR_FOLDER", "POSE_ADAPTER", "PoseGraphControl", "adapter_files"]

#: folder_paths keys of the adapter and pose-estimator folders.
FOLDER = "vitruvian_pose_adapters"
ESTIMATOR_FOLDER = "vitruvian_pose_estimators"
_FOLDERS = {FOLDER: ("pose_adapters", {".safetensors"}), ESTIMATOR_FOLDER: ("pose_estimators", {".onnx"})}
APPLY = "VitruvianApplyPoseGraph"


def _register_folders() -> None:
    """Add ``models/vitruvian/<sub>`` under each key (after any extra_model_paths entries)."""
    import folder_paths

    for key, (sub, extensions) in _FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, "vitruvian", sub)
        paths, _ = folder_paths.folder_names_and_paths.get(key, ([], set()))
        if default not in paths:
            paths = [*paths, default]
        folder_paths.folder_names_and_paths[key] = (paths, set(extensions))


def _files(key: str) -> list[str]:
    import folder_paths

    _register_folders()
    return folder_paths.get_filename_list(key)


def adapter_files() -> list[str]:
    return _files(FOLDER)


def _model_path(key: str, name: str, what: str) -> str:
    import folder_paths

    _register_folders()
    path = folder_paths.get_full_path(key, name)
    if path is None:
        raise ModelNotFoundError(f"{what} {name!r}", folder_paths.get_folder_paths(key))
    return path


def _adapter_path(name: str) -> str:
    return _model_path(FOLDER, name, "VitruvianLoadPoseAdapter: pose adapter")


class PoseGraphControl(comfy.controlnet.ControlBase):
    """A pose-graph adapter as a ComfyUI control: ``get_control`` returns its residuals merged with the
    previous control's. ``pose`` is the :class:`PoseBatch` set by the apply node."""

    def __init__(self, adapter, patcher, compression: int = 8):
        super().__init__()
        self.adapter, self.patcher = adapter, patcher
        self.pose: PoseBatch | None = None
        self.compression = compression
        self.model_sampling_current = None
        self._features, self._features_key = None, None

    def set_pose(self, pose: PoseBatch, strength: float, percent_range: tuple[float, float], vae=None):
        self.pose = pose
        self.strength, self.timestep_percent_range = strength, percent_range
        if vae is not None:
            self.compression = int(vae.spacial_compression_encode())
        return self

    def copy(self):
        c = PoseGraphControl(self.adapter, self.patcher, self.compression)
        self.copy_to(c)
        c.pose = self.pose
        return c

    def get_models(self):
        return super().get_models() + [self.patcher]

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self):
        self.model_sampling_current = None
        self._features, self._features_key = None, None
        super().cleanup()

    def _pose_features(self, size, device, dtype):
        key = (tuple(size), device, dtype)
        if self._features_key != key:
            condition = prepare_pose_condition(self.pose, tuple(size), self.adapter.skeleton,
                                               compression=self.compression, where=APPLY)
            with torch.no_grad():
                feats = self.adapter.encode_pose(condition)
            self._features = tuple(None if f is None else f.to(device, dtype) for f in feats)
            self._features_key = key
        return self._features

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return control_prev
        adapter = self.adapter
        dtype, device = adapter.dtype, x_noisy.device
        feats = self._pose_features(x_noisy.shape[-2:], device, dtype)
        feats = tuple(None if f is None else comfy.controlnet.broadcast_image_to(f, x_noisy.shape[0], batched_number)
                      for f in feats)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        y = cond.get("y") if adapter.config.addition_embed_dim else None
        if adapter.config.addition_embed_dim and y is None:
            raise PoseFormatError(f"{APPLY}: this pose adapter is for SDXL (it needs the pooled-text 'y' conditioning), "
                                  "got a model without it; use an adapter made for this checkpoint")
        ms = self.model_sampling_current
        with torch.no_grad():
            residuals = adapter(ms.calculate_input(t, x_noisy).to(dtype), ms.timestep(t).to(device).float(),
                                context.to(device, dtype), feats,
                                added_embeds=None if y is None else y.to(device, dtype))
        return self.control_merge(residuals.to_comfy(), control_prev, output_dtype=x_noisy.dtype)


register_type(POSE_ADAPTER.io_type, lambda value: isinstance(value, PoseGraphControl),
              "a pose adapter from Load Pose Adapter (Vitruvian)")


class VitruvianLoadPoseAdapter(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianLoadPoseAdapter",
            display_name="Load Pose Adapter (Vitruvian)",
            category=category("pose"),
            description="Load a pose-graph adapter (GRPose-style, .safetensors) from models/vitruvian/pose_adapters.",
            inputs=[io.Combo.Input("adapter_name", options=adapter_files(), tooltip="Files in models/vitruvian/pose_adapters.")],
            outputs=[POSE_ADAPTER.Output(display_name="pose_adapter")],
        )

    @classmethod
    def fingerprint_inputs(cls, adapter_name):
        try:  # a file rewritten under the same name must be read again
            st = os.stat(_adapter_path(adapter_name))
            return f"{adapter_name}:{st.st_mtime_ns}:{st.st_size}"
        except (OSError, ModelNotFoundError):
            return float("nan")

    @classmethod
    def execute(cls, adapter_name) -> io.NodeOutput:
        import comfy.model_management as mm
        import comfy.model_patcher

        load_device = mm.get_torch_device()
        adapter = load_pose_adapter(_adapter_path(adapter_name), dtype=mm.unet_dtype())
        patcher = comfy.model_patcher.ModelPatcher(adapter, load_device=load_device,
                                                   offload_device=mm.unet_offload_device())
        return io.NodeOutput(PoseGraphControl(adapter, patcher))


def _check_people(pose) -> None:
    if not isinstance(pose, PoseBatch) or len(pose) == 0:
        raise PoseFormatError(f"{APPLY}: pose must be a POSE with at least one image, got "
                              f"{'an empty POSE' if isinstance(pose, PoseBatch) else type(pose).__name__}")
    for i, frame in enumerate(pose):
        if not frame.people:
            raise PoseFormatError(f"{APPLY}: pose image {i} must have at least one person, got none; "
                                  "a pose adapter needs a skeleton to follow (check the detector's output)")


class VitruvianApplyPoseGraph(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=APPLY,
            display_name="Apply Pose Graph (Vitruvian)",
            category=category("pose"),
            description="Condition on a POSE with a pose-graph adapter. Chains with ControlNets and T2I-Adapters "
                        "like Apply ControlNet; connect a latent to check the pose canvas before sampling.",
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                POSE_ADAPTER.Input("pose_adapter"),
                POSE.Input("pose"),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001),
                io.Vae.Input("vae", optional=True, tooltip="Only read for its pixel-to-latent factor (default 8)."),
                io.Latent.Input("latent", optional=True, tooltip="The latent to sample; checks the pose canvas now."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, pose_adapter, pose, strength, start_percent, end_percent, vae=None,
                latent=None) -> io.NodeOutput:
        _check_people(pose)
        if start_percent > end_percent:
            raise PoseFormatError(f"{APPLY}: start_percent must be <= end_percent, got {start_percent} > {end_percent}")
        if latent is not None:
            compression = int(vae.spacial_compression_encode()) if vae is not None else 8
            check_pose_canvas(pose, tuple(latent["samples"].shape[-2:]), where=APPLY, compression=compression)
        if strength == 0:
            return io.NodeOutput(positive, negative)
        controls, out = {}, []
        for conditioning in (positive, negative):
            c = []
            for t in conditioning:
                d = t[1].copy()
                prev = d.get("control", None)
                if prev not in controls:
                    control = pose_adapter.copy().set_pose(pose, strength, (start_percent, end_percent), vae)
                    control.set_previous_controlnet(prev)
                    controls[prev] = control
                d["control"] = controls[prev]
                d["control_apply_to_uncond"] = False
                c.append([t[0], d])
            out.append(c)
        return io.NodeOutput(out[0], out[1])


class VitruvianPoseError(VitruvianNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VitruvianPoseError",
            display_name="Pose Keypoint Error (Vitruvian)",
            category=category("pose"),
            description="How well images follow a target POSE: a heatmap pose estimator (.onnx in "
                        "models/vitruvian/pose_estimators) finds the keypoints; reports distance-AP (PCK averaged "
                        "over 0.05-0.5 of the person's box diagonal) and the mean distance.",
            inputs=[
                io.Image.Input("image"),
                POSE.Input("pose", tooltip="The pose the images should show (one frame, or one per image)."),
                io.Combo.Input("estimator", options=_files(ESTIMATOR_FOLDER), tooltip="Single-person heatmap model."),
                io.Combo.Input("keypoint_format", options=list(BODY_FORMATS), default="coco17",
                               tooltip="The estimator's keypoint order (COCO models: coco17)."),
                io.Float.Input("min_confidence", default=0.3, min=0.0, max=1.0, step=0.01),
            ],
            outputs=[io.Float.Output(display_name="ap"), io.Float.Output(display_name="mean_distance"),
                     io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, pose, estimator, keypoint_format, min_confidence) -> io.NodeOutput:
        from ..core.pose_adapter.evaluate import OnnxHeatmapEstimator, pose_error

        path = _model_path(ESTIMATOR_FOLDER, estimator, "VitruvianPoseError: pose estimator")
        model = OnnxHeatmapEstimator(path, keypoint_format=keypoint_format)
        report = pose_error(image_to_core(image), pose, model, min_confidence=min_confidence)
        text = report.summary()
        return io.NodeOutput(report.ap, report.mean_distance, text, ui=ui.PreviewText(text))


NODES = [VitruvianLoadPoseAdapter, VitruvianApplyPoseGraph, VitruvianPoseError]
