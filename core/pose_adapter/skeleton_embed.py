"""The skeleton-graph embedding: joint identity and bone embeddings rasterised onto the latent grid.

A rendered stick figure tells a network little about *which* joint it sees: left and right limbs differ
only by colour, and the 21 joints of a hand blur into one blob at latent resolution. Here every joint
and bone of the pack's networkx skeleton (:func:`vitruvian.core.pose.build_pose_graph`) carries a
learned embedding chosen by its identity: ``"left_hand:thumb_tip"``, ``"body:left_elbow-left_wrist"``,
``"link:body.left_wrist-left_hand.wrist"``. Each is splatted onto the ``h × w`` latent grid as a Gaussian
(σ in latent cells) around the joint, or around the bone segment, weighted by the keypoint confidence
(a bone by the lower of its two joints'), and the embeddings are summed per cell into a ``(D, h, w)`` map.

networkx runs once per pose (:func:`skeleton_tokens`), never per denoising step; rasterising is a pair
of small matrix products and is differentiable in the embeddings.

Vocabularies are built from the format tables (every joint name of every format a part may hold) and
stored with the adapter's weights, so an adapter keeps its rows even if formats are added later;
a name missing from a stored vocabulary maps to row 0 (``"<unknown>"``).

Shape:
    - tokens of one image: J joints, E bones (all people of the image)
    - map: ``(D, h, w)``; batch of maps ``(B, D, h, w)``
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..pose import FORMATS, PART_NAMES, PoseFrame, build_pose_graph
from ..pose.formats import PART_KINDS, PART_LINKS

__all__ = ["UNKNOWN", "joint_vocabulary", "bone_vocabulary", "SkeletonTokens", "skeleton_tokens",
           "rasterize_skeleton", "SkeletonEmbedding"]

UNKNOWN = "<unknown>"


def joint_vocabulary() -> tuple[str, ...]:
    """``"<unknown>"`` then every ``"part:joint"`` a person can hold, sorted (left/right hands apart)."""
    keys = {f"{part}:{name}" for part in PART_NAMES for f in FORMATS.values() if f.kind == PART_KINDS[part]
            for name in f.joints}
    return (UNKNOWN, *sorted(keys))


def _bone_key(part: str, a: str, b: str) -> str:
    return f"{part}:{min(a, b)}-{max(a, b)}"


def bone_vocabulary() -> tuple[str, ...]:
    """``"<unknown>"`` then every bone ``"part:a-b"`` (joint names sorted) and part link, sorted."""
    keys = set()
    for part in PART_NAMES:
        for f in FORMATS.values():
            if f.kind == PART_KINDS[part]:
                keys.update(_bone_key(part, f.joints[i], f.joints[j]) for i, j in f.bones)
    keys.update(_bone_key("link", f"{pa}.{ja}", f"{pb}.{jb}") for pa, ja, pb, jb in PART_LINKS)
    return (UNKNOWN, *sorted(keys))


@dataclass(frozen=True)
class SkeletonTokens:
    """The joints and bones of one image (all its people), ready to rasterise.

    Attributes:
        joint_xy: ``(J, 2)`` float32, x and y as fractions of the canvas width and height.
        joint_conf: ``(J,)`` float32 in [0, 1].
        joint_ids: ``(J,)`` int64 rows of the joint vocabulary.
        bone_xy: ``(E, 2, 2)`` float32, the two end points (fractions of the canvas).
        bone_conf: ``(E,)`` float32, the lower confidence of the two joints.
        bone_ids: ``(E,)`` int64 rows of the bone vocabulary.
    """

    joint_xy: torch.Tensor
    joint_conf: torch.Tensor
    joint_ids: torch.Tensor
    bone_xy: torch.Tensor
    bone_conf: torch.Tensor
    bone_ids: torch.Tensor

    @property
    def num_joints(self) -> int:
        return self.joint_ids.shape[0]


def skeleton_tokens(frame: PoseFrame, joint_vocab: Sequence[str], bone_vocab: Sequence[str], *,
                    min_confidence: float = 1e-3) -> SkeletonTokens:
    """Joints and bones of every person in ``frame`` via :func:`build_pose_graph`.

    Args:
        frame: one image's people (any coordinate space; converted to fractions of the canvas).
        joint_vocab, bone_vocab: the adapter's vocabularies (:func:`joint_vocabulary`, :func:`bone_vocabulary`).
        min_confidence: joints below it (and their bones) are dropped; the default only drops missing
            points ``(0, 0, 0)``, real low confidences stay and weigh little.
    """
    frame = frame.to_normalized()
    joint_row = {k: i for i, k in enumerate(joint_vocab)}
    bone_row = {k: i for i, k in enumerate(bone_vocab)}
    jxy, jc, jid, bxy, bc, bid = [], [], [], [], [], []
    for person in frame.people:
        G = build_pose_graph(person, min_confidence=min_confidence)
        for _, d in G.nodes(data=True):
            jxy.append((d["x"], d["y"]))
            jc.append(d["confidence"])
            jid.append(joint_row.get(f"{d['part']}:{d['name']}", 0))
        for u, v, e in G.edges(data=True):
            du, dv = G.nodes[u], G.nodes[v]
            if e["part"] == "link":
                key = _bone_key("link", f"{du['part']}.{du['name']}", f"{dv['part']}.{dv['name']}")
            else:
                key = _bone_key(e["part"], du["name"], dv["name"])
            bxy.append(((du["x"], du["y"]), (dv["x"], dv["y"])))
            bc.append(min(du["confidence"], dv["confidence"]))
            bid.append(bone_row.get(key, 0))
    f32, i64 = torch.float32, torch.int64
    return SkeletonTokens(
        joint_xy=torch.tensor(jxy, dtype=f32).reshape(-1, 2), joint_conf=torch.tensor(jc, dtype=f32),
        joint_ids=torch.tensor(jid, dtype=i64), bone_xy=torch.tensor(bxy, dtype=f32).reshape(-1, 2, 2),
        bone_conf=torch.tensor(bc, dtype=f32), bone_ids=torch.tensor(bid, dtype=i64),
    )


def rasterize_skeleton(tokens: SkeletonTokens, joint_table: torch.Tensor, bone_table: torch.Tensor,
                       size: tuple[int, int], sigma: float = 1.0) -> torch.Tensor:
    """Splat each joint's and bone's embedding as a confidence-weighted Gaussian on an ``h × w`` grid.

    Args:
        tokens: one image's joints and bones.
        joint_table: ``(V_j, D)`` joint embeddings. bone_table: ``(V_b, D)`` bone embeddings.
        size: ``(h, w)`` of the latent grid.
        sigma: Gaussian radius in grid cells (distance to the joint, or to the nearest point of the bone).

    Returns:
        ``(D, h, w)`` in the tables' dtype and device.

    Example:
        >>> tokens = SkeletonTokens(torch.tensor([[0.5, 0.5]]), torch.ones(1), torch.tensor([1]),
        ...                         torch.zeros(0, 2, 2), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        >>> m = rasterize_skeleton(tokens, torch.eye(2), torch.eye(2), (4, 4), sigma=0.5)
        >>> m.shape, round(float(m[0].sum()), 4), bool(m[1].max() > 0.3)
        (torch.Size([2, 4, 4]), 0.0, True)
    """
    h, w = size
    device, dtype = joint_table.device, joint_table.dtype
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(w, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    cells = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (h·w, 2) in cell units
    scale = torch.tensor([w, h], device=device, dtype=torch.float32)
    two_s2 = 2.0 * sigma * sigma

    joints = tokens.joint_xy.to(device) * scale  # (J, 2)
    d2 = (joints[:, None, :] - cells[None]).square().sum(-1)  # (J, h·w)
    wj = tokens.joint_conf.to(device)[:, None] * torch.exp(-d2 / two_s2)

    a = tokens.bone_xy[:, 0].to(device) * scale  # (E, 2)
    seg = tokens.bone_xy[:, 1].to(device) * scale - a
    rel = cells[None] - a[:, None]  # (E, h·w, 2)
    t = ((rel * seg[:, None]).sum(-1) / seg.square().sum(-1).clamp_min(1e-12)[:, None]).clamp(0, 1)
    d2b = (rel - t[..., None] * seg[:, None]).square().sum(-1)
    wb = tokens.bone_conf.to(device)[:, None] * torch.exp(-d2b / two_s2)

    ej = joint_table[tokens.joint_ids.to(device)]  # (J, D)
    eb = bone_table[tokens.bone_ids.to(device)]  # (E, D)
    out = ej.T @ wj.to(dtype) + eb.T @ wb.to(dtype)  # (D, h·w)
    return out.reshape(-1, h, w)


class SkeletonEmbedding(nn.Module):
    """Learned joint and bone embeddings and their rasterisation (:func:`rasterize_skeleton`).

    Args:
        joint_vocab, bone_vocab: vocabularies (rows of the two tables).
        dim: embedding width D.
        sigma: Gaussian radius in latent cells.

    Shape:
        - forward: B token sets and ``(h, w)`` → ``(B, D, h, w)``
    """

    def __init__(self, joint_vocab: Sequence[str], bone_vocab: Sequence[str], dim: int = 32, sigma: float = 1.0):
        super().__init__()
        self.joint_vocab, self.bone_vocab = tuple(joint_vocab), tuple(bone_vocab)
        self.sigma = float(sigma)
        self.joints = nn.Embedding(len(self.joint_vocab), dim)
        self.bones = nn.Embedding(len(self.bone_vocab), dim)

    def tokens(self, frame: PoseFrame) -> SkeletonTokens:
        return skeleton_tokens(frame, self.joint_vocab, self.bone_vocab)

    def forward(self, tokens: Sequence[SkeletonTokens], size: tuple[int, int]) -> torch.Tensor:
        maps = [rasterize_skeleton(t, self.joints.weight, self.bones.weight, size, self.sigma) for t in tokens]
        return torch.stack(maps)
