"""The Stable Diffusion UNet family: SD1.5 (one CLIP-L) and SDXL (CLIP-L + OpenCLIP bigG, size/crop conditioning).

Loading (``sd_files``), prompt and image encoding, the DDPM forward process (``ddpm``) and the LoRA targets of
the two kinds, behind the :class:`~.base.Family` seam. LoRA files use kohya keys (``lora_unet_…``), which
ComfyUI's ``LoraLoader`` maps for both kinds (``core.lora_io``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.lora_io import save_lora
from ..model_detect import detect_family
from ..tokenizer_search import load_tokenizers
from .base import BaseModel
from .ddpm import DDPMProcess
from .sd_files import folder_kind, load_folder, load_single_file

__all__ = ["StableDiffusion"]


def _token_ids(tokenizer, encoder, prompts: list[str], device) -> torch.Tensor:
    n = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    ids = tokenizer(prompts, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
    return ids.to(device)


class StableDiffusion:
    """SD1.5 and SDXL (epsilon prediction), from diffusers folders or single files; see the module docstring."""

    name = "sd"
    kinds = ("sd15", "sdxl")
    #: the attention projections, as the Diffusion-DPO and diffusers LoRA scripts train them
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    lora_prefix = "lora_unet_"

    def folder_kind(self, folder: Path) -> str | None:
        """The kind ("sd15" or "sdxl") of a diffusers folder; ConfigError for SD2, v-prediction, inpainting or a
        refiner."""
        return folder_kind(folder)

    def shapes_kind(self, shapes: Mapping[str, tuple], *, source: str = "checkpoint") -> str | None:
        """The kind ("sd15" or "sdxl") of an LDM-layout single file; ConfigError saying what was found otherwise."""
        return detect_family(shapes, source=source)

    def load(self, source: Path, kind: str, *, tokenizer: str = "", dtype: torch.dtype = torch.float32,
             shapes: Mapping | None = None) -> BaseModel:
        """The base from a diffusers folder (``shapes`` None) or a single file, on the CPU, not yet frozen."""
        from diffusers import DDPMScheduler

        if shapes is None:
            unet, vae, encoders, sched_dir = load_folder(source, kind, dtype)
            scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(str(sched_dir)))
            base_dir, configs = source, {}
        else:
            unet, vae, encoders, sched_cfg, configs = load_single_file(source, dict(shapes), kind, dtype)
            scheduler = DDPMScheduler.from_config(sched_cfg)
            base_dir = None
        tokenizers = load_tokenizers(kind, tokenizer=tokenizer, base_dir=base_dir)
        return BaseModel(kind=kind, family=self, unet=unet, vae=vae, text_encoders=tuple(encoders),
                         tokenizers=tokenizers, scheduler=scheduler, vae_scale=float(vae.config.scaling_factor),
                         source=str(source), configs=configs)

    def encode_prompt(self, base: BaseModel, prompts: Sequence[str], *, resolution: int | None = None,
                      crops_coords_top_left: torch.Tensor | None = None) -> dict:
        """Text conditioning for the UNet, as SD1.5/SDXL were trained.

        Gradients flow when a text encoder has trainable LoRA layers; wrap in ``torch.no_grad()``
        otherwise.

        Parameters
        ----------
        prompts : sequence of str
            B prompts (padded/truncated to 77 tokens).
        resolution : int, optional
            SDXL only: the (square) original and target size in ``time_ids``; default: the UNet's
            native size (``sample_size * 8``).
        crops_coords_top_left : (B, 2) tensor, optional
            SDXL only: crop offsets (top, left) in pixels; default zeros.

        Returns
        -------
        dict
            SD1.5: ``{"encoder_hidden_states": (B, 77, 768)}`` (last hidden state of CLIP-L).
            SDXL: ``{"encoder_hidden_states": (B, 77, 2048)`` (penultimate hidden states of both
            encoders, concatenated), ``"added_cond_kwargs": {"text_embeds": (B, 1280) pooled,
            "time_ids": (B, 6) = (orig_h, orig_w, crop_top, crop_left, target_h, target_w)}}``.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(
                f"encode_prompt: prompts must be a sequence of str, got {type(prompts).__name__}"
                + ("; wrap a single prompt in a list: [prompt]" if isinstance(prompts, str) else "")
            )
        prompts = list(prompts)
        first = base.text_encoders[0]
        device = next(first.parameters()).device
        if base.kind == "sd15":
            ids = _token_ids(base.tokenizers[0], first, prompts, device)
            return {"encoder_hidden_states": first(ids).last_hidden_state}
        hidden, pooled = [], None
        for tok, enc in zip(base.tokenizers, base.text_encoders):
            out = enc(_token_ids(tok, enc, prompts, enc.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = getattr(out, "text_embeds", None)
        h = torch.cat(hidden, dim=-1)
        size = resolution or base.unet.config.sample_size * base.vae_factor
        crops = torch.zeros(len(prompts), 2) if crops_coords_top_left is None else crops_coords_top_left.float().cpu()
        if crops.shape != (len(prompts), 2):
            raise ValueError(
                f"encode_prompt: crops_coords_top_left must be ({len(prompts)}, 2), got {tuple(crops.shape)}"
            )
        sizes = torch.tensor([size, size], dtype=torch.float32).expand(len(prompts), 2)
        time_ids = torch.cat([sizes, crops, sizes], dim=1).to(device=h.device, dtype=h.dtype)
        return {"encoder_hidden_states": h, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

    def encode_images(self, base: BaseModel, pixels: torch.Tensor, *, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """UNet-space latents of images: ``(B, 3, H, W)`` in [-1, 1] → ``(B, 4, H/8, W/8)`` × ``vae_scale``.

        Works for both VAE kinds: an ``AutoencoderKL`` gives its posterior mean (``sample=False``) or a
        draw (``sample=True``, seeded by ``generator``); a TAESD (``AutoencoderTiny``) is deterministic.
        Cast ``pixels`` to the VAE's dtype and device beforehand.
        """
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"encode_images: pixels must be (B, 3, H, W) in [-1, 1], got {tuple(pixels.shape)}")
        out = base.vae.encode(pixels)
        if hasattr(out, "latent_dist"):
            latents = out.latent_dist.sample(generator) if sample else out.latent_dist.mean
        else:
            latents = out.latents
        return latents * base.vae_scale


    def decode_latents(self, base: BaseModel, latents: torch.Tensor) -> torch.Tensor:
        """Images from UNet-space latents: ``(B, 4, h, w)`` → ``(B, 3, 8h, 8w)`` in about [-1, 1]."""
        return base.vae.decode(latents / base.vae_scale).sample

    def process(self, scheduler: Any, config: Any = None) -> DDPMProcess:
        """The DDPM forward process of ``scheduler`` (the run's ``config`` changes nothing here)."""
        return DDPMProcess(scheduler)

    def pipelines(self, base: BaseModel) -> tuple:
        """(text-to-image, image-to-image) diffusers pipelines on ``base``'s modules, DDIM sampling."""
        from diffusers import (DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                               StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline)

        scheduler = DDIMScheduler.from_config(base.scheduler.config)
        if base.kind == "sdxl":
            parts = dict(vae=base.vae, text_encoder=base.text_encoders[0], text_encoder_2=base.text_encoders[1],
                         tokenizer=base.tokenizers[0], tokenizer_2=base.tokenizers[1], unet=base.unet, scheduler=scheduler)
            return StableDiffusionXLPipeline(**parts), StableDiffusionXLImg2ImgPipeline(**parts)
        parts = dict(vae=base.vae, text_encoder=base.text_encoders[0], tokenizer=base.tokenizers[0], unet=base.unet,
                     scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return StableDiffusionPipeline(**parts), StableDiffusionImg2ImgPipeline(**parts)

    def save_lora(self, path: Path, model: torch.nn.Module, *, config: dict, step: int, kind: str,
                  final: bool = False) -> Path:
        """Kohya keys (``lora_unet_…`` + ``.alpha``), which ComfyUI's ``LoraLoader`` maps for SD1.5 and SDXL."""
        return save_lora(path, model, config=config, step=step, base_kind=kind)

