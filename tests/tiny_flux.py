"""Tiny, seeded Flux.1 fixtures in the file layouts ComfyUI users keep (and as a diffusers folder).

- ``tiny_flux_transformer(seed=0, *, guidance=True)`` → diffusers ``FluxTransformer2DModel``: 1 double + 1
  single block, 2 heads of width 32 (inner 64), RoPE axes (4, 14, 14), 16 latent channels packed 2×2 into
  64-wide tokens, T5 width 32, pooled CLIP width 32, ``guidance_embeds`` (dev) or not (schnell).
  Forward: ``tiny_flux_inputs()`` → tokens (B, 16, 64) for 8×8 latents, T5 states (B, 6, 32), pooled (B, 32).
- ``flux_to_bfl(sd, config)`` → BFL / ComfyUI ``models/diffusion_models/flux1-dev.safetensors`` keys (``img_in``,
  ``double_blocks.N.img_attn.qkv`` …); ``bfl_to_diffusers(sd)`` runs diffusers' own converter back.
- ``tiny_clip_l(seed)`` (``tests/tiny.py`` CLIP: hidden 32, 2 layers, tiny vocab) and ``tiny_t5(seed)``
  (T5 v1.1 encoder: d_model 32, d_kv 8, 2 heads, 2 layers, d_ff 64, gated-gelu, vocab 32128);
  ``tiny_clip_l_state`` / ``tiny_t5_state`` give their ``clip_l.safetensors`` / ``t5xxl_fp16.safetensors`` keys.
- ``tiny_flux_vae(seed)`` → ``AutoencoderKL``: (B, 3, 64, 64) ↔ (B, 16, 8, 8), no quant convs (like Flux's
  ``ae``); ``tiny_ae_state(seed)`` gives its ``ae.safetensors`` keys (LDM names, 1×1-conv attention).
- ``write_flux_files(folder, …)`` / ``tiny_flux_files(seed, guidance=)`` (cached): ComfyUI ``models/``-style
  files; ``write_flux_diffusers_folder(folder, …)`` / ``tiny_flux_diffusers_folder(seed)``: FluxPipeline layout.

Facts checked while writing this (diffusers 0.42.1, transformers 5.25, ComfyUI 0.3.64):

- RoPE axes must be even (``diffusers/models/embeddings.py`` line 921: ``assert dim % 2 == 0``), so head width
  16 with axes (2, 7, 7) fails; head width 32 keeps the real (16, 56, 56) / 128 ratio exactly: (4, 14, 14).
- diffusers' ``convert_flux_transformer_checkpoint_to_diffusers`` (``loaders/single_file_utils.py`` line 2305)
  hard-codes ``inner_dim = 3072`` to split ``single_blocks.N.linear1``, so neither it nor ``from_single_file``
  converts a narrower file. ``bfl_to_diffusers`` runs that function's own source with only that constant
  replaced by the width of ``img_in.weight``.
- ComfyUI detects Flux by key names (``comfy/model_detection.py`` line 177) and reads ``in_channels`` (from
  ``img_in.weight``, patch 2), ``vec_in_dim``, depth and single depth from the weights, but hard-codes
  ``context_in_dim = 4096``, ``hidden_size = 3072``, ``num_heads = 24`` (lines 190-193) and ``axes_dim``
  (line 196), so it detects the tiny file as ``flux`` (depth 1, single depth 1; ``Flux`` / ``FluxSchnell``)
  yet cannot build it through UNETLoader. Its ``comfy.ldm.flux.model.Flux`` built at the tiny sizes loads the
  file strictly and matches diffusers' output (< 1e-6). Likewise ``comfy/sd.py`` ``VAE`` hard-codes ``ch``
  128 and 2 res blocks (line 368); its LDM ``Encoder``/``Decoder`` at the tiny sizes load ``ae`` strictly.
- T5: ``encoder.embed_tokens.weight`` is left out of the T5 file. It is a tied alias of ``shared.weight``
  (transformers ``T5EncoderModel._tied_weights_keys``; ``save_pretrained`` drops it, and FLUX.1-dev's diffusers
  ``text_encoder_2`` lacks it too), and ComfyUI's ``comfy/text_encoders/t5.py`` ``T5`` has only ``shared``
  (line 234) beside ``encoder.block.*`` / ``encoder.final_layer_norm``: 219 tensors at t5xxl's 24 blocks.
- CLIP-L: transformers ``CLIPTextModel`` names under ``text_model.``, no ``text_projection`` (projection-free),
  no ``position_ids``. ComfyUI's CLIP-L config is fixed (width 768), so only names are shared with real files.

Every weight is seeded; norm scales (all ones at init) get 1 + N(0, 0.1²) and constant biases N(0, 0.1²) so a
swapped name (query/key norm, norm1/norm2) cannot hide in a round trip. Files are byte-identical for a seed
(and torch version), written atomically, cached outside git under ``tests/tiny_checkpoint.py: cache_dir()``;
building everything takes about a second.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .tiny import TEXT_HIDDEN, tiny_text_encoder
from .tiny_checkpoint import cache_dir
from .tiny_ldm import clip_to_ldm, vae_to_ldm

__all__ = [
    "LATENT_CHANNELS", "HEAD_DIM", "HEADS", "INNER_DIM", "AXES_DIMS_ROPE", "T5_WIDTH", "T5_VOCAB",
    "VAE_SCALING_FACTOR", "VAE_SHIFT_FACTOR", "FLUX_SCHEDULER", "ASSET_VERSION",
    "tiny_flux_transformer", "flux_to_bfl", "bfl_to_diffusers", "diffusers_flux_converter",
    "tiny_clip_l", "tiny_clip_l_state", "tiny_t5", "tiny_t5_state", "tiny_flux_vae", "tiny_ae_state",
    "pack_latents", "unpack_latents", "latent_image_ids", "tiny_flux_inputs",
    "write_flux_files", "write_flux_diffusers_folder", "tiny_flux_files", "tiny_flux_diffusers_folder",
]

#: Bump when weights, names or layout change (it names the cache folder).
ASSET_VERSION = "v1"
LATENT_CHANNELS = 16
HEAD_DIM, HEADS = 32, 2
INNER_DIM = HEAD_DIM * HEADS
AXES_DIMS_ROPE = (4, 14, 14)  # (16, 56, 56) × 32/128
T5_WIDTH, T5_VOCAB = 32, 32128
VAE_SCALING_FACTOR, VAE_SHIFT_FACTOR = 0.3611, 0.1159
#: FLUX.1-dev's scheduler_config.json (schnell: shift 1.0, no dynamic shifting).
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
FILE_NAMES = {"diffusion_model": "diffusion_models/flux1-{variant}-tiny.safetensors",
              "clip_l": "text_encoders/clip_l.safetensors", "t5xxl": "text_encoders/t5xxl_fp16.safetensors",
              "vae": "vae/ae.safetensors"}


def _vary_constants(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every constant parameter (norm scales of ones, zero biases) seeded N(0, 0.1²) offsets."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.numel() > 1 and bool((param == param.reshape(-1)[0]).all()):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


# ----------------------------------------------------------------------------------- transformer


def tiny_flux_transformer(seed: int = 0, *, guidance: bool = True):
    """A seeded tiny ``FluxTransformer2DModel`` (fp32, eval): dev with ``guidance=True``, schnell without.

    ``model(hidden_states (B, L, 64), encoder_hidden_states (B, S, 32), pooled_projections (B, 32),
    timestep (B,) in [0, 1], img_ids (L, 3), txt_ids (S, 3), guidance (B,) | None)`` → (B, L, 64).
    """
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1,
            attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=T5_WIDTH,
            pooled_projection_dim=TEXT_HIDDEN, guidance_embeds=guidance, axes_dims_rope=AXES_DIMS_ROPE,
        )
    return _vary_constants(model, seed).eval()


_GLOBAL_LINEARS = [("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                   ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                   ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                   ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                   ("context_embedder", "txt_in"), ("x_embedder", "img_in"), ("proj_out", "final_layer.linear")]
_GUIDANCE_LINEARS = [("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                     ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")]
_DOUBLE_LINEARS = [("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
                   ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
                   ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"),
                   ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj")]
_DOUBLE_NORMS = [("attn.norm_q", "img_attn.norm.query_norm"), ("attn.norm_k", "img_attn.norm.key_norm"),
                 ("attn.norm_added_q", "txt_attn.norm.query_norm"), ("attn.norm_added_k", "txt_attn.norm.key_norm")]
_DOUBLE_QKV = [(("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn.qkv"),
               (("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn.qkv")]


def flux_to_bfl(state_dict_diffusers: dict, config) -> dict[str, torch.Tensor]:
    """diffusers ``FluxTransformer2DModel`` state dict → BFL key names (no prefix), exactly the inverse of
    diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``: q/k/v fused into ``qkv``, q/k/v/mlp into
    ``single_blocks.N.linear1``, RMSNorm ``weight`` → ``.scale``, and the final adaLN halves swapped (BFL
    shift, scale; diffusers scale, shift). Raises ``KeyError`` if a tensor would be left behind.
    """
    sd = dict(state_dict_diffusers)
    out: dict[str, torch.Tensor] = {}

    def linear(src: str, dst: str) -> None:
        for param in ("weight", "bias"):
            out[f"{dst}.{param}"] = sd.pop(f"{src}.{param}")

    def fused(srcs, dst: str) -> None:
        for param in ("weight", "bias"):
            out[f"{dst}.{param}"] = torch.cat([sd.pop(f"{src}.{param}") for src in srcs], 0)

    for src, dst in _GLOBAL_LINEARS + (_GUIDANCE_LINEARS if config["guidance_embeds"] else []):
        linear(src, dst)
    for i in range(config["num_layers"]):
        a, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for src, dst in _DOUBLE_LINEARS:
            linear(a + src, b + dst)
        for src, dst in _DOUBLE_NORMS:
            out[f"{b}{dst}.scale"] = sd.pop(f"{a}{src}.weight")
        for srcs, dst in _DOUBLE_QKV:
            fused([a + s for s in srcs], b + dst)
    for i in range(config["num_single_layers"]):
        a, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        linear(a + "norm.linear", b + "modulation.lin")
        fused([a + s for s in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")], b + "linear1")
        linear(a + "proj_out", b + "linear2")
        out[f"{b}norm.query_norm.scale"] = sd.pop(f"{a}attn.norm_q.weight")
        out[f"{b}norm.key_norm.scale"] = sd.pop(f"{a}attn.norm_k.weight")
    for param in ("weight", "bias"):
        scale, shift = sd.pop(f"norm_out.linear.{param}").chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{param}"] = torch.cat([shift, scale], 0)
    if sd:
        raise KeyError(f"flux_to_bfl: no BFL name for {sorted(sd)}")
    return out


@functools.lru_cache(maxsize=None)
def diffusers_flux_converter(inner_dim: int = 3072):
    """diffusers' ``convert_flux_transformer_checkpoint_to_diffusers``, recompiled from its own source with the
    hard-coded ``inner_dim = 3072`` replaced by ``inner_dim`` (the unchanged function for 3072)."""
    import inspect
    import textwrap

    from diffusers.loaders import single_file_utils as sfu

    fn = sfu.convert_flux_transformer_checkpoint_to_diffusers
    if inner_dim == 3072:
        return fn
    source = textwrap.dedent(inspect.getsource(fn))
    if source.count("inner_dim = 3072") != 1:
        raise RuntimeError("diffusers' Flux converter no longer hard-codes `inner_dim = 3072`; revisit this helper")
    namespace = dict(vars(sfu))
    exec(compile(source.replace("inner_dim = 3072", f"inner_dim = {int(inner_dim)}"), sfu.__file__, "exec"),
         namespace)
    return namespace[fn.__name__]


def bfl_to_diffusers(state_dict_bfl: dict) -> dict[str, torch.Tensor]:
    """BFL-layout Flux weights (optionally ``model.diffusion_model.``-prefixed) → diffusers names, through
    ``diffusers_flux_converter`` at the width of ``img_in.weight``. Raises ``KeyError`` on unconverted keys."""
    sd = dict(state_dict_bfl)
    img_in = next(v for k, v in sd.items() if k.endswith("img_in.weight"))
    out = diffusers_flux_converter(int(img_in.shape[0]))(sd)
    if sd:  # the converter pops what it converts
        raise KeyError(f"bfl_to_diffusers: diffusers' converter ignored {sorted(sd)}")
    return out


# ----------------------------------------------------------------------------------- text encoders and VAE


def tiny_clip_l(seed: int = 0):
    """``tests/tiny.py: tiny_text_encoder(seed)`` (``CLIPTextModel``, hidden 32, 2 layers, quick_gelu, tiny
    vocab; pooled output (B, 32) is Flux's ``pooled_projections``) with its constant norms varied."""
    with torch.random.fork_rng(devices=[]):
        model = tiny_text_encoder(seed)
    return _vary_constants(model, seed).eval()


def tiny_clip_l_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``tiny_clip_l(seed)`` weights as ``models/text_encoders/clip_l.safetensors`` names them (``text_model.*``)."""
    return clip_to_ldm(tiny_clip_l(seed).state_dict())


def tiny_t5(seed: int = 0):
    """A seeded tiny T5 v1.1 encoder (``T5EncoderModel``; d_model 32, d_kv 8, 2 heads, 2 layers, d_ff 64,
    gated-gelu, 32 relative-position buckets, vocab 32128 so real T5 tokenizer ids fit): ids (B, S) → (B, S, 32)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=T5_VOCAB, d_model=T5_WIDTH, d_kv=8, num_heads=2, num_layers=2, d_ff=64,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, dropout_rate=0.0, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return _vary_constants(model, seed).eval()


def tiny_t5_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``tiny_t5(seed)`` weights as ``t5xxl_fp16.safetensors`` names them: ``shared.weight``,
    ``encoder.block.N.layer.*``, ``encoder.final_layer_norm.weight`` (no tied ``encoder.embed_tokens``)."""
    sd = tiny_t5(seed).state_dict()
    return {k: v for k, v in sd.items() if k != "encoder.embed_tokens.weight"}


def tiny_flux_vae(seed: int = 0):
    """A seeded tiny 16-channel ``AutoencoderKL`` like Flux's ``ae`` (×8, no quant/post-quant conv, scaling
    0.3611, shift 0.1159): (B, 3, 64, 64) in [-1, 1] ↔ (B, 16, 8, 8)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
            latent_channels=LATENT_CHANNELS, norm_num_groups=32, sample_size=64, scaling_factor=VAE_SCALING_FACTOR,
            shift_factor=VAE_SHIFT_FACTOR, use_quant_conv=False, use_post_quant_conv=False,
        )
    return _vary_constants(vae, seed).eval()


