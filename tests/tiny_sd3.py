"""Tiny, seeded SD3.5 fixtures in the file layouts ComfyUI users keep (and as a diffusers folder).

- ``tiny_sd3_transformer(seed=0, *, medium=False)`` → diffusers ``SD3Transformer2DModel``: 2 joint blocks,
  2 heads of width 64 (inner 128; ComfyUI's MMDiT hard-codes 64-wide heads and ``depth`` = width / 64 = blocks,
  so it can build this one), patch 2, 16 latent channels, T5 width 64, pooled width 64 (CLIP-L 32 + CLIP-G 32),
  ``pos_embed_max_size`` 16, RMS q/k norms; ``medium=True`` is MMDiT-X (``dual_attention_layers=(0,)``).
  Forward: ``tiny_sd3_inputs()`` → latents (B, 16, 8, 8), text (B, 7, 64), pooled (B, 64), timestep σ·1000.
- ``sd3_to_mmdit(sd, config)`` → SAI / ComfyUI ``models/diffusion_models/sd3.5_*.safetensors`` names
  (``x_embedder.proj``, ``joint_blocks.N.x_block.attn.qkv`` …), exactly the inverse of diffusers'
  ``convert_sd3_transformer_checkpoint_to_diffusers``.
- ``tiny_clip_l`` (``tests/tiny_flux.py``'s: ``CLIPTextModel``, hidden 32, quick_gelu, no projection),
  ``tiny_clip_g(seed)`` (``CLIPTextModelWithProjection``, hidden 32, gelu, 32-d projection), ``tiny_t5_sd3(seed)``
  (T5 v1.1 encoder, d_model 64, d_kv 8, 2 heads, 2 layers, d_ff 128, vocab 32128); the VAE is
  ``tiny_flux.py``'s 16-channel ``ae`` (the file holds no latent factors; SD3's are 1.5305 / 0.0609).
- ``write_sd3_files(folder, …)`` / ``tiny_sd3_files(seed, medium=)`` (cached): ComfyUI ``models/``-style files,
  plus ``checkpoint`` (``models/checkpoints/``: ``model.diffusion_model.`` + ``first_stage_model.``);
  ``write_sd3_diffusers_folder`` / ``tiny_sd3_diffusers_folder(seed)``: StableDiffusion3Pipeline layout.

Facts checked while writing this (diffusers 0.42.1, transformers 5.25, ComfyUI in ~/.cache/vitruvian):

- diffusers' SD3 converter (``loaders/single_file_utils.py`` line 2018) reads every size from the tensors (layer
  count, ``attn2`` layers, q/k norms), so unlike Flux's it converts narrow models; it pops what it converts.
- The last joint block is ``context_pre_only``: its context stream has no attention output, no MLP and a 2-chunk
  adaLN whose (shift, scale) halves the converter swaps into diffusers' (scale, shift), as for ``final_layer``.
- diffusers' ``from_single_file`` gives SD3's CLIP-L an identity ``text_projection`` (line 1763) and ComfyUI's
  ``sd3_clip`` takes CLIP-L's unprojected pooled output (``return_projected_pooled=False``): the same vector.
  The folder's CLIP-L here is therefore ``CLIPTextModelWithProjection`` with an identity projection.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .tiny import TEXT_HIDDEN, tiny_text_encoder
from .tiny_flux import _atomic_save, _cached_folder, _vary_constants, tiny_ae_state, tiny_clip_l, tiny_clip_l_state, \
    tiny_flux_vae
from .tiny_checkpoint import cache_dir
from .tiny_ldm import clip_to_ldm

__all__ = ["ASSET_VERSION", "HEAD_DIM", "HEADS", "INNER_DIM", "LAYERS", "T5_WIDTH", "POS_EMBED_MAX", "SD3_SCHEDULER",
           "tiny_sd3_transformer", "sd3_to_mmdit", "tiny_clip_g", "tiny_clip_g_state", "tiny_t5_sd3",
           "tiny_t5_sd3_state", "tiny_sd3_vae", "tiny_sd3_inputs", "write_sd3_files", "write_sd3_diffusers_folder",
           "tiny_sd3_files", "tiny_sd3_diffusers_folder"]

ASSET_VERSION = "v1"
HEAD_DIM, HEADS, LAYERS = 64, 2, 2
INNER_DIM = HEAD_DIM * HEADS
T5_WIDTH, T5_VOCAB = 64, 32128
POS_EMBED_MAX = 16
LATENT_CHANNELS = 16
#: SD3.5's scheduler_config.json
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
FILE_NAMES = {"diffusion_model": "diffusion_models/sd3.5_{variant}-tiny.safetensors",
              "checkpoint": "checkpoints/sd3.5_{variant}-tiny.safetensors",
              "clip_l": "text_encoders/clip_l.safetensors", "clip_g": "text_encoders/clip_g.safetensors",
              "t5xxl": "text_encoders/t5xxl_fp16.safetensors", "vae": "vae/sd35_vae.safetensors"}


def tiny_sd3_transformer(seed: int = 0, *, medium: bool = False):
    """A seeded tiny ``SD3Transformer2DModel`` (fp32, eval): MMDiT-X (medium) or plain MMDiT (large).

    ``model(hidden_states (B, 16, h, w), encoder_hidden_states (B, S, 64), pooled_projections (B, 64),
    timestep (B,) σ·1000)`` → (B, 16, h, w), h, w ≤ 2 · 16.
    """
    from diffusers import SD3Transformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=LATENT_CHANNELS, num_layers=LAYERS, attention_head_dim=HEAD_DIM,
            num_attention_heads=HEADS, joint_attention_dim=T5_WIDTH, caption_projection_dim=INNER_DIM,
            pooled_projection_dim=2 * TEXT_HIDDEN, out_channels=LATENT_CHANNELS, pos_embed_max_size=POS_EMBED_MAX,
            dual_attention_layers=(0,) if medium else (), qk_norm="rms_norm",
        )
    return _vary_constants(model, seed).eval()


def _swap(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], 0)


def sd3_to_mmdit(state_dict_diffusers: dict, config) -> dict[str, torch.Tensor]:
    """diffusers ``SD3Transformer2DModel`` state dict → SAI's MMDiT names (no prefix): q/k/v fused into ``qkv``,
    RMS norms → ``ln_q``/``ln_k``, the last block's context adaLN and ``final_layer``'s halves swapped. Raises
    ``KeyError`` if a tensor would be left behind."""
    sd = dict(state_dict_diffusers)
    out: dict[str, torch.Tensor] = {"pos_embed": sd.pop("pos_embed.pos_embed")}

    def move(src: str, dst: str, fn=lambda t: t, params=("weight", "bias")) -> None:
        for p in params:
            out[f"{dst}.{p}"] = fn(sd.pop(f"{src}.{p}"))

    def fused(srcs, dst: str) -> None:
        for p in ("weight", "bias"):
            out[f"{dst}.{p}"] = torch.cat([sd.pop(f"{s}.{p}") for s in srcs], 0)

    for src, dst in [("pos_embed.proj", "x_embedder.proj"), ("context_embedder", "context_embedder"),
                     ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
                     ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
                     ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
                     ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"), ("proj_out", "final_layer.linear")]:
        move(src, dst)
    move("norm_out.linear", "final_layer.adaLN_modulation.1", _swap)
    n = config["num_layers"]
    for i in range(n):
        a, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == n - 1
        fused([a + "attn.to_q", a + "attn.to_k", a + "attn.to_v"], x + "attn.qkv")
        fused([a + "attn.add_q_proj", a + "attn.add_k_proj", a + "attn.add_v_proj"], c + "attn.qkv")
        for src, dst in [("attn.norm_q", x + "attn.ln_q"), ("attn.norm_k", x + "attn.ln_k"),
                         ("attn.norm_added_q", c + "attn.ln_q"), ("attn.norm_added_k", c + "attn.ln_k")]:
            move(a + src, dst, params=("weight",))
        move(a + "attn.to_out.0", x + "attn.proj")
        move(a + "norm1.linear", x + "adaLN_modulation.1")
        move(a + "norm1_context.linear", c + "adaLN_modulation.1", _swap if last else (lambda t: t))
        move(a + "ff.net.0.proj", x + "mlp.fc1")
        move(a + "ff.net.2", x + "mlp.fc2")
        if not last:
            move(a + "attn.to_add_out", c + "attn.proj")
            move(a + "ff_context.net.0.proj", c + "mlp.fc1")
            move(a + "ff_context.net.2", c + "mlp.fc2")
        if i in config["dual_attention_layers"]:
            fused([a + "attn2.to_q", a + "attn2.to_k", a + "attn2.to_v"], x + "attn2.qkv")
            move(a + "attn2.norm_q", x + "attn2.ln_q", params=("weight",))
            move(a + "attn2.norm_k", x + "attn2.ln_k", params=("weight",))
            move(a + "attn2.to_out.0", x + "attn2.proj")
    if sd:
        raise KeyError(f"sd3_to_mmdit: no MMDiT name for {sorted(sd)}")
    return out


def tiny_clip_g(seed: int = 0):
    """``tests/tiny.py: tiny_text_encoder(seed + 1, projection=True)`` (``CLIPTextModelWithProjection``, hidden 32,
    gelu, 32-d projected pooled output) with its constant norms varied: SD3's tiny CLIP-G."""
    with torch.random.fork_rng(devices=[]):
        model = tiny_text_encoder(seed + 1, projection=True)
    return _vary_constants(model, seed + 1).eval()


