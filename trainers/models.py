"""Base models for training: load one offline, encode prompts and images, and the LoRA helpers.

``load_base(path)`` accepts a diffusers folder or a single-file ``.safetensors`` checkpoint as ComfyUI users
hold it; the family (``trainers.families``: today SD1.5 and SDXL, ``families/sd.py``) is detected from the
folder's configs or the file's keys and loads it (single files are sized from their weights with the shipped
configs, so nothing is fetched from a model hub). All base weights are frozen (``requires_grad=False``) and in
eval mode; add trainable LoRA layers with ``add_lora``. ``encode_prompt`` / ``encode_images`` /
``decode_latents`` hand over to the base's family.

The LoRA helpers (``add_lora``, ``adapters_disabled``, ``merge_lora``, ``apply_lora_state``) live in
``lora_layers.py``; saving/loading LoRA files in ``core/lora_io.py``. Both are re-exported here.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.errors import ConfigError, ModelNotFoundError
from ..core.lora_io import LoraState, load_lora_state, save_lora
from .families.base import BaseModel
from .lora_layers import adapters_disabled, add_lora, apply_lora_state, merge_lora, unwrap_model

__all__ = [
    "BaseModel",
    "load_base",
    "encode_prompt",
    "encode_images",
    "decode_latents",
    "add_lora",
    "adapters_disabled",
    "merge_lora",
    "apply_lora_state",
    "unwrap_model",
    "save_lora",
    "load_lora_state",
    "LoraState",
]


def _freeze(*modules) -> None:
    for m in modules:
        m.requires_grad_(False)
        m.eval()


def load_base(
    path: str | os.PathLike, *, tokenizer: str | os.PathLike = "", device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32, text_encoders: Sequence[str] = (), vae: str = "",
) -> BaseModel:
    """Load a base model without network access: the family (``trainers.families``) is detected, then loads it.

    Parameters
    ----------
    path : path
        A diffusers pipeline folder, or a single-file ``.safetensors`` checkpoint (LDM layout).
    tokenizer : path, optional
        Folder with CLIP ``vocab.json`` + ``merges.txt``; "" searches (see ``tokenizer_search``).
    device, dtype
        Where and in which dtype the frozen base weights live (LoRA layers added later stay fp32).
    text_encoders, vae : files, optional
        The companions of a diffusion-model file (Flux.1: clip_l + t5xxl, ae; Chroma; SD3.5); a folder or an SD checkpoint
        holds its own.

    Returns
    -------
    BaseModel

    Raises
    ------
    ModelNotFoundError
        ``path`` does not exist, or no tokenizer files were found (listing where it looked).
    ConfigError
        The model is not an SD1.5/SDXL epsilon model (SD2, v-prediction, refiner, inpainting, a
        LoRA or a random file), saying what was detected.
    """
    from .families import detect

    src = Path(path).expanduser()
    if not src.exists():
        raise ModelNotFoundError(f"load_base: base model {str(path)!r}", [str(src.parent)])
    family, kind, shapes = detect(src)
    companions = {"text_encoders": tuple(text_encoders), "vae": str(vae or "")} if text_encoders or vae else {}
    if companions and not hasattr(family, "vae_factors"):
        raise ConfigError(f"load_base: text_encoders and vae are for a diffusion-model base (Flux.1, Chroma, SD3.5), got them with "
                          f"{str(path)!r}, a {kind} model that holds its own; fix: leave text_encoders and vae empty")
    base = family.load(src, kind, tokenizer=tokenizer, dtype=dtype, shapes=shapes, **companions)
    _freeze(base.unet, base.vae, *base.text_encoders)
    for m in (base.unet, base.vae, *base.text_encoders):
        m.to(device)
    return base


def encode_prompt(base: BaseModel, prompts: Sequence[str], **options) -> dict:
    """The model's text conditioning for B prompts (``base.family.encode_prompt``; SD: 77 tokens, SDXL options
    ``resolution`` and ``crops_coords_top_left``). Wrap in ``torch.no_grad()`` unless a text encoder trains."""
    return base.family.encode_prompt(base, prompts, **options)


def encode_images(base: BaseModel, pixels: torch.Tensor, *, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Model-space latents of ``(B, 3, H, W)`` images in [-1, 1] (``base.family.encode_images``); cast ``pixels``
    to the VAE's dtype and device beforehand."""
    return base.family.encode_images(base, pixels, sample=sample, generator=generator)


def decode_latents(base: BaseModel, latents: torch.Tensor) -> torch.Tensor:
    """Images in about [-1, 1] from model-space latents (``base.family.decode_latents``)."""
    return base.family.decode_latents(base, latents)
