"""Chroma weights as ComfyUI users keep them: a diffusion model plus Flux.1's T5-XXL and ae files, or a folder.

- ``models/diffusion_models/chroma-*.safetensors`` (Chroma1-HD, …; BFL layout like Flux.1, optionally
  ``model.diffusion_model.``-prefixed, bf16 / fp16 / fp8 stored) → ``ChromaTransformer2DModel`` sized from its
  shapes. Chroma is Flux.1-schnell without the per-block modulation: no ``img_mod`` / ``txt_mod`` /
  ``modulation`` / ``time_in`` / ``vector_in`` / final adaLN; a "distilled guidance" approximator MLP
  (``distilled_guidance_layer.{in_proj, layers.N.{in,out}_layer, norms.N.scale, out_proj}``) gives every block's
  shift / scale / gate from σ alone;
- ``models/text_encoders/t5xxl_fp16.safetensors`` and ``models/vae/ae.safetensors`` (``component_files``, with
  Flux's latent scaling and shift: Chroma uses Flux's ae); no CLIP;
- or a diffusers ``ChromaPipeline`` folder (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``).

``chroma_to_diffusers`` converts the tensors Flux.1 shares through ``flux_keys.bfl_to_diffusers`` (diffusers'
``convert_chroma_transformer_checkpoint_to_diffusers`` hard-codes ``inner_dim = 3072`` as Flux's does, so it
cannot read narrower models; ``tests/trainers/test_chroma_train.py`` checks both agree at width 3072) and
renames the approximator (``in_layer`` → ``linear_1``, ``out_layer`` → ``linear_2``, ``norms.N.scale`` →
``norms.N.weight``).

Shapes: ``distilled_guidance_layer.in_proj.weight`` (approximator width 5120, 64 = 4 × 16-channel σ / guidance /
2 × index embeddings); ``…out_proj.weight`` (D, 5120); the rest as Flux.1 (``flux_keys``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ...core.errors import ConfigError
from ...core.ldm_unet import count_indices
from .component_files import build_strict, cast, read_tensors
from .flux_keys import BFL_MARKER, bfl_to_diffusers, flux_config, strip_prefix

__all__ = ["APPROXIMATOR", "chroma_kind", "chroma_to_diffusers", "chroma_config", "load_transformer", "load_folder"]

#: Chroma's modulation approximator (ComfyUI's ``model_detection`` tests ``…norms.0.scale`` under it)
APPROXIMATOR = "distilled_guidance_layer."


def chroma_kind(shapes: Mapping[str, tuple]) -> str | None:
    """"chroma" for a Chroma diffusion model, None for anything else; ConfigError for Chroma variants the trainer
    cannot train (Chroma Radiance, in pixel space; the early layout with ``distilled_guidance_layer.0.…``)."""
    sd = strip_prefix(shapes)
    if BFL_MARKER not in sd or not any(k.startswith(APPROXIMATOR) for k in sd):
        return None
    if "nerf_blocks.0.norm.scale" in sd or "img_in.weight" not in sd:
        raise ConfigError("load_base: base must be a latent-space Chroma model (Chroma1-HD, Chroma1-Base, v48, …), "
                          "got Chroma Radiance (pixel space, nerf_blocks), which the trainer does not support")
    if APPROXIMATOR + "norms.0.scale" not in sd:
        raise ConfigError(f"load_base: a Chroma model must have the approximator layout diffusers reads "
                          f"({APPROXIMATOR}norms.N.scale), got keys like "
                          f"{sorted(k for k in sd if k.startswith(APPROXIMATOR))[:3]}; is it an early Chroma release?")
    return "chroma"


def chroma_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Chroma BFL-layout tensors (prefix already stripped) → ``ChromaTransformer2DModel`` state dict; ConfigError
    naming tensors it does not know."""
    approx = {k: v for k, v in state.items() if k.startswith(APPROXIMATOR)}
    try:
        out = bfl_to_diffusers({k: v for k, v in state.items() if k not in approx})
    except ConfigError as exc:
        detail = str(exc).split(", got ", 1)[-1]
        raise ConfigError(f"load_base: a Chroma diffusion model must have only Chroma tensors, got {detail}") from None
    for key, value in approx.items():
        name = key.replace(".in_layer.", ".linear_1.").replace(".out_layer.", ".linear_2.")
        out[name.removesuffix(".scale") + ".weight" if ".norms." in key else name] = value
    return out


def chroma_config(shapes: Mapping[str, tuple]) -> dict:
    """``ChromaTransformer2DModel`` config from Chroma BFL tensor shapes (prefix stripped): Flux.1's sizing
    (``flux_keys.flux_config``: head size, RoPE axes, depths, widths) without the pooled / guidance inputs, plus
    the approximator's widths and depth."""
    hidden = shapes["img_in.weight"][0]
    config = flux_config({**shapes, "vector_in.in_layer.weight": (hidden, 0)})
    for flux_only in ("pooled_projection_dim", "guidance_embeds"):
        del config[flux_only]
    width, channels = shapes[APPROXIMATOR + "in_proj.weight"]
    return {**config, "approximator_num_channels": channels, "approximator_hidden_dim": width,
            "approximator_layers": count_indices(shapes, r"distilled_guidance_layer\.layers\.(\d+)\.")}


def load_transformer(path: Path, shapes: Mapping[str, tuple], dtype: torch.dtype):
    """``ChromaTransformer2DModel`` from a Chroma BFL-layout file, strictly (every tensor used, every parameter
    set; the modulation-index table is a computed buffer)."""
    from diffusers import ChromaTransformer2DModel

    state = chroma_to_diffusers(cast(strip_prefix(read_tensors(path)), dtype))
    return build_strict(ChromaTransformer2DModel, chroma_config(strip_prefix(shapes)), state, "Chroma diffusion model", path)


def load_folder(folder: Path, dtype: torch.dtype):
    """(transformer, vae, T5 encoder) from a diffusers ``ChromaPipeline`` folder."""
    from diffusers import AutoencoderKL, ChromaTransformer2DModel
    from transformers import T5EncoderModel

    opts = dict(local_files_only=True)
    transformer = ChromaTransformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, **opts)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **opts)
    t5 = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **opts)
    return transformer, vae, t5
