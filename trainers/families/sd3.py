"""The SD3.5 family: Medium ("sd35-medium", MMDiT-X) and Large / Large Turbo ("sd35-large").

An ``SD3Transformer2DModel`` over 16-channel latents (it patchifies 2×2 itself: no packing here), conditioned on
a joint text sequence and a pooled vector built exactly as ``StableDiffusion3Pipeline.encode_prompt`` builds them:

- CLIP-L and CLIP-G (77 tokens each; CLIP-G pads with "!", id 0, as SD3's ``tokenizer_2`` and ComfyUI do):
  their penultimate hidden states, concatenated on the feature axis and zero-padded to T5's width, then T5-XXL's
  last hidden states (``t5_tokens`` = 256, the pipeline's ``max_sequence_length``) after them on the sequence
  axis: ``encoder_hidden_states`` (B, 77 + 256, D_t5);
- the projected pooled outputs of both CLIPs side by side: ``pooled_projections`` (B, D_l + D_g). CLIP-L's
  projection is the identity for files (``component_files``), as in ComfyUI and diffusers' single-file loader.

Rectified flow (``flow.FlowMatchProcess``) with SD3.5's scheduler shift 3.0 (``flow_shift="auto"``), σ from the
logit-normal of the SD3 paper; the transformer takes σ·1000 (``timestep_scale``: unlike Flux it does not scale
σ itself). Files as ComfyUI users keep them (``sd3_files``). LoRA files use diffusers names under
``transformer.`` with ``.alpha`` (``core.lora_io`` ``key_style="diffusers"``), which ComfyUI maps onto its MMDiT
(``comfy/lora.py``: ``mmdit_to_diffusers``, fused qkv slices included) and diffusers'
``SD3Transformer2DModel.load_lora_adapter`` reads with the alphas as ``network_alphas``.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ConfigError
from ...core.lora_io import save_lora
from .base import BaseModel
from .component_files import WHERE, folder_schedule, load_text_encoders, load_vae, transformer_config
from .flow import FlowMatchProcess, resolve_shift
from .sd3_files import SD3_VAE, load_folder, load_transformer, sd3_kind

__all__ = ["SD3", "T5_TOKENS", "SCHEDULE"]

#: T5 sequence length (StableDiffusion3Pipeline's default ``max_sequence_length``)
T5_TOKENS = 256
#: SD3.5's scheduler (FlowMatchEulerDiscreteScheduler, scheduler_config.json): a fixed shift of 3.0
SCHEDULE = {"shift": 3.0, "use_dynamic_shifting": False}
CLIP_TOKENS = 77
_VAE_IN_CHECKPOINT = "first_stage_model."


def _call(model: torch.nn.Module, x_t: torch.Tensor, timestep: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
    """SD3's velocity for (B, 16, h, w) latents at ``timestep`` = σ·1000 (B,), in the text's dtype."""
    text = cond["encoder_hidden_states"]
    return model(hidden_states=x_t.to(text.dtype), timestep=timestep.to(text.dtype), encoder_hidden_states=text,
                 pooled_projections=cond["pooled_projections"], return_dict=False)[0]


def _clip_embeds(encoder, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden (B, 77, D), projected pooled (B, P)) of a ``CLIPTextModelWithProjection``."""
    ids = tokenizer(prompts, padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt").input_ids
    out = encoder(ids.to(next(encoder.parameters()).device), output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def _image_size(image) -> tuple[int, int] | None:
    """(height, width) of a PIL image, a (…, H, W) tensor or the first of a list of them; None if unknown."""
    first = image[0] if isinstance(image, (list, tuple)) and image else image
    if hasattr(first, "size") and not callable(first.size):  # PIL: size = (W, H)
        return first.size[1], first.size[0]
    if isinstance(first, torch.Tensor) and first.ndim >= 2:
        return int(first.shape[-2]), int(first.shape[-1])
    return None


@functools.cache
def _img2img_class():
    """``StableDiffusion3Img2ImgPipeline`` whose output size defaults to the input image's (diffusers' defaults to
    ``sample_size`` × 8 = 1024 px and resizes the image to it; Flux's img2img keeps the image's size)."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    class SD3Img2ImgPipeline(StableDiffusion3Img2ImgPipeline):
        def __call__(self, *args, image=None, height=None, width=None, **kwargs):
            if height is None and width is None and (size := _image_size(image)) is not None:
                height, width = size
            return super().__call__(*args, image=image, height=height, width=width, **kwargs)

    return SD3Img2ImgPipeline


class SD3:
    """SD3.5 Medium / Large; see the module docstring."""

    name = "sd3"
    kinds = ("sd35-medium", "sd35-large")
    #: attention of both streams (and MMDiT-X's image-only ``attn2``, matched by the same suffixes); ComfyUI maps
    #: each as a slice of its fused qkv
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    lora_prefix = "transformer."
    vae_factors = SD3_VAE

    def folder_kind(self, folder: Path) -> str | None:
        """The kind of a diffusers ``StableDiffusion3Pipeline`` folder, else None (ConfigError for SD3.0)."""
        config = transformer_config(folder, "SD3Transformer2DModel")
        if config is None:
            return None
        if not config.get("qk_norm"):
            raise ConfigError(f"load_base: the base must be an SD3.5 Medium or Large model (q/k-normed MMDiT), got "
                              f"{str(folder)!r} without q/k norms (SD3.0 Medium), which is not supported")
        return "sd35-medium" if config.get("dual_attention_layers") else "sd35-large"

    def shapes_kind(self, shapes: Mapping[str, tuple], *, source: str = "checkpoint") -> str | None:
        """The kind of an MMDiT-layout diffusion-model file or checkpoint, else None."""
        return sd3_kind(shapes)

    def load(self, source: Path, kind: str, *, tokenizer: str = "", dtype: torch.dtype = torch.float32,
             shapes: Mapping | None = None, text_encoders: Sequence[str] = (), vae: str = "") -> BaseModel:
        """The base from a folder (``shapes`` None) or a diffusion-model file plus ``text_encoders`` (clip_l,
        clip_g, t5xxl) and ``vae`` (optional for a checkpoint with its own ``first_stage_model.*``)."""
        from ..t5_tokenizer import load_t5_tokenizer
        from ..tokenizer_search import load_tokenizers

        if shapes is None:
            transformer, ae, encoders = load_folder(source, dtype)
            schedule = folder_schedule(source, SCHEDULE)
        else:
            has_vae = any(k.startswith(_VAE_IN_CHECKPOINT + "encoder.conv_in.") for k in shapes)
            if not text_encoders or not (vae or has_vae):
                raise ConfigError(
                    f"load_base: base {str(source)!r} is an SD3.5 diffusion model without its text encoders, so it "
                    f"needs text_encoders=<clip_l file>,<clip_g file>,<t5xxl file> (ComfyUI: models/text_encoders/)"
                    + ("" if has_vae else " and vae=<SD3.5 VAE file> (models/vae/)")
                    + f", got text_encoders={list(text_encoders)!r} and vae={vae!r}")
            transformer = load_transformer(source, shapes, dtype)
            encoders = load_text_encoders(text_encoders, dtype, need=("clip_l", "clip_g", "t5"), projected=True)
            ae = (load_vae(vae, dtype, factors=self.vae_factors) if vae
                  else load_vae(str(source), dtype, factors=self.vae_factors, prefix=_VAE_IN_CHECKPOINT))
            schedule = dict(SCHEDULE)
        self._check(source, transformer, ae, encoders)
        folder = source if shapes is None else None
        clip_l_tok, clip_g_tok = load_tokenizers("sdxl", tokenizer=tokenizer, base_dir=folder)
        t5_tok = load_t5_tokenizer(str(folder) if folder is not None and (folder / "tokenizer_3").is_dir() else "")
        for name, tok in (("clip_l", clip_l_tok), ("clip_g", clip_g_tok)):
            vocab = encoders[name].config.vocab_size
            if vocab < len(tok):
                raise ConfigError(f"load_base: the {name} text encoder must have the CLIP vocabulary ({len(tok)} "
                                  f"tokens), got {vocab}; is it a {name} file ({WHERE[name]})?")
        return BaseModel(kind=kind, family=self, unet=transformer, vae=ae,
                         text_encoders=(encoders["clip_l"], encoders["clip_g"], encoders["t5"]),
                         tokenizers=(clip_l_tok, clip_g_tok, t5_tok), scheduler=schedule,
                         vae_scale=float(ae.config.scaling_factor), source=str(source),
                         configs={"transformer": dict(transformer.config), "t5_tokens": T5_TOKENS})

    @staticmethod
    def _check(source: Path, transformer, ae, encoders: Mapping[str, Any]) -> None:
        """ConfigError unless the parts fit together (widths of the text features and latent channels)."""
        cfg = transformer.config
        l_pool, g_pool = (encoders[n].config.projection_dim for n in ("clip_l", "clip_g"))
        l_width, g_width = (encoders[n].config.hidden_size for n in ("clip_l", "clip_g"))
        t5_width = encoders["t5"].config.d_model
        problems = []
        if l_pool + g_pool != cfg.pooled_projection_dim:
            problems.append(f"pooled CLIP-L + CLIP-G width {l_pool} + {g_pool} = {cfg.pooled_projection_dim}")
        if t5_width != cfg.joint_attention_dim or l_width + g_width > t5_width:
            problems.append(f"T5 width {t5_width} = {cfg.joint_attention_dim} (and ≥ CLIP-L + CLIP-G {l_width + g_width})")
        if ae.config.latent_channels != cfg.in_channels:
            problems.append(f"VAE latent channels {ae.config.latent_channels} = {cfg.in_channels}")
        if problems:
            raise ConfigError(f"load_base: the text encoders and VAE must fit the SD3.5 model {str(source)!r}, need "
                              + "; ".join(problems) + "; are they the SD3.5 clip_l, clip_g, t5xxl and VAE files?")

    def encode_prompt(self, base: BaseModel, prompts: Sequence[str], **_options) -> dict:
        """``{"encoder_hidden_states": (B, 77 + L, D_t5), "pooled_projections": (B, D_l + D_g)}`` (L = ``t5_tokens``),
        as ``StableDiffusion3Pipeline.encode_prompt`` (see the module docstring)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"encode_prompt: prompts must be a sequence of str, got {type(prompts).__name__}")
        clip_l, clip_g, t5 = base.text_encoders
        l_tok, g_tok, t5_tok = base.tokenizers
        l_hidden, l_pooled = _clip_embeds(clip_l, l_tok, list(prompts))
        g_hidden, g_pooled = _clip_embeds(clip_g, g_tok, list(prompts))
        n = int(base.configs.get("t5_tokens", T5_TOKENS))
        ids = t5_tok(list(prompts), padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
        t5_hidden = t5(ids.to(next(t5.parameters()).device)).last_hidden_state
        clip = torch.cat([l_hidden, g_hidden.to(l_hidden.dtype)], dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5_hidden.shape[-1] - clip.shape[-1]))
        return {"encoder_hidden_states": torch.cat([clip.to(t5_hidden.dtype), t5_hidden], dim=-2),
                "pooled_projections": torch.cat([l_pooled, g_pooled.to(l_pooled.dtype)], dim=-1)}

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
        """Rectified flow with the base's schedule (FlowMatchEuler keys; SD3.5: shift 3.0) and σ·1000 as the
        model's timestep; ``config`` gives ``flow_shift`` ("auto" = the schedule's), ``flow_logit_mean``/``_std``
        and, for a schedule with dynamic shifting, the resolution."""
        shift = resolve_shift(dict(scheduler or {}), config, default=3.0)
        return FlowMatchProcess(call=_call, shift=float(shift), logit_mean=float(getattr(config, "flow_logit_mean", 0.0)),
                                logit_std=float(getattr(config, "flow_logit_std", 1.0)), timestep_scale=1000.0, patch=2)

    def pipelines(self, base: BaseModel) -> tuple:
        """(StableDiffusion3Pipeline, StableDiffusion3Img2ImgPipeline) on ``base``'s modules with the base's
        flow-matching Euler sampler (shift 3.0 for SD3.5); img2img keeps the input image's size by default."""
        from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

        keys = ("shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len")
        scheduler = FlowMatchEulerDiscreteScheduler(**{k: v for k, v in base.scheduler.items() if k in keys})
        (l_enc, g_enc, t5), (l_tok, g_tok, t5_tok) = base.text_encoders, base.tokenizers
        parts = dict(transformer=base.unet, scheduler=scheduler, vae=base.vae, text_encoder=l_enc, tokenizer=l_tok,
                     text_encoder_2=g_enc, tokenizer_2=g_tok, text_encoder_3=t5, tokenizer_3=t5_tok)
        return StableDiffusion3Pipeline(**parts), _img2img_class()(**parts)

    def save_lora(self, path: Path, model: torch.nn.Module, *, config: dict, step: int, kind: str,
                  final: bool = False) -> Path:
        """``transformer.<module>.lora_A/B.weight`` (+ ``.alpha`` in checkpoints). The final file folds alpha into B:
        diffusers' SD3 LoRA loader refuses ``.alpha`` tensors ("all LoRA param names contain 'lora'"), and ComfyUI
        reads a file without them at scale 1, so both apply B·A·alpha/r."""
        return save_lora(path, model, config=config, step=step, base_kind=kind, key_style="diffusers", fold_alpha=final)
