"""The block layout of an LDM-layout UNet (single-file SD checkpoints, what ComfyUI loads), read from tensor shapes.

One reader for everyone who sizes a model from a checkpoint: the trainer (``trainers.model_detect``: the
diffusers UNet config) and the pose adapter (``core.pose_adapter.ldm``: the adapter's encoder copy). As
ComfyUI's ``model_detection`` does: levels from the downsamplers (``input_blocks.N.0.op``), widths from the
first res block's output of each level, transformer depths from ``transformer_blocks.N``, context widths from
``attn2.to_k``, the projection type from ``proj_in``'s rank, SDXL's class embedding from ``label_emb``.

    >>> s = {"input_blocks.0.0.weight": (32, 4, 3, 3), "input_blocks.1.0.in_layers.0.weight": (32,),
    ...      "input_blocks.1.0.out_layers.3.weight": (32, 32, 3, 3), "out.2.weight": (4, 32, 3, 3)}
    >>> read_layout(s, where="doc")
    UnetLayout(in_channels=4, out_channels=4, channels=(32,), layers_per_block=1, depth=(0,), mid_depth=0, contexts=(), linear_projection=False, label_emb_dim=0)
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["UnetLayout", "read_layout", "count_indices"]


@dataclass(frozen=True)
class UnetLayout:
    """What the shapes say about an LDM UNet.

    Attributes:
        in_channels / out_channels: latent channels in and out (out 0 when ``out.2`` is absent).
        channels: width per resolution level. layers_per_block: res blocks per level (the same on every level).
        depth: transformer blocks per level (0 = no attention there). mid_depth: in the middle block.
        contexts: the distinct cross-attention context widths, sorted. linear_projection: ``proj_in`` is linear.
        label_emb_dim: input width of SDXL's class embedding (0 when the UNet has none).
    """

    in_channels: int
    out_channels: int
    channels: tuple[int, ...]
    layers_per_block: int
    depth: tuple[int, ...]
    mid_depth: int
    contexts: tuple[int, ...]
    linear_projection: bool
    label_emb_dim: int


def count_indices(shapes: Mapping[str, tuple], pattern: str) -> int:
    """Number of distinct integer indices ``N`` in keys matching ``pattern`` (a regex with one group)."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def read_layout(shapes: Mapping[str, tuple], *, where: str) -> UnetLayout:
    """The layout of the UNet whose tensor shapes (keys without the checkpoint's prefix) are ``shapes``.

    Raises ConfigError (prefixed with ``where``) when ``input_blocks.0.0`` is missing or the levels differ in
    their number of res blocks.
    """
    if "input_blocks.0.0.weight" not in shapes:
        raise ConfigError(f"{where}: the UNet must have input_blocks.0.0.weight (an LDM-layout SD UNet), got "
                          f"{len(shapes)} keys without it")
    levels: list[list[int]] = [[]]  # input-block ids per resolution level
    i = 1
    while f"input_blocks.{i}.0.op.weight" in shapes or f"input_blocks.{i}.0.in_layers.0.weight" in shapes:
        if f"input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        else:
            levels[-1].append(i)
        i += 1
    per_level = {len(ids) for ids in levels}
    if not levels[0] or len(per_level) != 1:
        raise ConfigError(f"{where}: the UNet must have the same number (>= 1) of res blocks per level, "
                          f"got {[len(x) for x in levels]}")
    proj = [v for k, v in shapes.items() if k.endswith(".proj_in.weight")]
    return UnetLayout(
        in_channels=shapes["input_blocks.0.0.weight"][1],
        out_channels=shapes["out.2.weight"][0] if "out.2.weight" in shapes else 0,
        channels=tuple(shapes[f"input_blocks.{ids[0]}.0.out_layers.3.weight"][0] for ids in levels),
        layers_per_block=per_level.pop(),
        depth=tuple(count_indices(shapes, rf"input_blocks\.{ids[0]}\.1\.transformer_blocks\.(\d+)\.") for ids in levels),
        mid_depth=count_indices(shapes, r"middle_block\.1\.transformer_blocks\.(\d+)\."),
        contexts=tuple(sorted({v[-1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")})),
        linear_projection=bool(proj) and len(proj[0]) == 2,
        label_emb_dim=shapes["label_emb.0.0.weight"][1] if "label_emb.0.0.weight" in shapes else 0,
    )
