"""Flux.1 weights as ComfyUI users keep them: a diffusion model, text-encoder files and a VAE file, or a folder.

- ``models/diffusion_models/flux1-dev.safetensors`` (BFL layout, optionally ``model.diffusion_model.``-prefixed,
  bf16 / fp16 / fp8 stored) → ``FluxTransformer2DModel`` sized from its shapes (``flux_keys``);
- ``models/text_encoders/clip_l.safetensors`` and ``t5xxl_fp16.safetensors`` (``component_files``, any order);
- ``models/vae/ae.safetensors`` (LDM layout, 16 latent channels) with Flux's latent scaling (0.3611) and shift
  (0.1159), which are not in the file;
- or a diffusers ``FluxPipeline`` folder (``transformer/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .component_files import build_strict, cast, read_tensors
from .flux_keys import BFL_MARKER, bfl_to_diffusers, flux_config, strip_prefix

__all__ = ["FLUX_VAE", "flux_kind", "load_transformer", "load_folder"]

#: Flux's latent normalisation: model latents = (VAE mean − shift) × scale
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}


def flux_kind(shapes: Mapping[str, tuple]) -> str | None:
    """"flux-dev" (with the guidance embedder: dev, Krea-dev) or "flux-schnell" for a Flux.1 diffusion model; None
    for anything else (Chroma has no ``img_in``-side ``vector_in`` and is its own family)."""
    sd = strip_prefix(shapes)
    if BFL_MARKER not in sd or "img_in.weight" not in sd or "vector_in.in_layer.weight" not in sd:
        return None
    return "flux-dev" if "guidance_in.in_layer.weight" in sd else "flux-schnell"


def load_transformer(path: Path, shapes: Mapping[str, tuple], dtype: torch.dtype):
    """``FluxTransformer2DModel`` from a BFL-layout file, strictly (every tensor used, every parameter set)."""
    from diffusers import FluxTransformer2DModel

    state = bfl_to_diffusers(cast(strip_prefix(read_tensors(path)), dtype))
    return build_strict(FluxTransformer2DModel, flux_config(strip_prefix(shapes)), state, "Flux.1 diffusion model", path)


def load_folder(folder: Path, dtype: torch.dtype):
    """(transformer, vae, {"clip_l", "t5"}) from a diffusers ``FluxPipeline`` folder."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    opts = dict(local_files_only=True)
    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, **opts)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **opts)
    encoders = {"clip_l": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **opts),
                "t5": T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_2", dtype=dtype, **opts)}
    return transformer, vae, encoders