def tiny_ae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``tiny_flux_vae(seed)`` weights as ``models/vae/ae.safetensors`` names them (LDM, no prefix)."""
    vae = tiny_flux_vae(seed)
    return vae_to_ldm(vae.state_dict(), vae.config)


# ----------------------------------------------------------------------------------- inputs


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H/2 · W/2, 4C) tokens, as ``FluxPipeline._pack_latents`` (and ComfyUI) pack them."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h // 2 * (w // 2), 4 * c)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of ``pack_latents`` for latents of size ``h`` × ``w``."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def latent_image_ids(h: int, w: int) -> torch.Tensor:
    """(h/2 · w/2, 3) position ids (0, row, col) of the packed tokens, as FluxPipeline builds them."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def tiny_flux_inputs(seed: int = 0, *, batch: int = 1, size: int = 8, text_len: int = 6,
                     guidance: bool = True) -> dict[str, torch.Tensor]:
    """Seeded keyword arguments for ``tiny_flux_transformer``'s forward: (B, 16, size, size) latents packed to
    tokens, T5 states (B, text_len, 32), pooled CLIP (B, 32), timestep in [0, 1), guidance 3.5 (dev only)."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, LATENT_CHANNELS, size, size, generator=g)
    return {
        "hidden_states": pack_latents(latents),
        "encoder_hidden_states": torch.randn(batch, text_len, T5_WIDTH, generator=g),
        "pooled_projections": torch.randn(batch, TEXT_HIDDEN, generator=g),
        "timestep": torch.rand(batch, generator=g),
        "img_ids": latent_image_ids(size, size),
        "txt_ids": torch.zeros(text_len, 3),
        "guidance": torch.full((batch,), 3.5) if guidance else None,
    }


# ----------------------------------------------------------------------------------- files


def _atomic_save(state: dict, path: Path) -> Path:
    """Write ``state`` as safetensors via a temp file + ``os.replace``. One metadata entry, like the real files:
    safetensors stores metadata in a hash map, so two entries would make the bytes vary from run to run."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_flux_files(folder, *, seed: int = 0, guidance: bool = True, dtype: torch.dtype = torch.bfloat16,
                     prefix: str = "") -> dict[str, Path]:
    """Write the four files a ComfyUI Flux user keeps, under ``folder`` as in ComfyUI's ``models/``:

    ``diffusion_model`` → ``diffusion_models/flux1-{dev|schnell}-tiny.safetensors`` (BFL names, ``dtype``, keys
    prefixed with ``prefix``, e.g. ``"model.diffusion_model."``), ``clip_l`` → ``text_encoders/clip_l.safetensors``
    (fp16), ``t5xxl`` → ``text_encoders/t5xxl_fp16.safetensors`` (fp16), ``vae`` → ``vae/ae.safetensors`` (fp32,
    as BFL ships it). Returns name → path. Each tensor is the fp32 model weight cast to the file's dtype.
    """
    folder = Path(folder)
    variant = "dev" if guidance else "schnell"
    model = tiny_flux_transformer(seed, guidance=guidance)
    bfl = flux_to_bfl(model.state_dict(), model.config)
    states = {
        "diffusion_model": {prefix + k: v.to(dtype) for k, v in bfl.items()},
        "clip_l": {k: v.half() for k, v in tiny_clip_l_state(seed).items()},
        "t5xxl": {k: v.half() for k, v in tiny_t5_state(seed).items()},
        "vae": tiny_ae_state(seed),
    }
    return {name: _atomic_save(state, folder / FILE_NAMES[name].format(variant=variant))
            for name, state in states.items()}