def tiny_clip_g_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``tiny_clip_g(seed)`` as ``models/text_encoders/clip_g.safetensors`` names it: ``text_model.*`` +
    ``text_projection.weight``."""
    sd = tiny_clip_g(seed).state_dict()
    return {**clip_to_ldm(sd), "text_projection.weight": sd["text_projection.weight"]}


def tiny_clip_l_projected(seed: int = 0):
    """``tiny_clip_l(seed)`` as SD3's ``CLIPTextModelWithProjection`` with an identity projection."""
    from transformers import CLIPTextModelWithProjection

    plain = tiny_clip_l(seed)
    model = CLIPTextModelWithProjection(plain.config).eval()
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in plain.state_dict().items()}
    if not any(k.startswith("text_model.") for k in model.state_dict()):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    model.load_state_dict({**state, "text_projection.weight": torch.eye(TEXT_HIDDEN)}, strict=True)
    return model


def tiny_t5_sd3(seed: int = 0):
    """A seeded tiny T5 v1.1 encoder as wide as the tiny MMDiT's context (d_model 64 ≥ CLIP-L + CLIP-G 32 + 32):
    ids (B, S) → (B, S, 64)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=T5_VOCAB, d_model=T5_WIDTH, d_kv=8, num_heads=2, num_layers=2, d_ff=128,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, dropout_rate=0.0, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        model = T5EncoderModel(config)
    return _vary_constants(model, seed + 2).eval()


def tiny_t5_sd3_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``tiny_t5_sd3(seed)`` as ``t5xxl_fp16.safetensors`` names it (no tied ``encoder.embed_tokens``)."""
    return {k: v for k, v in tiny_t5_sd3(seed).state_dict().items() if k != "encoder.embed_tokens.weight"}


