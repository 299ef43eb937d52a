"""SD3.5 weights as ComfyUI users keep them: a diffusion model, three text-encoder files and a VAE, or a folder.

- ``models/diffusion_models/sd3.5_large.safetensors`` / ``sd3.5_medium.safetensors`` (SAI's MMDiT layout:
  ``x_embedder.proj``, ``pos_embed``, ``t_embedder``, ``y_embedder``, ``context_embedder``,
  ``joint_blocks.N.{x_block,context_block}.…``, ``final_layer``), or a ``models/checkpoints/`` file with the same
  tensors under ``model.diffusion_model.`` → ``SD3Transformer2DModel`` sized from its shapes (``sd3_config``) and
  converted by diffusers' own ``convert_sd3_transformer_checkpoint_to_diffusers`` (it reads every size from the
  tensors: nothing is hard-coded, so it converts narrow test models too);
- ``models/text_encoders/clip_l.safetensors``, ``clip_g.safetensors`` and ``t5xxl_fp16.safetensors``
  (``component_files``, any order);
- ``models/vae/`` (an LDM-layout 16-channel autoencoder; SD3.5's VAE has no quant convs) or the checkpoint's own
  ``first_stage_model.*``, with SD3's latent scaling (1.5305) and shift (0.0609), which are not in the file;
- or a diffusers ``StableDiffusion3Pipeline`` folder (``transformer/``, ``vae/``, ``text_encoder{,_2,_3}/``).

Kinds: "sd35-medium" is MMDiT-X (``joint_blocks.N.x_block.attn2.*`` in its first 13 blocks: diffusers'
``dual_attention_layers``), "sd35-large" (and Large Turbo) plain MMDiT. Both have RMS q/k norms
(``…attn.ln_q.weight``, (head_dim,)), which is how the head size is read; SD3.0 Medium has none and is refused.

Shapes: ``x_embedder.proj.weight`` (D, 16, 2, 2) → width D, patch 2, 16 latent channels;
``context_embedder.weight`` (D, T5 width); ``y_embedder.mlp.0.weight`` (D, pooled CLIP-L + CLIP-G width);
``pos_embed`` (1, M², D) → ``pos_embed_max_size`` M; ``final_layer.linear.weight`` (2·2·16, D).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from ...core.errors import ConfigError
from ...core.ldm_unet import count_indices
from .component_files import build_strict, cast, read_tensors

__all__ = ["SD3_MARKER", "SD3_VAE", "sd3_kind", "strip_prefix", "sd3_config", "mmdit_to_diffusers",
           "load_transformer", "load_folder"]

#: a key every MMDiT has (ComfyUI's ``model_detection.detect_unet_config`` tests the same one)
SD3_MARKER = "joint_blocks.0.context_block.attn.qkv.weight"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
#: SD3's latent normalisation (ComfyUI ``latent_formats.SD3``): model latents = (VAE mean − shift) × scale
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
_QK_NORM = "joint_blocks.0.x_block.attn.ln_q.weight"


def strip_prefix(state: Mapping[str, object]) -> dict:
    """The MMDiT's tensors without a checkpoint prefix (``model.diffusion_model.``), other parts left out."""
    for prefix in _PREFIXES:
        if prefix + SD3_MARKER in state:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def sd3_kind(shapes: Mapping[str, tuple]) -> str | None:
    """"sd35-medium" (MMDiT-X), "sd35-large" or None for a file that is not an MMDiT; ConfigError for SD3.0 Medium
    (no q/k norms), which this trainer does not train."""
    sd = strip_prefix(shapes)
    if SD3_MARKER not in sd or "x_embedder.proj.weight" not in sd:
        return None
    if _QK_NORM not in sd:
        raise ConfigError("load_base: the base must be an SD3.5 Medium or Large diffusion model (q/k-normed MMDiT), "
                          "got an MMDiT without q/k norms (SD3.0 Medium), which is not supported; fix: use an SD3.5 "
                          "model (ComfyUI: models/diffusion_models/sd3.5_large.safetensors)")
    return "sd35-medium" if any(".x_block.attn2." in k for k in sd) else "sd35-large"