def write_flux_diffusers_folder(folder, seed: int = 0, *, guidance: bool = True) -> Path:
    """Save a FluxPipeline-layout folder (fp32 safetensors; no tokenizers) with the weights of
    ``write_flux_files(seed=seed, guidance=guidance)``: transformer/, vae/, text_encoder/ (CLIP),
    text_encoder_2/ (T5), scheduler/ (``FLUX_SCHEDULER``; schnell: shift 1.0, static), model_index.json."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    scheduler = dict(FLUX_SCHEDULER) if guidance else {**FLUX_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**scheduler), vae=tiny_flux_vae(seed),
        text_encoder=tiny_clip_l(seed), tokenizer=None, text_encoder_2=tiny_t5(seed), tokenizer_2=None,
        transformer=tiny_flux_transformer(seed, guidance=guidance),
    )
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _cached_folder(target: Path, build) -> Path:
    """Build into a sibling temp folder, then rename it to ``target`` (first writer wins)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_flux_files(seed: int = 0, *, guidance: bool = True) -> dict[str, Path]:
    """``write_flux_files`` (bf16, no prefix) cached under ``cache_dir()/tiny_flux-v1/seed{N}-{dev|schnell}``."""
    variant = "dev" if guidance else "schnell"
    root = cache_dir() / f"tiny_flux-{ASSET_VERSION}" / f"seed{seed}-{variant}"
    root = _cached_folder(root, lambda tmp: write_flux_files(tmp, seed=seed, guidance=guidance))
    return {name: root / FILE_NAMES[name].format(variant=variant) for name in FILE_NAMES}


def tiny_flux_diffusers_folder(seed: int = 0, *, guidance: bool = True) -> Path:
    """``write_flux_diffusers_folder`` cached under ``cache_dir()/tiny_flux-v1/diffusers-seed{N}-{dev|schnell}``.
    Treat it as read-only."""
    variant = "dev" if guidance else "schnell"
    root = cache_dir() / f"tiny_flux-{ASSET_VERSION}" / f"diffusers-seed{seed}-{variant}"
    return _cached_folder(root, lambda tmp: write_flux_diffusers_folder(tmp, seed, guidance=guidance))


if __name__ == "__main__":  # python -m tests.tiny_flux → build (or find) the cached assets
    print(*tiny_flux_files().values(), tiny_flux_diffusers_folder(), sep="\n")
