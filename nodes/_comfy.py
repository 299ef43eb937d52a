"""The one module that imports ComfyUI's node API.

ComfyUI's V3 API (``comfy_api.latest``) is not frozen; keeping every import of it here
makes an upstream rename a one-file fix. Node modules do ``from ._comfy import io, ui``.
"""

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported)

from ._checks import register_type, wrap_execute

__all__ = ["ComfyExtension", "io", "ui", "VitruvianNode", "POSE", "POSE_KEYPOINT", "REGIONS", "SEGS", "POSE_ADAPTER", "CATEGORY", "category"]

CATEGORY = "Vitruvian"

#: The pack's lossless keypoint type (:class:`vitruvian.core.pose.PoseBatch`).
POSE = io.Custom("VITRUVIAN_POSE")
#: comfyui_controlnet_aux's keypoint type: a list (one dict per image) of OpenPose-style people.
POSE_KEYPOINT = io.Custom("POSE_KEYPOINT")
#: Face / hand / person regions per image (:class:`vitruvian.core.regions.RegionBatch`).
REGIONS = io.Custom("VITRUVIAN_REGIONS")
#: Impact Pack's segments type, for interop when Impact is installed.
SEGS = io.Custom("SEGS")
#: A loaded pose-graph adapter, ready to apply (``nodes.pose_adapter.PoseGraphControl`` without a pose).
POSE_ADAPTER = io.Custom("VITRUVIAN_POSE_ADAPTER")


def category(area: str) -> str:
    """``Vitruvian/<area>``, the menu path every node of the pack uses."""
    return f"{CATEGORY}/{area}"


class VitruvianNode(io.ComfyNode):
    """Base of every node of the pack: ``execute`` checks each input against the schema first
    (see :mod:`._checks`), so a wrong object, a NaN image or an unknown option is a clear node error."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            wrap_execute(cls)


def _is(module: str, name: str):
    """``isinstance(value, <module>.<name>)``, the module relative to this package and imported on first use
    (the pack may be loaded under a folder name, so never by its absolute name)."""
    def accepts(value) -> bool:
        import importlib

        return isinstance(value, getattr(importlib.import_module(module, __package__), name))
    return accepts


register_type(POSE.io_type, _is("..core.pose", "PoseBatch"),
              "a POSE from a Vitruvian pose node (Load Pose, Pose from Keypoints)")
register_type(REGIONS.io_type, _is("..core.regions", "RegionBatch"),
              "REGIONS from Detect Regions (Vitruvian)")
