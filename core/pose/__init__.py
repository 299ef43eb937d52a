"""Keypoints and skeleton graphs: a lossless pose type, the formats people use, readers and
writers, networkx skeletons and OpenPose-style previews.

Modules: :mod:`.keypoints` (the type), :mod:`.formats` (joint/bone tables, conversions),
:mod:`.io` (``load_pose``) with :mod:`.openpose`, :mod:`.coco`, :mod:`.mediapipe`
(format readers and writers), :mod:`.graph` (networkx), :mod:`.render` (previews), :mod:`.mirror` (horizontal flips).
"""

from ..errors import PoseFormatError
from .coco import to_coco_keypoints
from .formats import (
    BODY_FORMATS,
    FORMATS,
    PART_NAMES,
    KeypointFormat,
    convert_body,
    get_format,
    join_wholebody,
    split_wholebody,
)
from .graph import build_pose_graph, node_features, part_subgraph, to_edge_index
from .io import LOAD_FORMATS, LoadedPose, detect_format, load_pose
from .keypoints import SPACES, Part, Person, PoseBatch, PoseFrame
from .mediapipe import to_mediapipe_landmarks
from .mirror import mirror_frame, mirror_permutation, mirror_pose
from .openpose import to_openpose_json, to_pose_keypoint
from .render import overlay_pose, render_pose

__all__ = [
    "PoseFormatError",
    "Part", "Person", "PoseFrame", "PoseBatch", "SPACES",
    "KeypointFormat", "FORMATS", "BODY_FORMATS", "PART_NAMES", "get_format", "convert_body",
    "split_wholebody", "join_wholebody",
    "LOAD_FORMATS", "LoadedPose", "load_pose", "detect_format",
    "to_pose_keypoint", "to_openpose_json", "to_coco_keypoints", "to_mediapipe_landmarks",
    "build_pose_graph", "part_subgraph", "to_edge_index", "node_features",
    "render_pose", "overlay_pose",
    "mirror_frame", "mirror_pose", "mirror_permutation",
]
