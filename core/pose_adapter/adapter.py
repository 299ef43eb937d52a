"""``PoseGraphAdapter``: a ControlNet-style trainable copy of a UNet's encoder + middle block, with a
Progressive Graph Integrator as the first res block of every level (GRPose, methods.md §5).

Internal representation: diffusers blocks (``get_down_block``, ``UNetMidBlock2DCrossAttn``,
``Timesteps``/``TimestepEmbedding``) named as in ``UNet2DConditionModel``, so a diffusers UNet's state dict
initialises it by name and LDM / ComfyUI checkpoints go through :mod:`.ldm`. The output is one residual
per skip connection of the frozen UNet plus one for the middle block, each behind a zero-initialised
1×1 convolution; :class:`AdapterResiduals` hands them to either consumer:

- diffusers: ``unet(..., **residuals.to_diffusers())`` (``down_block_additional_residuals``,
  ``mid_block_additional_residual``);
- ComfyUI: ``residuals.to_comfy()`` → ``{"input": [], "middle": [mid], "output": [skips…]}``, the dict
  ``ControlBase.get_control`` returns (``openaimodel.apply_control`` pops each list from its end, so the
  skips are in encoder order, exactly as ComfyUI's own ControlNet emits them).

With ``config.graph = False`` the same class is a plain ControlNet of the same depth (no graph layers,
the level-0 pose features added after ``conv_in``): the benchmark's baseline.

A fresh adapter (all zero convolutions at 0) returns exact zeros, so it leaves the UNet's output
bit-identical.

Shape:
    - sample ``(B, 4, h, w)``, timestep ``()`` or ``(B,)``, encoder_hidden_states ``(B, L, cross_attention_dim)``,
      added_embeds ``(B, addition_embed_dim)`` (SDXL; ComfyUI's ``y``)
    - residuals: ``config.num_residuals`` maps ``(B, C, h_l, w_l)`` and the middle ``(B, C_last, h_L, w_L)``
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .config import PoseAdapterConfig
from .integrator import ProgressiveGraphIntegrator, zero_module
from .pose_encoder import PoseCondition, PoseEncoder
from .skeleton_embed import SkeletonEmbedding, bone_vocabulary, joint_vocabulary

__all__ = ["AdapterResiduals", "PoseFeatures", "PoseGraphAdapter", "UNET_PREFIXES"]

#: State-dict prefixes copied from the UNet (everything else is the adapter's own).
UNET_PREFIXES = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")
#: Parameter names of an integrator that start from the replaced res block (diffusers ResnetBlock2D names).
_FROM_RESNET = ("conv1.", "time_emb_proj.", "conv_shortcut.")

#: Per-level pose features after each integrator's pose branch (graph) or the level-0 hint (plain).
PoseFeatures = tuple


@dataclass(frozen=True)
class AdapterResiduals:
    """The adapter's output: ``down`` (one per UNet skip connection, encoder order) and ``mid``."""

    down: tuple[torch.Tensor, ...]
    mid: torch.Tensor

    def scaled(self, strength: float) -> "AdapterResiduals":
        return AdapterResiduals(tuple(d * strength for d in self.down), self.mid * strength)

    def to_diffusers(self) -> dict:
        """Keyword arguments for ``UNet2DConditionModel.forward``."""
        return {"down_block_additional_residuals": self.down, "mid_block_additional_residual": self.mid}

    def to_comfy(self) -> dict:
        """ComfyUI's control dict (what ``ControlBase.get_control`` returns)."""
        return {"input": [], "middle": [self.mid], "output": list(self.down)}