def tiny_sd3_vae(seed: int = 0):
    """``tests/tiny_flux.py``'s 16-channel ``ae`` with SD3's latent factors (1.5305, 0.0609)."""
    from diffusers import AutoencoderKL

    flux = tiny_flux_vae(seed)
    vae = AutoencoderKL.from_config({**flux.config, "scaling_factor": 1.5305, "shift_factor": 0.0609})
    vae.load_state_dict(flux.state_dict(), strict=True)
    return vae.eval()


def tiny_sd3_inputs(seed: int = 0, *, batch: int = 1, size: int = 8, text_len: int = 7) -> dict[str, torch.Tensor]:
    """Seeded keyword arguments for ``tiny_sd3_transformer``'s forward (timestep = σ·1000, σ ∈ [0, 1))."""
    g = torch.Generator().manual_seed(seed)
    return {"hidden_states": torch.randn(batch, LATENT_CHANNELS, size, size, generator=g),
            "encoder_hidden_states": torch.randn(batch, text_len, T5_WIDTH, generator=g),
            "pooled_projections": torch.randn(batch, 2 * TEXT_HIDDEN, generator=g),
            "timestep": 1000 * torch.rand(batch, generator=g)}


def write_sd3_files(folder, *, seed: int = 0, medium: bool = False, dtype: torch.dtype = torch.bfloat16) -> dict[str, Path]:
    """Write the files a ComfyUI SD3.5 user keeps under ``folder`` (ComfyUI's ``models/`` layout): the MMDiT
    (``dtype``), a checkpoint of it with its VAE (``model.diffusion_model.`` + ``first_stage_model.``), clip_l,
    clip_g and t5xxl (fp16) and the VAE (fp32). Returns name → path."""
    folder = Path(folder)
    variant = "medium" if medium else "large"
    model = tiny_sd3_transformer(seed, medium=medium)
    mmdit = {k: v.to(dtype) for k, v in sd3_to_mmdit(model.state_dict(), model.config).items()}
    ae = tiny_ae_state(seed)
    states = {
        "diffusion_model": mmdit,
        "checkpoint": {**{"model.diffusion_model." + k: v for k, v in mmdit.items()},
                       **{"first_stage_model." + k: v for k, v in ae.items()}},
        "clip_l": {k: v.half() for k, v in tiny_clip_l_state(seed).items()},
        "clip_g": {k: v.half() for k, v in tiny_clip_g_state(seed).items()},
        "t5xxl": {k: v.half() for k, v in tiny_t5_sd3_state(seed).items()},
        "vae": ae,
    }
    return {name: _atomic_save(state, folder / FILE_NAMES[name].format(variant=variant)) for name, state in states.items()}


