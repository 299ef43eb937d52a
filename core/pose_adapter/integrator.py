"""The Progressive Graph Integrator (PGI): GRPose's replacement for the first res block of each level.

In order (methods.md §5): (1) SiLU → conv3×3 plus the projected time embedding; (2) GroupNorm without
affine; (3) the latent branch through a dynamic-kNN :class:`~.graph_conv.GraphBlock`, the pose branch
through ``cond_conv`` (3×3) and its own GraphBlock; (4) :class:`FuseLayer`; (5) another GraphBlock;
(6) dropout, a zero-initialised conv3×3, plus the (projected) input as a skip connection. A fresh PGI
is therefore the identity on its input (or its 1×1 projection when the width changes).

**Graph width.** GRPose runs the graph layers at the level's full width C. Here they run at
G = C / ``reduction`` between a 1×1 ``reduce`` (C → G) and a 1×1 ``expand`` (G → C); ``reduction = 1``
is GRPose exactly (no projections). Why: per denoising step two dense kNN graphs cost 2·N²·G for the
similarities plus ~9·G²·N for the 1×1 layers; at full width on SD1.5 at 512² (N = 4096 at level 0) that
is ~19 % of the encoder copy's FLOPs, against a budget of 10 % (the adapter's overhead ≤ 1.1× a
ControlNet's); G = C/4 brings it to ~3 % (``benchmarks/pose_adapter.py``).

**Caching.** The pose branch (cond_conv → GraphBlock → the fuse layer's pose 1×1) depends on neither the
latent nor the timestep, so :meth:`encode_pose` is separate: callers compute it once per sampling run
(ComfyUI) or per training batch and pass the result to every denoising step.

Shape:
    - x: ``(B, C_in, h, w)``; temb: ``(B, T)``; pose: ``(B, P, h, w)`` → ``(B, C_out, h, w)``
    - cached pose features (:meth:`encode_pose`): ``(B, G, h, w)``
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .graph_conv import GraphBlock

__all__ = ["FuseLayer", "ProgressiveGraphIntegrator", "zero_module"]


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to 0 (ControlNet's zero convolution) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class FuseLayer(nn.Module):
    """1×1 on each branch, concatenate, 1×1: ``(B, C, h, w)`` × 2 → ``(B, C, h, w)``.

    ``forward`` takes the pose branch already through ``self.pose`` (it is cached per pose);
    ``fuse(latent, pose)`` is the whole layer.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.latent = nn.Conv2d(channels, channels, 1)
        self.pose = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, latent: torch.Tensor, pose_projected: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.latent(latent), pose_projected], dim=1))

    def fuse(self, latent: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return self(latent, self.pose(pose))


class ProgressiveGraphIntegrator(nn.Module):
    """One PGI (see the module docstring).

    Args:
        in_channels: C_in of the input feature map.
        out_channels: C_out (the level's width).
        temb_channels: T, the time-embedding width.
        pose_channels: P, the pose-encoder width at this level.
        groups: GroupNorm groups (the UNet's ``norm_num_groups``; the graph width uses gcd(groups, G)).
        k, chunk: kNN neighbours and query chunk of the graph blocks.
        dropout: before the zero convolution.
        reduction: graph width G = C_out / reduction (1 = GRPose's full width).

    The parameter names ``conv1``, ``time_emb_proj`` and ``conv_shortcut`` match diffusers'
    ``ResnetBlock2D``, so a PGI starts from the weights of the res block it replaces where shapes agree.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, pose_channels: int, *,
                 groups: int = 32, k: int = 9, chunk: int = 1024, dropout: float = 0.0, eps: float = 1e-5,
                 reduction: int = 1):
        super().__init__()
        if reduction < 1 or out_channels % reduction:
            raise ValueError(f"ProgressiveGraphIntegrator: reduction must divide out_channels {out_channels}, "
                             f"got {reduction}")
        width = out_channels // reduction
        graph = dict(groups=math.gcd(groups, width), k=k, chunk=chunk, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm = nn.GroupNorm(groups, out_channels, affine=False, eps=eps)
        self.reduce = nn.Conv2d(out_channels, width, 1) if reduction > 1 else None
        self.cond_conv = nn.Conv2d(pose_channels, width, 3, padding=1)
        self.graph_pose = GraphBlock(width, **graph)
        self.graph_latent = GraphBlock(width, **graph)
        self.fuse = FuseLayer(width)
        self.graph_fused = GraphBlock(width, **graph)
        self.expand = nn.Conv2d(width, out_channels, 1) if reduction > 1 else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def encode_pose(self, pose: torch.Tensor) -> torch.Tensor:
        """The pose branch up to the fuse layer, ``(B, P, h, w)`` → ``(B, G, h, w)``; independent of x and t."""
        return self.fuse.pose(self.graph_pose(self.cond_conv(pose)))

    def forward(self, x: torch.Tensor, temb: torch.Tensor, pose_features: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, h, w)``, ``temb (B, T)``, ``pose_features (B, G, h, w)`` from :meth:`encode_pose`."""
        h = self.conv1(F.silu(x))
        h = h + self.time_emb_proj(F.silu(temb)).to(h.dtype)[:, :, None, None]
        h = self.norm(h)
        if self.reduce is not None:
            h = self.reduce(h)
        h = self.graph_latent(h)
        if pose_features.shape[-2:] != h.shape[-2:] or pose_features.shape[1] != h.shape[1]:
            raise ValueError(f"ProgressiveGraphIntegrator: pose_features must be (B, {h.shape[1]}, "
                             f"{h.shape[2]}, {h.shape[3]}) from encode_pose, got {tuple(pose_features.shape)}")
        h = self.graph_fused(self.fuse(h, pose_features.to(h.dtype)))
        if self.expand is not None:
            h = self.expand(h)
        h = self.conv_out(self.dropout(h))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h