class PoseGraphAdapter(nn.Module):
    """See the module docstring.

    Args:
        config: the sizes (:class:`PoseAdapterConfig`).
        joint_vocab, bone_vocab: skeleton vocabularies (default: every joint/bone of the pack's formats;
            a loaded adapter passes the ones stored with its weights).

    Example:
        >>> cfg = PoseAdapterConfig(block_out_channels=(32,), layers_per_block=1, num_attention_heads=(1,),
        ...                         cross_attention_dim=8, pose_channels=(32,), skeleton_dim=4)
        >>> adapter = PoseGraphAdapter(cfg)
        >>> len(adapter.residual_channels), adapter.residual_channels
        (2, (32, 32))
    """

    def __init__(self, config: PoseAdapterConfig, *, joint_vocab=None, bone_vocab=None):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block

        self.config = config
        c = config
        ch = c.block_out_channels
        temb = c.time_embed_dim
        self.conv_in = nn.Conv2d(c.in_channels, ch[0], 3, padding=1)
        self.time_proj = Timesteps(ch[0], c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if c.addition_embed_dim:
            self.add_time_proj = Timesteps(c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
            self.add_embedding = TimestepEmbedding(c.addition_embed_dim, temb)
        self.skeleton = SkeletonEmbedding(joint_vocab or joint_vocabulary(), bone_vocab or bone_vocabulary(),
                                          c.skeleton_dim, c.skeleton_sigma)
        self.pose_encoder = PoseEncoder(c.hint_channels, c.skeleton_dim, c.pose_channels)
        self.down_blocks = nn.ModuleList()
        for level, out_ch in enumerate(ch):
            in_ch = ch[max(level - 1, 0)]
            block = get_down_block(
                "CrossAttnDownBlock2D" if c.cross_attention[level] else "DownBlock2D",
                num_layers=c.layers_per_block, transformer_layers_per_block=c.transformer_layers[level],
                in_channels=in_ch, out_channels=out_ch, temb_channels=temb, add_downsample=level < c.levels - 1,
                resnet_eps=c.norm_eps, resnet_act_fn="silu", resnet_groups=c.norm_num_groups,
                cross_attention_dim=c.cross_attention_dim, num_attention_heads=c.num_attention_heads[level],
                downsample_padding=1, use_linear_projection=c.use_linear_projection,
                attention_head_dim=out_ch // c.num_attention_heads[level],
            )
            if level in c.graph_levels:
                block.resnets[0] = ProgressiveGraphIntegrator(
                    in_ch, out_ch, temb, c.pose_channels[level], groups=c.norm_num_groups, k=c.knn,
                    chunk=c.knn_chunk, dropout=c.dropout, eps=c.norm_eps, reduction=c.graph_reduction)
            self.down_blocks.append(block)
        if not c.graph:
            # Its input starts at 0 (the pose encoder's zero convs): a zero bias keeps the copy exact at
            # init, and a random weight keeps the gradient path open (two zero layers in series never train).
            self.hint_proj = nn.Conv2d(c.pose_channels[0], ch[0], 1)
            nn.init.zeros_(self.hint_proj.bias)
        self.mid_block = UNetMidBlock2DCrossAttn(
            in_channels=ch[-1], temb_channels=temb, transformer_layers_per_block=c.mid_transformer_layers,
            resnet_eps=c.norm_eps, resnet_act_fn="silu", resnet_groups=c.norm_num_groups,
            cross_attention_dim=c.cross_attention_dim, num_attention_heads=c.num_attention_heads[-1],
            use_linear_projection=c.use_linear_projection,
        )
        self.controlnet_down_blocks = nn.ModuleList(zero_module(nn.Conv2d(n, n, 1)) for n in self.residual_channels)
        self.controlnet_mid_block = zero_module(nn.Conv2d(ch[-1], ch[-1], 1))

    @property
    def residual_channels(self) -> tuple[int, ...]:
        """Channels of each down residual, in the UNet's skip order (conv_in, res blocks, downsamplers)."""
        c = self.config
        out = [c.block_out_channels[0]]
        for level, ch in enumerate(c.block_out_channels):
            out += [ch] * c.layers_per_block + ([ch] if level < c.levels - 1 else [])
        return tuple(out)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    # No ``device`` property: ComfyUI's ModelPatcher assigns ``model.device`` when it moves the module.

    # -- weights from a UNet ---------------------------------------------------------------------------

    @classmethod
    def from_unet(cls, unet, **pose_options) -> "PoseGraphAdapter":
        """An adapter shaped like the diffusers ``unet`` and initialised from its weights."""
        adapter = cls(PoseAdapterConfig.from_unet_config(unet.config, **pose_options))
        adapter.load_unet_weights(unet.state_dict())
        return adapter

    def load_unet_weights(self, unet_state: Mapping[str, torch.Tensor], *, source: str = "the UNet") -> int:
        """Copy the encoder + middle block from a diffusers-named UNet state dict; returns tensors copied.

        Integrators take ``conv1``, ``time_emb_proj`` and ``conv_shortcut`` from the res block they
        replace; their graph layers, the pose side and the zero convolutions keep their own init.
        Raises ConfigError listing every UNet tensor the adapter needs that is missing or mis-shaped.
        """
        own = self.state_dict()
        pgi = [f"down_blocks.{i}.resnets.0." for i in self.config.graph_levels]
        copied, problems = {}, []
        for key, value in own.items():
            if not key.startswith(UNET_PREFIXES):
                continue
            in_pgi = next((p for p in pgi if key.startswith(p)), None)
            if in_pgi and not key[len(in_pgi):].startswith(_FROM_RESNET):
                continue
            src = unet_state.get(key)
            if src is None:
                problems.append(f"{key} missing")
            elif tuple(src.shape) != tuple(value.shape):
                problems.append(f"{key} is {tuple(src.shape)}, the adapter needs {tuple(value.shape)}")
            else:
                copied[key] = src
        if problems:
            shown = "; ".join(problems[:6]) + (f"; … ({len(problems)} problems)" if len(problems) > 6 else "")
            raise ConfigError(f"PoseGraphAdapter.load_unet_weights: {source} must match the adapter's config, got "
                              f"{shown}; build the adapter from the same UNet's config")
        self.load_state_dict(copied, strict=False)
        return len(copied)

    # -- pose side (once per pose) ---------------------------------------------------------------------

    def encode_pose(self, condition: PoseCondition) -> PoseFeatures:
        """Per-level pose features for :meth:`forward`; independent of the latent and the timestep.

        Returns:
            graph adapter: one ``(B, C_l, h_l, w_l)`` per level (each integrator's pose branch; None for
            a level without one); plain ControlNet: ``((B, C_0, h, w),)``, added after ``conv_in``.
        """
        skeleton = self.skeleton(condition.tokens, condition.latent_size)
        feats = self.pose_encoder(condition.hint.to(self.conv_in.weight.device, self.dtype), skeleton)
        if not self.config.graph:
            return (self.hint_proj(feats[0]),)
        return tuple(block.resnets[0].encode_pose(f) if level in self.config.graph_levels else None
                     for level, (block, f) in enumerate(zip(self.down_blocks, feats)))

    # -- the denoising-step part -----------------------------------------------------------------------

    def added_embeds(self, text_embeds: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """SDXL's extra embedding input from diffusers' ``added_cond_kwargs`` (= ComfyUI's ``y``).

        ``text_embeds (B, 1280)``, ``time_ids (B, 6)`` → ``(B, addition_embed_dim)``.
        """
        if not self.config.addition_embed_dim:
            raise ConfigError("PoseGraphAdapter.added_embeds: this adapter has no SDXL addition embedding "
                              "(addition_embed_dim = 0); do not pass added_cond_kwargs to an SD1.5 adapter")
        time = self.add_time_proj(time_ids.flatten()).reshape(text_embeds.shape[0], -1)
        return torch.cat([text_embeds, time.to(text_embeds.dtype)], dim=-1)

    def _check_inputs(self, sample, context, pose_features, added_embeds) -> None:
        c, where = self.config, "PoseGraphAdapter"
        if sample.ndim != 4 or sample.shape[1] != c.in_channels:
            raise ValueError(f"{where}: sample must be (B, {c.in_channels}, h, w), got {tuple(sample.shape)}")
        if context.ndim != 3 or context.shape[-1] != c.cross_attention_dim or context.shape[0] != sample.shape[0]:
            raise ValueError(f"{where}: encoder_hidden_states must be (B = {sample.shape[0]}, L, "
                             f"{c.cross_attention_dim}), got {tuple(context.shape)}; the adapter was made for a "
                             f"UNet with {c.cross_attention_dim}-wide text context")
        expected = c.levels if c.graph else 1
        if len(pose_features) != expected:
            raise ValueError(f"{where}: pose_features must hold {expected} maps from encode_pose, got {len(pose_features)}")
        h, w = sample.shape[-2:]
        for level, p in enumerate(pose_features):
            if p is None:
                continue
            size = (-(-h // 2 ** level), -(-w // 2 ** level))
            if tuple(p.shape[-2:]) != size or p.shape[0] not in (1, sample.shape[0]):
                raise ValueError(f"{where}: pose_features[{level}] must be (1 or B = {sample.shape[0]}, C, {size[0]}, "
                                 f"{size[1]}) for a sample {tuple(sample.shape)}, got {tuple(p.shape)}; call "
                                 "encode_pose with a condition prepared for this latent size")
        if bool(c.addition_embed_dim) != (added_embeds is not None):
            need = f"(B, {c.addition_embed_dim}) added_embeds (SDXL)" if c.addition_embed_dim else "no added_embeds"
            raise ValueError(f"{where}: this adapter needs {need}, got "
                             f"{'none' if added_embeds is None else tuple(added_embeds.shape)}")

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                pose_features: PoseFeatures, *, added_embeds: torch.Tensor | None = None) -> AdapterResiduals:
        """Residuals for one denoising step (shapes in the module docstring)."""
        self._check_inputs(sample, encoder_hidden_states, pose_features, added_embeds)
        b = sample.shape[0]
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep, device=sample.device)
        t = t.to(sample.device).reshape(-1).expand(b) if t.numel() == 1 else t.to(sample.device)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        if added_embeds is not None:
            emb = emb + self.add_embedding(added_embeds.to(emb.dtype))
        pose = [p.expand(b, *p.shape[1:]) if p is not None and p.shape[0] != b else p for p in pose_features]

        h = self.conv_in(sample)
        if not self.config.graph:
            h = h + pose[0].to(h.dtype)
            pose = [None] * self.config.levels
        res = [h]
        for level, block in enumerate(self.down_blocks):
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = resnet(h, emb, pose[level]) if (j == 0 and pose[level] is not None) else resnet(h, emb)
                if attentions is not None:
                    h = attentions[j](h, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
                res.append(h)
            if block.downsamplers is not None:
                h = block.downsamplers[0](h)
                res.append(h)
        h = self.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states)
        down = tuple(zc(r) for zc, r in zip(self.controlnet_down_blocks, res))
        return AdapterResiduals(down=down, mid=self.controlnet_mid_block(h))

    # -- test helpers ----------------------------------------------------------------------------------

    def zero_init_modules(self) -> list[nn.Module]:
        """The zero-initialised convolutions (outputs, integrators' last convs, pose-encoder outputs)."""
        mods = [*self.controlnet_down_blocks, self.controlnet_mid_block, *self.pose_encoder.zero_convs]
        mods += [self.down_blocks[level].resnets[0].conv_out for level in self.config.graph_levels]
        return mods

    @torch.no_grad()
    def perturb_zero_init_(self, std: float, *, seed: int = 0) -> "PoseGraphAdapter":
        """Fill the zero-initialised convolutions with N(0, std²) (seeded): a stand-in for a trained adapter."""
        g = torch.Generator().manual_seed(seed)
        for m in self.zero_init_modules():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
        return self
