"""``PoseAdapterConfig``: the shape of a pose-graph adapter, read from a UNet config and stored with its weights.

The adapter is a copy of a UNet's encoder + middle block, so most fields mirror the UNet (diffusers
``UNet2DConditionModel`` terms, per resolution level); the rest size the pose side (pose encoder,
skeleton embedding, graph layers). :meth:`PoseAdapterConfig.from_unet_config` reads a diffusers UNet
config; :func:`vitruvian.core.pose_adapter.ldm.config_from_ldm` reads an LDM / ComfyUI checkpoint's
tensor shapes. The config travels as JSON in the adapter file's safetensors metadata.

Example
-------
>>> cfg = PoseAdapterConfig.from_unet_config({"block_out_channels": [320], "layers_per_block": 1,
...     "down_block_types": ["CrossAttnDownBlock2D"], "attention_head_dim": 8, "cross_attention_dim": 768})
>>> cfg.levels, cfg.num_attention_heads, cfg.pose_channels
(1, (8,), (192,))
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["PoseAdapterConfig", "DEFAULT_POSE_CHANNELS"]

#: Pose-encoder widths per level (GRPose's inject_channels); levels beyond the fourth reuse the last.
DEFAULT_POSE_CHANNELS = (192, 256, 384, 512)
_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")


def _per_level(value, levels: int, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ConfigError(f"PoseAdapterConfig: {name} must have one value per level ({levels}), got {list(value)}")
        return tuple(value)
    return (value,) * levels


@dataclass(frozen=True)
class PoseAdapterConfig:
    """Every size of one adapter. Per-level tuples have one entry per UNet resolution level.

    Attributes (UNet side, as in the UNet the adapter copies):
        in_channels: latent channels (4).
        block_out_channels: channels per level, e.g. SD1.5 (320, 640, 1280, 1280), SDXL (320, 640, 1280).
        layers_per_block: res blocks per level (SD 2).
        cross_attention: whether each level has cross-attention transformers (default: all but the last level;
            a single level has them).
        transformer_layers: transformer depth per level (SDXL (1, 2, 10); 1 where a level has none).
        mid_transformer_layers: transformer depth of the middle block.
        num_attention_heads: heads per level (SD1.5: 8; SDXL: channels / 64).
        cross_attention_dim: text-context width (SD1.5 768, SDXL 2048).
        use_linear_projection: transformers use Linear (SDXL) instead of 1x1-conv (SD1.5) proj_in/out.
        addition_embed_dim: width of SDXL's extra embedding input (pooled text + time ids, 2816); 0 = none.
        addition_time_embed_dim: width of each SDXL time-id embedding (256); 0 = none.
        norm_num_groups, norm_eps: GroupNorm settings of the UNet.
        flip_sin_to_cos, freq_shift: the sinusoidal timestep embedding's convention.

    Attributes (pose side):
        graph: True = the pose-graph adapter (a Progressive Graph Integrator replaces the first res block
            of each level); False = a plain ControlNet of the same depth fed by the same pose encoder
            (the benchmark's baseline).
        hint_channels: channels of the rendered skeleton image (3, RGB).
        skeleton_dim: channels D of the rasterised skeleton-graph embedding.
        skeleton_sigma: Gaussian radius of rasterised joints and bones, in latent cells.
        pose_channels: pose-encoder width per level.
        graph_levels: levels whose first res block is an integrator (default: every level). SDXL's
            level 0 at 1024² has 16384 positions, where two dense kNN graphs cost more than the encoder
            level itself; ``(1, 2)`` skips it.
        graph_reduction: the integrators' graph layers run at width C / graph_reduction between 1×1
            projections (1 = GRPose's full width; 4 keeps the adapter within 1.1× a ControlNet's cost, see
            :mod:`.integrator`).
        knn: neighbours k of the dynamic graph (GRPose: 9).
        knn_chunk: query rows per kNN chunk (bounds the N × N similarity to chunk × N).
        dropout: dropout before each integrator's zero convolution.
    """

    in_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    cross_attention: tuple[bool, ...] = ()
    transformer_layers: tuple[int, ...] = ()
    mid_transformer_layers: int = 1
    num_attention_heads: tuple[int, ...] = ()
    cross_attention_dim: int = 768
    use_linear_projection: bool = False
    addition_embed_dim: int = 0
    addition_time_embed_dim: int = 0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    graph: bool = True
    hint_channels: int = 3
    skeleton_dim: int = 32
    skeleton_sigma: float = 1.0
    pose_channels: tuple[int, ...] = field(default=())
    graph_levels: tuple[int, ...] = field(default=())
    graph_reduction: int = 4
    knn: int = 9
    knn_chunk: int = 1024
    dropout: float = 0.0

    def __post_init__(self):
        levels = len(self.block_out_channels)
        if levels < 1:
            raise ConfigError("PoseAdapterConfig: block_out_channels must list at least one level, got ()")
        # Empty per-level fields take SD1.5's conventions: attention on every level but the last, depth 1, 8 heads.
        for name, default in (("cross_attention", (True,) * (levels - 1) + (levels == 1,)),
                              ("transformer_layers", (1,) * levels), ("num_attention_heads", (8,) * levels)):
            if not getattr(self, name):
                object.__setattr__(self, name, default)
        for name in ("block_out_channels", "cross_attention", "transformer_layers", "num_attention_heads"):
            object.__setattr__(self, name, _per_level(getattr(self, name), levels, name))
        if not self.pose_channels:
            pose = tuple(DEFAULT_POSE_CHANNELS[min(i, len(DEFAULT_POSE_CHANNELS) - 1)] for i in range(levels))
            object.__setattr__(self, "pose_channels", pose)
        object.__setattr__(self, "pose_channels", _per_level(self.pose_channels, levels, "pose_channels"))
        if not self.graph_levels:
            object.__setattr__(self, "graph_levels", tuple(range(levels)) if self.graph else ())
        object.__setattr__(self, "graph_levels", tuple(sorted(set(self.graph_levels))))
        problems = []
        if self.layers_per_block < 1:
            problems.append(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        for c, heads in zip(self.block_out_channels, self.num_attention_heads):
            if c % self.norm_num_groups:
                problems.append(f"block_out_channels {c} must be divisible by norm_num_groups {self.norm_num_groups}")
            if heads < 1 or c % heads:
                problems.append(f"num_attention_heads {heads} must divide the level's channels {c}")
        if (self.addition_embed_dim > 0) != (self.addition_time_embed_dim > 0):
            problems.append("addition_embed_dim and addition_time_embed_dim must both be 0 (SD1.5) or both set "
                            f"(SDXL), got {self.addition_embed_dim} and {self.addition_time_embed_dim}")
        if not self.graph and self.graph_levels:
            problems.append(f"graph_levels must be empty for a plain ControlNet (graph = False), got {self.graph_levels}")
        if any(not 0 <= lv < levels for lv in self.graph_levels):
            problems.append(f"graph_levels must be level indices in [0, {levels}), got {self.graph_levels}")
        bad = [c for c in self.block_out_channels if self.graph_reduction < 1 or c % self.graph_reduction]
        if bad:
            problems.append(f"graph_reduction {self.graph_reduction} must divide every level's channels, got {bad}")
        if self.knn < 1:
            problems.append(f"knn must be >= 1, got {self.knn}")
        if self.knn_chunk < 1:
            problems.append(f"knn_chunk must be >= 1, got {self.knn_chunk}")
        if self.skeleton_dim < 1 or self.skeleton_sigma <= 0:
            problems.append(f"skeleton_dim must be >= 1 and skeleton_sigma > 0, got {self.skeleton_dim}, "
                            f"{self.skeleton_sigma}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("PoseAdapterConfig: " + "; ".join(problems))

    @property
    def levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def num_residuals(self) -> int:
        """Residuals for the UNet's skip connections: conv_in + every res block + every downsampler."""
        return 1 + self.levels * self.layers_per_block + (self.levels - 1)

    def replace(self, **changes) -> "PoseAdapterConfig":
        return dataclasses.replace(self, **changes)

    # -- conversions -----------------------------------------------------------------------------------

    @classmethod
    def from_unet_config(cls, unet_config: Mapping[str, Any], **pose_options) -> "PoseAdapterConfig":
        """The adapter for a diffusers ``UNet2DConditionModel`` config (a dict or ``unet.config``).

        ``pose_options`` set the pose-side fields (``graph``, ``skeleton_dim``, ``knn``, …).
        Raises ConfigError for UNets the adapter cannot copy (class embeddings, other mid blocks, …).
        """
        c = dict(unet_config)
        where = "PoseAdapterConfig.from_unet_config"
        channels = tuple(c.get("block_out_channels", (320, 640, 1280, 1280)))
        levels = len(channels)
        types = tuple(c.get("down_block_types", ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)))
        bad = [t for t in types if t not in _BLOCK_TYPES]
        if bad or len(types) != levels:
            raise ConfigError(f"{where}: down_block_types must be {levels} of {', '.join(_BLOCK_TYPES)}, got {list(types)}")
        unsupported = {
            "class_embed_type": None, "encoder_hid_dim_type": None, "time_cond_proj_dim": None,
            "resnet_time_scale_shift": "default", "mid_block_type": "UNetMidBlock2DCrossAttn",
            "dual_cross_attention": False, "only_cross_attention": False, "act_fn": "silu",
        }
        for key, expected in unsupported.items():
            value = c.get(key)
            if value is not None and value != expected:
                raise ConfigError(f"{where}: {key} must be {expected!r} for a pose adapter, got {c.get(key)!r}")
        layers = c.get("layers_per_block", 2)
        if isinstance(layers, (list, tuple)):
            if len(set(layers)) != 1:
                raise ConfigError(f"{where}: layers_per_block must be the same on every level, got {list(layers)}")
            layers = layers[0]
        heads = c.get("num_attention_heads") or c.get("attention_head_dim", 8)
        tlpb = _per_level(c.get("transformer_layers_per_block", 1) or 1, levels, "transformer_layers_per_block")
        if any(isinstance(t, (list, tuple)) for t in tlpb):
            raise ConfigError(f"{where}: transformer_layers_per_block must be one int per level, got {list(tlpb)}")
        context = c.get("cross_attention_dim", 768)
        if isinstance(context, (list, tuple)):
            if len(set(context)) != 1:
                raise ConfigError(f"{where}: cross_attention_dim must be the same on every level, got {list(context)}")
            context = context[0]
        addition = c.get("addition_embed_type")
        if addition not in (None, "text_time"):
            raise ConfigError(f"{where}: addition_embed_type must be None (SD1.5) or 'text_time' (SDXL), got {addition!r}")
        return cls(
            in_channels=int(c.get("in_channels", 4)),
            block_out_channels=channels,
            layers_per_block=int(layers),
            cross_attention=tuple(t == "CrossAttnDownBlock2D" for t in types),
            transformer_layers=tuple(int(t) for t in tlpb),
            mid_transformer_layers=int(tlpb[-1]),
            num_attention_heads=tuple(int(h) for h in _per_level(heads, levels, "attention_head_dim")),
            cross_attention_dim=int(context),
            use_linear_projection=bool(c.get("use_linear_projection", False)),
            addition_embed_dim=int(c.get("projection_class_embeddings_input_dim") or 0) if addition else 0,
            addition_time_embed_dim=int(c.get("addition_time_embed_dim") or 0) if addition else 0,
            norm_num_groups=int(c.get("norm_num_groups", 32)),
            norm_eps=float(c.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(c.get("flip_sin_to_cos", True)),
            freq_shift=int(c.get("freq_shift", 0)),
            **pose_options,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "PoseAdapterConfig") -> "PoseAdapterConfig":
        """Build from :meth:`to_dict` output; unknown keys are an error listing the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: config keys must be among {', '.join(sorted(known))}, got unknown {unknown}; "
                              "the file was written by a newer version of the pack")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