def write_sd3_diffusers_folder(folder, seed: int = 0, *, medium: bool = False) -> Path:
    """Save a StableDiffusion3Pipeline-layout folder (fp32; no tokenizers) with the weights of
    ``write_sd3_files(seed=seed, medium=medium)``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed, medium=medium), scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=tiny_sd3_vae(seed), text_encoder=tiny_clip_l_projected(seed), tokenizer=None,
        text_encoder_2=tiny_clip_g(seed), tokenizer_2=None, text_encoder_3=tiny_t5_sd3(seed), tokenizer_3=None)
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def tiny_sd3_files(seed: int = 0, *, medium: bool = False) -> dict[str, Path]:
    """``write_sd3_files`` (bf16 MMDiT) cached under ``cache_dir()/tiny_sd3-v1/seed{N}-{large|medium}``."""
    variant = "medium" if medium else "large"
    root = cache_dir() / f"tiny_sd3-{ASSET_VERSION}" / f"seed{seed}-{variant}"
    root = _cached_folder(root, lambda tmp: write_sd3_files(tmp, seed=seed, medium=medium))
    return {name: root / FILE_NAMES[name].format(variant=variant) for name in FILE_NAMES}


def tiny_sd3_diffusers_folder(seed: int = 0, *, medium: bool = False) -> Path:
    """``write_sd3_diffusers_folder`` cached under ``cache_dir()/tiny_sd3-v1/diffusers-seed{N}-{large|medium}``.
    Treat it as read-only."""
    variant = "medium" if medium else "large"
    root = cache_dir() / f"tiny_sd3-{ASSET_VERSION}" / f"diffusers-seed{seed}-{variant}"
    return _cached_folder(root, lambda tmp: write_sd3_diffusers_folder(tmp, seed, medium=medium))


if __name__ == "__main__":  # python -m tests.tiny_sd3 → build (or find) the cached assets
    print(*tiny_sd3_files().values(), tiny_sd3_diffusers_folder(), sep="\n")