def sd3_config(shapes: Mapping[str, tuple]) -> dict:
    """``SD3Transformer2DModel`` config from MMDiT tensor shapes (prefix stripped); see the module docstring."""
    width, in_channels, patch, _ = shapes["x_embedder.proj.weight"]
    head = shapes[_QK_NORM][0]
    caption_dim, text_dim = shapes["context_embedder.weight"]
    positions = shapes["pos_embed"][1]
    side = math.isqrt(positions)
    if width % head or caption_dim != width or side * side != positions:
        raise ConfigError(f"load_base: an SD3.5 diffusion model must have a head size that divides its width, a "
                          f"context_embedder as wide as the model and a square pos_embed, got width {width}, head "
                          f"size {head}, context width {caption_dim} and {positions} positions")
    return {
        "sample_size": 128, "patch_size": patch, "in_channels": in_channels,
        "num_layers": count_indices(shapes, r"joint_blocks\.(\d+)\."), "attention_head_dim": head,
        "num_attention_heads": width // head, "joint_attention_dim": text_dim, "caption_projection_dim": caption_dim,
        "pooled_projection_dim": shapes["y_embedder.mlp.0.weight"][1],
        "out_channels": shapes["final_layer.linear.weight"][0] // (patch * patch), "pos_embed_max_size": side,
        "dual_attention_layers": tuple(sorted({int(k.split(".")[1]) for k in shapes if ".x_block.attn2." in k})),
        "qk_norm": "rms_norm",
    }


def mmdit_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDiT tensors (prefix stripped) → ``SD3Transformer2DModel`` names, by diffusers' own converter; ConfigError
    for tensors it leaves over (a newer variant, or another model's file)."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    rest = dict(state)  # the converter pops what it converts
    out = convert_sd3_transformer_checkpoint_to_diffusers(rest)
    if rest:
        left = sorted(rest)
        raise ConfigError(f"load_base: an SD3.5 diffusion model must have only MMDiT tensors, got {len(left)} others "
                          f"(e.g. {left[:3]}); is it another model family or a newer variant?")
    return out


def load_transformer(path: Path, shapes: Mapping[str, tuple], dtype: torch.dtype):
    """``SD3Transformer2DModel`` from an MMDiT-layout file, strictly (every tensor used, every parameter set)."""
    from diffusers import SD3Transformer2DModel

    prefix = next((p for p in _PREFIXES if p + SD3_MARKER in shapes), "")
    tensors = read_tensors(path, lambda k: k.startswith(prefix))
    state = mmdit_to_diffusers(cast({k[len(prefix):]: v for k, v in tensors.items()}, dtype))
    return build_strict(SD3Transformer2DModel, sd3_config(strip_prefix(shapes)), state, "SD3.5 diffusion model", path)


def load_folder(folder: Path, dtype: torch.dtype):
    """(transformer, vae, {"clip_l", "clip_g", "t5"}) from a diffusers ``StableDiffusion3Pipeline`` folder."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    opts = dict(local_files_only=True)
    transformer = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, **opts)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **opts)
    clips = {name: CLIPTextModelWithProjection.from_pretrained(folder, subfolder=sub, dtype=dtype, **opts)
             for name, sub in (("clip_l", "text_encoder"), ("clip_g", "text_encoder_2"))}
    missing = [s for s in ("text_encoder_3",) if not (folder / s / "config.json").is_file()]
    if missing:
        raise ConfigError(f"load_base: an SD3.5 diffusers folder must have text_encoder_3/ (T5-XXL), got "
                          f"{str(folder)!r} without it; fix: download the full pipeline folder")
    t5 = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3", dtype=dtype, **opts)
    return transformer, vae, {**clips, "t5": t5}
