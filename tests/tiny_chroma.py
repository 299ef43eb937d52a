"""Tiny, seeded Chroma fixtures in the file layouts ComfyUI users keep (and as a diffusers folder).

- ``tiny_chroma_transformer(seed=0)`` → diffusers ``ChromaTransformer2DModel``: 1 double + 1 single block,
  2 heads of width 32 (inner 64), RoPE axes (4, 14, 14), 16 latent channels packed 2×2 into 64-wide tokens,
  T5 width 32, and the distilled guidance approximator at its real input width 64 (ComfyUI hard-codes
  ``in_dim`` 64) with hidden width 32 and 2 layers (real: 5120 and 5).
  Forward: ``tiny_chroma_inputs()`` → tokens (B, 16, 64) for 8×8 latents, T5 states (B, 6, 32), σ (B,), and a
  bool ``attention_mask`` (B, 6 + 16) that masks the last text token.
- ``chroma_to_bfl(sd, config)`` → the ``models/diffusion_models/chroma-*.safetensors`` keys (BFL names as
  Flux.1, no ``img_mod`` / ``txt_mod`` / ``modulation`` / ``time_in`` / ``vector_in`` / final adaLN, plus
  ``distilled_guidance_layer.{in_proj, layers.N.in_layer, layers.N.out_layer, norms.N.scale, out_proj}``).
- ``write_chroma_files(folder, …)`` / ``tiny_chroma_files(seed)`` (cached): the diffusion model plus the T5 and
  ``ae`` files of ``tests/tiny_flux.py`` (Chroma uses Flux's ae and T5-XXL, no CLIP);
  ``write_chroma_diffusers_folder`` / ``tiny_chroma_diffusers_folder(seed)``: a ChromaPipeline folder.

Facts checked while writing this (diffusers 0.42.1, ComfyUI 0.3.64): diffusers'
``convert_chroma_transformer_checkpoint_to_diffusers`` (``loaders/single_file_utils.py`` line 3570) hard-codes
``inner_dim = 3072`` for the ``linear1`` split, like the Flux one; ComfyUI detects Chroma by
``distilled_guidance_layer.norms.0.scale`` beside Flux's marker (``comfy/model_detection.py`` line 177, 199)
and hard-codes ``hidden_size`` 3072, ``hidden_dim`` 5120, 5 approximator layers and ``mod_index_length``
344 (``comfy/ldm/chroma/model.py``), so it detects the tiny file as ``chroma`` but builds it only with the
tiny sizes put into its config. Every weight is seeded and no parameter is constant (``tiny_flux``'s rule).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .tiny_checkpoint import cache_dir
from .tiny_flux import (
    AXES_DIMS_ROPE, FLUX_SCHEDULER, HEAD_DIM, HEADS, LATENT_CHANNELS, T5_WIDTH, _atomic_save, _cached_folder,
    _vary_constants, flux_to_bfl, latent_image_ids, pack_latents, tiny_ae_state, tiny_flux_vae, tiny_t5,
    tiny_t5_state,
)

__all__ = ["ASSET_VERSION", "APPROX_HIDDEN", "APPROX_LAYERS", "CHROMA_SCHEDULER", "tiny_chroma_transformer",
           "chroma_to_bfl", "tiny_chroma_inputs", "write_chroma_files", "write_chroma_diffusers_folder",
           "tiny_chroma_files", "tiny_chroma_diffusers_folder"]

ASSET_VERSION = "v1"
APPROX_HIDDEN, APPROX_LAYERS = 32, 2
#: ChromaPipeline computes Flux's resolution shift μ for every call; the single-file default assumes Flux-dev's
#: dynamic-shifting scheduler (see ``trainers/families/chroma.py``).
CHROMA_SCHEDULER = dict(FLUX_SCHEDULER)
FILE_NAMES = {"diffusion_model": "diffusion_models/chroma-tiny.safetensors",
              "t5xxl": "text_encoders/t5xxl_fp16.safetensors", "vae": "vae/ae.safetensors"}
#: Flux.1's modulation tensors, which Chroma's blocks lack (its approximator gives every block's modulation)
_FLUX_ONLY = ("time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2",
              "time_text_embed.text_embedder.linear_1", "time_text_embed.text_embedder.linear_2", "norm_out.linear")
_FLUX_ONLY_BFL = (".time_in.", ".vector_in.", ".final_layer.adaLN_modulation.", ".img_mod.", ".txt_mod.", ".modulation.")


def tiny_chroma_transformer(seed: int = 0):
    """A seeded tiny ``ChromaTransformer2DModel`` (fp32, eval).

    ``model(hidden_states (B, L, 64), encoder_hidden_states (B, S, 32), timestep (B,) σ in [0, 1],
    img_ids (L, 3), txt_ids (S, 3), attention_mask (B, S + L) | None)`` → (B, L, 64).
    """
    from diffusers import ChromaTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ChromaTransformer2DModel(
            patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1,
            attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=T5_WIDTH,
            axes_dims_rope=AXES_DIMS_ROPE, approximator_num_channels=64, approximator_hidden_dim=APPROX_HIDDEN,
            approximator_layers=APPROX_LAYERS,
        )
    return _vary_constants(model, seed).eval()


def chroma_to_bfl(state_dict_diffusers: dict, config) -> dict[str, torch.Tensor]:
    """diffusers ``ChromaTransformer2DModel`` state dict → Chroma's BFL names (no prefix): ``tiny_flux.flux_to_bfl``
    for everything Flux.1 shares (placeholders stand in for the modulation tensors Chroma lacks, and are
    dropped again), and the approximator renamed as diffusers' converter reads it. ``KeyError`` if a tensor
    would be left behind."""
    sd = dict(state_dict_diffusers)
    approx = {k: sd.pop(k) for k in list(sd) if k.startswith("distilled_guidance_layer.")}
    empty = torch.zeros(0)
    blocks = [f"transformer_blocks.{i}.norm1{s}.linear" for i in range(config["num_layers"]) for s in ("", "_context")]
    blocks += [f"single_transformer_blocks.{i}.norm.linear" for i in range(config["num_single_layers"])]
    sd.update({f"{m}.{p}": empty for m in (*_FLUX_ONLY, *blocks) for p in ("weight", "bias")})
    out = {k: v for k, v in flux_to_bfl(sd, {**config, "guidance_embeds": False}).items()
           if not any(m in f".{k}" for m in _FLUX_ONLY_BFL)}
    for key, value in approx.items():
        name = key.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
        out[name.replace(".weight", ".scale") if ".norms." in key else name] = value
    return out


def tiny_chroma_inputs(seed: int = 0, *, batch: int = 1, size: int = 8, text_len: int = 6) -> dict:
    """Seeded keyword arguments for ``tiny_chroma_transformer``'s forward (the last text token masked out)."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, LATENT_CHANNELS, size, size, generator=g)
    mask = torch.ones(batch, text_len + (size // 2) ** 2, dtype=torch.bool)
    mask[:, text_len - 1] = False
    return {"hidden_states": pack_latents(latents),
            "encoder_hidden_states": torch.randn(batch, text_len, T5_WIDTH, generator=g),
            "timestep": torch.rand(batch, generator=g), "img_ids": latent_image_ids(size, size),
            "txt_ids": torch.zeros(text_len, 3), "attention_mask": mask}


def write_chroma_files(folder, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16, prefix: str = "") -> dict[str, Path]:
    """Write the three files a ComfyUI Chroma user keeps under ``folder`` (as in ComfyUI's ``models/``):
    ``diffusion_model`` (Chroma BFL names, ``dtype``, keys prefixed with ``prefix``), ``t5xxl`` (fp16) and
    ``vae`` (fp32 ``ae``). Returns name → path."""
    folder = Path(folder)
    model = tiny_chroma_transformer(seed)
    states = {"diffusion_model": {prefix + k: v.to(dtype) for k, v in chroma_to_bfl(model.state_dict(), model.config).items()},
              "t5xxl": {k: v.half() for k, v in tiny_t5_state(seed).items()}, "vae": tiny_ae_state(seed)}
    return {name: _atomic_save(state, folder / FILE_NAMES[name]) for name, state in states.items()}


def write_chroma_diffusers_folder(folder, seed: int = 0) -> Path:
    """Save a ChromaPipeline-layout folder (fp32; no tokenizer) with the weights of ``write_chroma_files(seed)``:
    transformer/, vae/, text_encoder/ (T5), scheduler/ (``CHROMA_SCHEDULER``), model_index.json."""
    from diffusers import ChromaPipeline, FlowMatchEulerDiscreteScheduler

    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**CHROMA_SCHEDULER), vae=tiny_flux_vae(seed),
                          text_encoder=tiny_t5(seed), tokenizer=None, transformer=tiny_chroma_transformer(seed))
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def tiny_chroma_files(seed: int = 0) -> dict[str, Path]:
    """``write_chroma_files`` (bf16, no prefix) cached under ``cache_dir()/tiny_chroma-v1/seed{N}``."""
    root = _cached_folder(cache_dir() / f"tiny_chroma-{ASSET_VERSION}" / f"seed{seed}",
                          lambda tmp: write_chroma_files(tmp, seed=seed))
    return {name: root / rel for name, rel in FILE_NAMES.items()}


def tiny_chroma_diffusers_folder(seed: int = 0) -> Path:
    """``write_chroma_diffusers_folder`` cached under ``cache_dir()/tiny_chroma-v1/diffusers-seed{N}`` (read-only)."""
    return _cached_folder(cache_dir() / f"tiny_chroma-{ASSET_VERSION}" / f"diffusers-seed{seed}",
                          lambda tmp: write_chroma_diffusers_folder(tmp, seed))


if __name__ == "__main__":  # python -m tests.tiny_chroma → build (or find) the cached assets
    print(*tiny_chroma_files().values(), tiny_chroma_diffusers_folder(), sep="\n")
