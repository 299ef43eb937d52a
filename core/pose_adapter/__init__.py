"""Pose-graph conditioning (GRPose, methods.md §5): a ControlNet-style adapter whose first res block at
each level is a Progressive Graph Integrator over a dynamic kNN graph of feature-map positions, fed by a
pose encoder on the rendered skeleton plus our skeleton-graph embedding (joint and bone identities).

Modules: :mod:`.config` (sizes), :mod:`.graph_conv` (chunked dynamic-kNN EdgeConv), :mod:`.integrator`
(PGI), :mod:`.skeleton_embed` (joint/bone embeddings rasterised on the latent grid), :mod:`.pose_encoder`
(condition + encoder), :mod:`.adapter` (the module and its residuals for diffusers and ComfyUI),
:mod:`.ldm` (LDM / ComfyUI checkpoints), :mod:`.io` (safetensors files, ``init`` CLI), :mod:`.losses`
(pose-masked and pose-perception losses), :mod:`.pose_net` (the perception loss's torch pose network
and its file format), :mod:`.evaluate` (keypoint error with an ONNX estimator).

Nothing heavy at import: diffusers is imported when an adapter is built.
"""

from .adapter import AdapterResiduals, PoseGraphAdapter
from .config import PoseAdapterConfig
from .graph_conv import EdgeConv, GraphBlock, knn_indices
from .integrator import ProgressiveGraphIntegrator
from .pose_encoder import PoseCondition, PoseEncoder, check_pose_canvas, prepare_pose_condition
from .skeleton_embed import SkeletonEmbedding, SkeletonTokens, bone_vocabulary, joint_vocabulary, skeleton_tokens

__all__ = [
    "PoseAdapterConfig", "PoseGraphAdapter", "AdapterResiduals",
    "knn_indices", "EdgeConv", "GraphBlock", "ProgressiveGraphIntegrator",
    "SkeletonEmbedding", "SkeletonTokens", "skeleton_tokens", "joint_vocabulary", "bone_vocabulary",
    "PoseCondition", "PoseEncoder", "prepare_pose_condition", "check_pose_canvas",
]
