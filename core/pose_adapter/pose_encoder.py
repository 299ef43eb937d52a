"""From a ``PoseBatch`` to per-level pose features: the condition (rendered skeleton + skeleton tokens)
and the pose encoder that turns it into one feature map per UNet level.

:func:`prepare_pose_condition` checks the poses against the latent (every image has people; the pose
canvas has the latent's aspect ratio), renders the stick figure at pixel resolution (OpenPose colours,
:func:`vitruvian.core.pose.render_pose`) and collects each image's skeleton tokens. It is pure CPU work
done once per sampling run.

:class:`PoseEncoder` follows GRPose's: a conv stack (3 → 32 → 64 → 128 channels, three stride-2 steps
from pixels down to the latent grid), then our skeleton-embedding map is concatenated at latent
resolution and merged, then one stride-2 extractor per further level; each level's output passes a
zero-initialised 3×3 convolution.

Shape:
    - hint: ``(B, 3, H, W)`` in [0, 1] with H = f·h, W = f·w (f = 8 for SD's VAE)
    - skeleton map: ``(B, D, h, w)``
    - features: level l is ``(B, P_l, ⌈h / 2^l⌉, ⌈w / 2^l⌉)``
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PoseFormatError
from ..pose import PoseBatch, render_pose
from .integrator import zero_module
from .skeleton_embed import SkeletonTokens, skeleton_tokens

__all__ = ["PoseCondition", "prepare_pose_condition", "check_pose_canvas", "PoseEncoder"]


@dataclass(frozen=True)
class PoseCondition:
    """What the adapter's pose side reads; independent of the noisy latent and the timestep.

    Attributes:
        hint: ``(B, 3, H, W)`` float32 in [0, 1], the rendered skeleton at pixel resolution.
        tokens: B :class:`SkeletonTokens`, one per image.
        latent_size: ``(h, w)`` the condition was prepared for.
    """

    hint: torch.Tensor
    tokens: tuple[SkeletonTokens, ...]
    latent_size: tuple[int, int]

    def __len__(self) -> int:
        return self.hint.shape[0]


def check_pose_canvas(pose: PoseBatch, latent_size: tuple[int, int], *, where: str, compression: int = 8) -> None:
    """PoseFormatError unless every frame has people and a canvas with the latent's aspect ratio.

    The canvas may be any size (poses are scaled), but its aspect ratio must match ``w / h`` to within
    one latent cell, otherwise the skeleton would be stretched.
    """
    if not isinstance(pose, PoseBatch):
        raise PoseFormatError(f"{where}: pose must be a PoseBatch, got {type(pose).__name__}")
    if len(pose) == 0:
        raise PoseFormatError(f"{where}: pose must hold at least one image, got an empty PoseBatch")
    h, w = latent_size
    for i, frame in enumerate(pose):
        if not frame.people:
            raise PoseFormatError(f"{where}: pose image {i} must have at least one person, got none; "
                                  "a pose adapter needs a skeleton to follow (check the detector's output)")
        cw, ch = frame.canvas_width, frame.canvas_height
        expected_h = cw * h / w
        if abs(ch - expected_h) > cw / w:
            raise PoseFormatError(
                f"{where}: pose image {i} canvas must have the latent's aspect ratio {w * compression}×"
                f"{h * compression} (latent {w}×{h}), got a {cw}×{ch} canvas; make the empty latent "
                f"{cw}×{ch} (or a multiple), or crop/resize the pose to the image size"
            )


def prepare_pose_condition(pose: PoseBatch, latent_size: tuple[int, int], skeleton, *, compression: int = 8,
                           min_confidence: float = 0.3, where: str = "prepare_pose_condition") -> PoseCondition:
    """Render the skeletons and collect the skeleton tokens for a latent of ``latent_size``.

    Args:
        pose: B frames (one per image).
        latent_size: ``(h, w)`` of the latent; the hint is ``compression`` times larger.
        skeleton: the adapter's :class:`~.skeleton_embed.SkeletonEmbedding` (for its vocabularies).
        compression: the VAE's pixel-to-latent factor (8 for SD1.5/SDXL).
        min_confidence: points below it are not drawn in the hint (the tokens keep them, weighted).

    Returns:
        :class:`PoseCondition` with ``hint (B, 3, compression·h, compression·w)``.
    """
    check_pose_canvas(pose, latent_size, where=where, compression=compression)
    h, w = latent_size
    size = (w * compression, h * compression)
    thickness = max(1, round(4 * max(size) / 512))  # OpenPose's 4 px at 512²
    hint = render_pose(pose, size=size, min_confidence=min_confidence, thickness=thickness)
    tokens = tuple(skeleton_tokens(frame, skeleton.joint_vocab, skeleton.bone_vocab) for frame in pose)
    return PoseCondition(hint=hint, tokens=tokens, latent_size=(h, w))


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class PoseEncoder(nn.Module):
    """Rendered skeleton + skeleton map → one zero-initialised feature map per level.

    Args:
        hint_channels: channels of the rendered hint (3).
        skeleton_dim: D, channels of the skeleton-embedding map.
        pose_channels: P_l per level.

    Shape:
        - hint ``(B, 3, 8h, 8w)``, skeleton ``(B, D, h, w)`` → ``[(B, P_l, h_l, w_l)]`` for each level l
    """

    def __init__(self, hint_channels: int, skeleton_dim: int, pose_channels: tuple[int, ...]):
        super().__init__()
        p0 = pose_channels[0]
        self.stem = nn.Sequential(
            _conv(hint_channels, 32), nn.SiLU(), _conv(32, 64, 2), nn.SiLU(), _conv(64, 64), nn.SiLU(),
            _conv(64, 128, 2), nn.SiLU(), _conv(128, 128), nn.SiLU(), _conv(128, p0, 2), nn.SiLU(),
        )
        self.merge = nn.Sequential(_conv(p0 + skeleton_dim, p0), nn.SiLU())
        self.down = nn.ModuleList(
            nn.Sequential(_conv(a, b, 2), nn.SiLU()) for a, b in zip(pose_channels[:-1], pose_channels[1:])
        )
        self.zero_convs = nn.ModuleList(zero_module(_conv(c, c)) for c in pose_channels)

    def forward(self, hint: torch.Tensor, skeleton_map: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(hint)
        if x.shape[-2:] != skeleton_map.shape[-2:]:  # an odd pixel size: align to the latent grid
            x = F.interpolate(x, size=skeleton_map.shape[-2:], mode="nearest")
        x = self.merge(torch.cat([x, skeleton_map.to(x.dtype)], dim=1))
        feats = [x]
        for down in self.down:
            feats.append(down(feats[-1]))
        return [zc(f) for zc, f in zip(self.zero_convs, feats)]
