"""LDM-layout UNets (single-file SD checkpoints, what ComfyUI loads) → an adapter's config and weights.

The config is read from tensor shapes, as ComfyUI's ``model_detection`` does: widths per level from the
res blocks, levels from the downsamplers, transformer depths from ``transformer_blocks.N``, the text-context
width from ``attn2.to_k``, the projection type from ``proj_in``'s rank, SDXL's extra embedding from
``label_emb``. What shapes cannot tell follows the family conventions: 8 heads for a 768-wide context
(SD1.x), heads of width 64 otherwise; SDXL time ids embedded at 256. The key renaming is diffusers'
own (``convert_ldm_unet_checkpoint``). Only the encoder half and the middle block are used.

    >>> adapter = adapter_from_ldm("tiny_sd15.safetensors")   # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..errors import ConfigError
from ..ldm_unet import read_layout
from .config import PoseAdapterConfig

__all__ = ["LDM_PREFIX", "config_from_ldm", "ldm_to_diffusers", "read_ldm_unet", "adapter_from_ldm"]

#: Where a single-file SD checkpoint keeps its UNet.
LDM_PREFIX = "model.diffusion_model."
SDXL_TIME_EMBED = 256


def config_from_ldm(shapes: Mapping[str, tuple], *, prefix: str = LDM_PREFIX, **pose_options) -> PoseAdapterConfig:
    """The adapter config for the LDM UNet whose tensor shapes are ``shapes`` (keys with ``prefix``).

    ``pose_options`` set the pose-side fields. Raises ConfigError naming what is missing or irregular.
    """
    s = {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    where = "config_from_ldm"
    if "input_blocks.0.0.weight" not in s:
        raise ConfigError(f"{where}: the checkpoint must hold an SD UNet under {prefix!r} (input_blocks.0.0.weight), "
                          f"got {len(s)} keys there; pass the UNet's prefix (ComfyUI: 'diffusion_model.')")
    layout = read_layout(s, where=where)
    if len(layout.contexts) != 1:
        raise ConfigError(f"{where}: the UNet must have cross-attention with one context width, got {list(layout.contexts)}")
    context = layout.contexts[0]
    return PoseAdapterConfig(
        in_channels=layout.in_channels,
        block_out_channels=layout.channels,
        layers_per_block=layout.layers_per_block,
        cross_attention=tuple(d > 0 for d in layout.depth),
        transformer_layers=tuple(max(d, 1) for d in layout.depth),
        mid_transformer_layers=max(layout.mid_depth, 1),
        num_attention_heads=tuple(8 if context == 768 else max(1, c // 64) for c in layout.channels),
        cross_attention_dim=context,
        use_linear_projection=layout.linear_projection,
        addition_embed_dim=layout.label_emb_dim,
        addition_time_embed_dim=SDXL_TIME_EMBED if layout.label_emb_dim else 0,
        norm_num_groups=32,
        **pose_options,
    )


def ldm_to_diffusers(state: Mapping[str, torch.Tensor], config: PoseAdapterConfig, *,
                     prefix: str = LDM_PREFIX) -> dict[str, torch.Tensor]:
    """Rename an LDM UNet state dict (keys with ``prefix``) to diffusers names (diffusers' converter)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = {LDM_PREFIX + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    spec = {"layers_per_block": config.layers_per_block,
            "addition_embed_type": "text_time" if config.addition_embed_dim else None,
            "class_embed_type": None, "num_class_embeds": None}
    return convert_ldm_unet_checkpoint(unet, spec)


def read_ldm_unet(path: str | os.PathLike, *, prefix: str = LDM_PREFIX) -> dict[str, torch.Tensor]:
    """The UNet tensors (keys with ``prefix``) of a ``.safetensors`` checkpoint, as float32."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not path.lower().endswith(".safetensors"):
        raise ConfigError(f"read_ldm_unet: path must be a .safetensors checkpoint, got {path!r}; pickled "
                          ".ckpt files are not read for safety, convert them first")
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}


def adapter_from_ldm(path_or_state, *, prefix: str = LDM_PREFIX, **pose_options):
    """A :class:`~.adapter.PoseGraphAdapter` shaped like, and initialised from, an LDM-layout UNet.

    Args:
        path_or_state: a single-file ``.safetensors`` checkpoint, or its state dict.
        prefix: where the UNet's keys start (``model.diffusion_model.`` in checkpoint files).
        pose_options: pose-side config fields (``graph``, ``skeleton_dim``, ``knn``, …).
    """
    from .adapter import PoseGraphAdapter

    state = read_ldm_unet(path_or_state, prefix=prefix) if isinstance(path_or_state, (str, os.PathLike)) \
        else path_or_state
    config = config_from_ldm({k: tuple(v.shape) for k, v in state.items()}, prefix=prefix, **pose_options)
    adapter = PoseGraphAdapter(config)
    source = os.fspath(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "the state dict"
    adapter.load_unet_weights(ldm_to_diffusers(state, config, prefix=prefix), source=source)
    return adapter
