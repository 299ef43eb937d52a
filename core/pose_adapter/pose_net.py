"""The pose network φ of the pose perception loss: a small heatmap CNN stored as one safetensors file.

The perception term ``‖φ(D(x̂0)) − φ(D(x0))‖²`` (:func:`.losses.pose_perception_loss`) needs a pose
network that is a *torch* module, so its gradient reaches the adapter. GRPose's released code calls mmpose
on uint8 numpy images, which has no gradient (methods.md §5(g)). This module defines the one architecture
the trainer reads, and its file format; nothing is downloaded.

Architecture (:class:`HeatmapPoseNet`): the image is resized to ``input_size``² (bilinear, antialiased) and
normalised with ``mean``/``std``; a stride-2 3×3 stem to ``channels[0]``, then per further width one
stride-2 3×3 convolution and one 3×3 convolution (each GroupNorm + SiLU), then a 1×1 head to one heatmap
per joint of ``keypoint_format``. Output stride ``2 ** len(channels)``.

File format (``.safetensors`` only)::

    tensors         the module's state dict (fp32 or fp16), names as in HeatmapPoseNet
    metadata        format = "vitruvian.pose_net", format_version = "1",
                    config = PoseNetConfig as JSON (keypoint_format, channels, input_size, mean, std, groups)

A network of this shape can be trained by any keypoint-heatmap recipe (e.g. distilled from a detector's
heatmaps) and saved with :func:`save_pose_net`. ``python -m vitruvian.core.pose_adapter.pose_net init``
writes a seeded *random* one: a feature-matching stand-in for smoke runs and tests, not a pose model.

Shape:
    - images ``(B, 3, H, W)`` float32 in [0, 1] → heatmaps ``(B, K, s / 2^n, s / 2^n)``, s = input_size,
      n = len(channels), K = the keypoint format's joint count
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_save_safetensors
from ..errors import ConfigError, ModelNotFoundError

__all__ = ["FORMAT", "FORMAT_VERSION", "PoseNetConfig", "HeatmapPoseNet", "save_pose_net", "load_pose_net", "main"]

FORMAT = "vitruvian.pose_net"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class PoseNetConfig:
    """Sizes of a :class:`HeatmapPoseNet`.

    Attributes:
        keypoint_format: the joints the heatmaps stand for (a :mod:`vitruvian.core.pose.formats` name).
        channels: width per stage; one stride-2 step per entry.
        input_size: images are resized to ``input_size × input_size`` first (a multiple of the stride).
        mean, std: per-channel normalisation of the [0, 1] image (ImageNet's by default).
        groups: GroupNorm groups (must divide every width).
    """

    keypoint_format: str = "coco17"
    channels: tuple[int, ...] = (32, 64, 128)
    input_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    groups: int = 8

    def __post_init__(self):
        from ..pose.formats import FORMATS

        for name in ("channels", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.keypoint_format not in FORMATS:
            problems.append(f"keypoint_format must be one of {', '.join(FORMATS)}, got {self.keypoint_format!r}")
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            problems.append(f"channels must be a non-empty list of positive integers, got {list(self.channels)}")
        elif self.groups < 1 or any(c % self.groups for c in self.channels):
            problems.append(f"groups must divide every width of channels {list(self.channels)}, got {self.groups}")
        if self.channels and (self.input_size < 1 or self.input_size % self.stride):
            problems.append(f"input_size must be a positive multiple of the stride {self.stride}, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean and std must be 3 numbers each (std > 0), got {list(self.mean)}, {list(self.std)}")
        if problems:
            raise ConfigError("PoseNetConfig: " + "; ".join(problems))

    @property
    def stride(self) -> int:
        return 2 ** len(self.channels)

    @property
    def num_keypoints(self) -> int:
        from ..pose.formats import get_format

        return get_format(self.keypoint_format).num_keypoints

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "PoseNetConfig") -> "PoseNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: config keys must be among {', '.join(sorted(known))}, got unknown {unknown}")
        return cls(**dict(data))


def _block(c_in: int, c_out: int, stride: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU()]


class HeatmapPoseNet(nn.Module):
    """Images → one heatmap per joint (see the module docstring).

    Example:
        >>> net = HeatmapPoseNet(PoseNetConfig(channels=(8,), input_size=32))
        >>> net(torch.rand(2, 3, 64, 48)).shape
        torch.Size([2, 17, 16, 16])
    """

    def __init__(self, config: PoseNetConfig):
        super().__init__()
        self.config = c = config
        layers = _block(3, c.channels[0], 2, c.groups)
        for a, b in zip(c.channels[:-1], c.channels[1:]):
            layers += _block(a, b, 2, c.groups) + _block(b, b, 1, c.groups)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c.channels[-1], c.num_keypoints, 1)
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"HeatmapPoseNet: images must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        s = self.config.input_size
        x = images.to(self.head.weight.dtype)
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.head(self.features(x))


def save_pose_net(path: str | os.PathLike, net: HeatmapPoseNet) -> Path:
    """Write ``net`` to ``path`` (``.safetensors``) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"save_pose_net: path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    atomic_save_safetensors(tensors, path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                            "config": net.config.to_json()})
    return path


def load_pose_net(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> HeatmapPoseNet:
    """Read a pose-network file: a frozen fp32 :class:`HeatmapPoseNet` in eval mode on ``device``.

    Raises:
        ModelNotFoundError: no such file.
        ConfigError: not a ``.safetensors`` file, not a ``vitruvian.pose_net`` file, or tensors that do not
            match the stored config (each named).
    """
    from safetensors import safe_open

    path = Path(path)
    where = "load_pose_net"
    if not path.is_file():
        raise ModelNotFoundError(f"pose network {str(path)!r}", [str(path.parent)])
    if path.suffix != ".safetensors":
        raise ConfigError(f"{where}: pose_net must be a .safetensors file (pickled .pt/.pth files are refused), "
                          f"got {path.name!r}; fix: save the network with vitruvian.core.pose_adapter.pose_net."
                          "save_pose_net")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ConfigError(f"{where}: {path.name} must be a readable .safetensors file, got an error ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{where}: {path.name} must be a pose network (metadata format {FORMAT!r}, version "
                          f"{FORMAT_VERSION!r}), got format {meta.get('format')!r} version "
                          f"{meta.get('format_version')!r}; fix: see vitruvian.core.pose_adapter.pose_net for the "
                          "file format (create one with `python -m vitruvian.core.pose_adapter.pose_net init`)")
    try:
        config = PoseNetConfig.from_dict(json.loads(meta.get("config", "")), where=where)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {path.name} metadata 'config' must be JSON, got an error ({exc})") from exc
    net = HeatmapPoseNet(config)
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ConfigError(f"{where}: {path.name} must hold exactly the tensors its config describes, got "
                          f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                          f"{len(wrong)} mis-shaped {wrong[:3]}")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitruvian.core.pose_adapter.pose_net",
                                     description="Create pose-network files for the pose perception loss.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="A seeded random network (smoke runs and tests; not a trained pose model).")
    init.add_argument("--out", required=True, help="Output .safetensors path.")
    init.add_argument("--keypoint-format", default="coco17", help="Joints of the heatmaps (default coco17).")
    init.add_argument("--channels", default="32,64,128", help="Widths per stride-2 stage, comma-separated.")
    init.add_argument("--input-size", type=int, default=256, help="Images are resized to this square size.")
    init.add_argument("--seed", type=int, default=0, help="Seed of the weights.")
    args = parser.parse_args(argv)
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        parser.error(f"--channels must be comma-separated integers, got {args.channels!r}")
    torch.manual_seed(args.seed)
    net = HeatmapPoseNet(PoseNetConfig(keypoint_format=args.keypoint_format, channels=channels,
                                       input_size=args.input_size))
    out = save_pose_net(args.out, net)
    print(f"wrote {out} ({sum(p.numel() for p in net.parameters())} parameters, random weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
