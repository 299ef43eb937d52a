"""The Flux.1 family (dev, Krea-dev: "flux-dev", with the guidance embedder; schnell: "flux-schnell").

A ``FluxTransformer2DModel`` over 2×2-packed 16-channel latents, conditioned on T5 hidden states (the
sequence) and CLIP-L's pooled output; rectified flow (``flow.FlowMatchProcess``). Files as ComfyUI users keep
them (``flux_files``). LoRA files use diffusers names under ``transformer.`` with ``.alpha``
(``core.lora_io`` ``key_style="diffusers"``), which ComfyUI maps onto its own Flux (fused qkv slices
included) and diffusers' ``load_lora_weights`` reads.

Training choices (docs/methods.md, "Flow-matching families"): σ logit-normal(0, 1) with Flux's resolution
shift (``flow_shift = "auto"``; schnell's scheduler has none: shift 1); the dev guidance input at
``flux_guidance`` (1.0, as Flux-dev LoRA trainers use); T5 at ``t5_tokens`` (dev 512, schnell 256).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ConfigError
from ...core.lora_io import save_lora
from .base import BaseModel
from .flow import FlowMatchProcess, resolve_shift
from .component_files import folder_schedule, load_text_encoders, load_vae, transformer_config
from .flux_files import FLUX_VAE, flux_kind, load_folder, load_transformer

__all__ = ["Flux", "pack", "unpack", "image_ids"]

#: T5 sequence length per kind (FluxPipeline's max_sequence_length: dev 512, schnell 256)
T5_TOKENS = {"flux-dev": 512, "flux-schnell": 256}
#: the schedulers the two kinds ship with (FlowMatchEulerDiscreteScheduler): dev shifts by resolution
SCHEDULES = {"flux-dev": {"use_dynamic_shifting": True, "shift": 3.0},
             "flux-schnell": {"use_dynamic_shifting": False, "shift": 1.0}}


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents → (B, h/2 · w/2, 4C) tokens (2×2 patches, channel-major within a patch)."""
    B, C, h, w = x.shape
    return x.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), C * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack`: (B, h/2 · w/2, 4C) → (B, C, h, w)."""
    B, _, D = tokens.shape
    return tokens.view(B, h // 2, w // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, D // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h/2 · w/2, 3) RoPE positions of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


def _call(model: torch.nn.Module, x_t: torch.Tensor, timestep: torch.Tensor, cond: Mapping[str, Any], *,
          guidance: float | None) -> torch.Tensor:
    """Flux's velocity for (B, 16, h, w) latents; the transformer scales σ by 1000 itself."""
    B, _, h, w = x_t.shape
    text = cond["encoder_hidden_states"]
    dtype = text.dtype
    kwargs = {}
    if guidance is not None:
        kwargs["guidance"] = torch.full((B,), float(guidance), device=x_t.device, dtype=torch.float32)
    out = model(hidden_states=pack(x_t).to(dtype), timestep=timestep.to(dtype), pooled_projections=cond["pooled_projections"],
                encoder_hidden_states=text, txt_ids=torch.zeros(text.shape[1], 3, device=x_t.device, dtype=dtype),
                img_ids=image_ids(h, w, x_t.device, dtype), return_dict=False, **kwargs)[0]
    return unpack(out, h, w)


class Flux:
    """Flux.1 dev / schnell; see the module docstring."""

    name = "flux"
    kinds = ("flux-dev", "flux-schnell")
    #: attention of both streams in the double blocks, and the single blocks' q/k/v (ComfyUI maps each as a slice
    #: of its fused qkv / linear1)
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    lora_prefix = "transformer."
    vae_factors = FLUX_VAE

    def folder_kind(self, folder: Path) -> str | None:
        """The kind of a diffusers ``FluxPipeline`` folder, else None."""
        config = transformer_config(folder, "FluxTransformer2DModel")
        if config is None:
            return None
        return "flux-dev" if config.get("guidance_embeds") else "flux-schnell"

    def shapes_kind(self, shapes: Mapping[str, tuple], *, source: str = "checkpoint") -> str | None:
        """The kind of a BFL-layout diffusion-model file, else None."""
        return flux_kind(shapes)

    def load(self, source: Path, kind: str, *, tokenizer: str = "", dtype: torch.dtype = torch.float32,
             shapes: Mapping | None = None, text_encoders: Sequence[str] = (), vae: str = "") -> BaseModel:
        """The base from a folder (``shapes`` None) or a diffusion-model file plus ``text_encoders`` and ``vae``."""
        from ..t5_tokenizer import load_t5_tokenizer
        from ..tokenizer_search import load_tokenizers

        if shapes is None:
            transformer, ae, encoders = load_folder(source, dtype)
            schedule = folder_schedule(source, SCHEDULES[kind])
        else:
            if not text_encoders or not vae:
                raise ConfigError(
                    f"load_base: base {str(source)!r} is a Flux.1 diffusion model alone, so it needs "
                    f"text_encoders=<clip_l file>,<t5xxl file> (ComfyUI: models/text_encoders/) and vae=<ae file> "
                    f"(models/vae/), got text_encoders={list(text_encoders)!r} and vae={vae!r}")
            transformer = load_transformer(source, shapes, dtype)
            encoders = load_text_encoders(text_encoders, dtype)
            ae = load_vae(vae, dtype, factors=self.vae_factors)
            schedule = dict(SCHEDULES[kind])
        schedule["guidance"] = kind == "flux-dev"  # the transformer has a guidance embedder
        folder = source if shapes is None else None
        clip_tok = load_tokenizers("sd15", tokenizer=tokenizer, base_dir=folder)[0]
        t5_tok = load_t5_tokenizer(str(folder) if folder is not None and (folder / "tokenizer_2").is_dir() else "")
        vocab = encoders["clip_l"].config.vocab_size
        if vocab < len(clip_tok):
            raise ConfigError(f"load_base: the CLIP-L text encoder must have the CLIP vocabulary ({len(clip_tok)} "
                              f"tokens), got {vocab}; is it a clip_l file?")
        return BaseModel(kind=kind, family=self, unet=transformer, vae=ae, text_encoders=(encoders["clip_l"], encoders["t5"]),
                         tokenizers=(clip_tok, t5_tok), scheduler=schedule,
                         vae_scale=float(ae.config.scaling_factor), source=str(source),
                         configs={"transformer": dict(transformer.config), "t5_tokens": T5_TOKENS[kind]})

    def encode_prompt(self, base: BaseModel, prompts: Sequence[str], **_options) -> dict:
        """``{"encoder_hidden_states": (B, L, D_t5), "pooled_projections": (B, D_clip)}`` (L = ``t5_tokens``)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"encode_prompt: prompts must be a sequence of str, got {type(prompts).__name__}")
        clip, t5 = base.text_encoders
        clip_tok, t5_tok = base.tokenizers
        device = next(clip.parameters()).device
        ids = clip_tok(list(prompts), padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        pooled = clip(ids.to(device)).pooler_output
        n = int(base.configs.get("t5_tokens", 512))
        ids = t5_tok(list(prompts), padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
        hidden = t5(ids.to(next(t5.parameters()).device)).last_hidden_state
        return {"encoder_hidden_states": hidden, "pooled_projections": pooled}

    def encode_images(self, base: BaseModel, pixels: torch.Tensor, *, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, 16, H/8, W/8) = (VAE mean − shift) × scale."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"encode_images: pixels must be (B, 3, H, W) in [-1, 1], got {tuple(pixels.shape)}")
        dist = base.vae.encode(pixels).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return (z - base.vae.config.shift_factor) * base.vae_scale

    def decode_latents(self, base: BaseModel, latents: torch.Tensor) -> torch.Tensor:
        """(B, 16, h, w) → (B, 3, 8h, 8w) in about [-1, 1]."""
        return base.vae.decode(latents / base.vae_scale + base.vae.config.shift_factor).sample

    def process(self, scheduler: Any, config: Any = None) -> FlowMatchProcess:
        """Rectified flow with the kind's schedule (``scheduler``: the base's schedule dict, FlowMatchEuler keys
        + ``guidance``); ``config`` (the run's settings) gives the resolution for the
        "auto" shift, ``flow_shift``, ``flow_logit_mean``/``_std`` and ``flux_guidance``."""
        schedule = dict(scheduler or {})
        shift = resolve_shift(schedule, config, default=1.0)
        guidance = float(getattr(config, "flux_guidance", 1.0)) if schedule.get("guidance") else None
        return FlowMatchProcess(call=partial(_call, guidance=guidance), shift=float(shift),
                                logit_mean=float(getattr(config, "flow_logit_mean", 0.0)),
                                logit_std=float(getattr(config, "flow_logit_std", 1.0)), patch=2)

    def pipelines(self, base: BaseModel) -> tuple:
        """(FluxPipeline, FluxImg2ImgPipeline) on ``base``'s modules with the kind's flow-matching Euler sampler
        (their ``guidance_scale`` is dev's distilled guidance input)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxPipeline

        keys = ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len")
        scheduler = FlowMatchEulerDiscreteScheduler(**{k: v for k, v in base.scheduler.items() if k in keys})
        parts = dict(scheduler=scheduler, vae=base.vae, text_encoder=base.text_encoders[0], tokenizer=base.tokenizers[0],
                     text_encoder_2=base.text_encoders[1], tokenizer_2=base.tokenizers[1], transformer=base.unet)
        return FluxPipeline(**parts), FluxImg2ImgPipeline(**parts)

    def save_lora(self, path: Path, model: torch.nn.Module, *, config: dict, step: int, kind: str,
                  final: bool = False) -> Path:
        """``transformer.<module>.lora_A/B.weight`` + ``.alpha`` (see the module docstring)."""
        return save_lora(path, model, config=config, step=step, base_kind=kind, key_style="diffusers")
