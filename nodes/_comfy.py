"""The one module that imports ComfyUI's node API.

ComfyUI's V3 API (``comfy_api.latest``) is not frozen; keeping every import of it here
makes an upstream rename a one-file fix. Node modules do ``from ._comfy import io, ui``.
"""

from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported)

__all__ = ["ComfyExtension", "io", "ui", "POSE", "POSE_KEYPOINT", "REGIONS", "SEGS", "POSE_ADAPTER", "CATEGORY", "category"]

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
