"""Tiny, seeded, real diffusers/transformers components for tests (built in well under a second each).

Everything follows the Stable Diffusion conventions the single-file loader infers from weights
(GroupNorm with 32 groups, SD1.5 UNet ``attention_head_dim=8`` heads, SDXL heads of width 64), so a
tiny model saved as a ComfyUI-style checkpoint loads back through ``trainers.models.load_base``.

- ``tiny_unet(seed=0, kind="sd15")`` → ``UNet2DConditionModel``: 2 levels (32, 64 channels), one res
  block per level, cross attention (to_q/to_k/to_v/to_out.0) in one level + the middle block,
  context width 32 (SD1.5) or 64 (SDXL: both encoders concatenated, ``text_time`` embedding).
  Latents (B, 4, 8, 8).
- ``tiny_vae(seed=0)`` → ``AutoencoderKL`` with 4 levels (×8 downsampling), 4 latent channels:
  (B, 3, 64, 64) pixels ↔ (B, 4, 8, 8) latents.
- ``tiny_text_encoder(seed=0, vocab_size=..., projection=False)`` → ``CLIPTextModel`` (hidden 32,
  2 layers, 77 positions) or ``CLIPTextModelWithProjection``.
- ``tiny_tokenizer(dir)`` → a real ``CLIPTokenizer`` from a tiny vocab.json/merges.txt written to
  ``dir`` (byte symbols + merges spelling a few prompt words; BOS/EOS are the last two ids).
- ``make_tiny_diffusers_folder(dir, kind="sd15"|"sdxl") -> Path``: a full diffusers pipeline folder
  (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, and the ``_2`` parts for
  SDXL) saved as safetensors. ``tiny_diffusers_folder(kind)`` caches one per test process.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch

from vitruvian.core.tokenizer_files import clip_vocab, write_clip_tokenizer_files

__all__ = [
    "TINY_WORDS",
    "tiny_merges",
    "tiny_vocab_size",
    "tiny_unet",
    "tiny_vae",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_scheduler",
    "make_tiny_diffusers_folder",
    "tiny_diffusers_folder",
]

#: Words the tiny tokenizer spells as one token each (anything else falls back to byte tokens).
TINY_WORDS = ("a", "photo", "of", "person", "man", "woman", "hand", "hands", "face", "portrait", "smiling")
TEXT_HIDDEN = 32
TIME_EMBED = 8  # SDXL addition_time_embed_dim


def tiny_merges() -> list[tuple[str, str]]:
    """BPE merges that build each of ``TINY_WORDS`` left to right (``"ph" + "o"`` → ``"pho"`` …)."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in seen:
                seen.add((left, right))
                merges.append((left, right))
            left = left + right
    return merges


def tiny_vocab_size() -> int:
    """Number of tokens of the tiny tokenizer (ids 0..n-1; BOS = n-2, EOS = n-1)."""
    return len(clip_vocab(tiny_merges()))


def tiny_unet(seed: int = 0, kind: str = "sd15"):
    """A seeded tiny ``UNet2DConditionModel`` (SD1.5- or SDXL-style), fp32, eval mode.

    Forward: ``unet(latents (B, 4, 8, 8), t (B,), encoder_hidden_states (B, 77, C))`` with C = 32
    (sd15) or 64 (sdxl, plus ``added_cond_kwargs={"text_embeds": (B, 32), "time_ids": (B, 6)}``).
    """
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=32,
    )
    torch.manual_seed(seed)
    if kind == "sd15":
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            attention_head_dim=8,
        )
    elif kind == "sdxl":
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * TEXT_HIDDEN,
            attention_head_dim=(1, 1),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED,
            projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_HIDDEN,
        )
    else:
        raise ValueError(f"tiny_unet: kind must be 'sd15' or 'sdxl', got {kind!r}")
    return unet.eval()


def tiny_vae(seed: int = 0, *, scaling_factor: float = 0.18215):
    """A seeded tiny ``AutoencoderKL``: (B, 3, 64, 64) in [-1, 1] ↔ (B, 4, 8, 8) latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=scaling_factor,
    )
    return vae.eval()


def tiny_text_encoder(seed: int = 0, *, projection: bool = False, vocab_size: int | None = None):
    """A seeded tiny CLIP text encoder: hidden 32, 2 layers, 1 head, 77 positions.

    ``projection=True`` gives ``CLIPTextModelWithProjection`` (SDXL's second encoder: gelu, 32-d pooled).
    Token ids must be below ``vocab_size`` (default: the tiny tokenizer's size, EOS = last id).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    n = vocab_size or tiny_vocab_size()
    config = CLIPTextConfig(
        vocab_size=n,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu" if projection else "quick_gelu",  # CLIP-L: quick_gelu, OpenCLIP bigG: gelu
        bos_token_id=n - 2,
        eos_token_id=n - 1,
        pad_token_id=n - 1,
    )
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    return model.eval()


def tiny_tokenizer(dir, *, pad_token: str | None = None):
    """Write a tiny CLIP vocabulary into ``dir`` and load it as a real ``CLIPTokenizer``.

    ``pad_token="!"`` mimics SDXL's second tokenizer (pads with id 0 instead of EOS).
    """
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(dir, tiny_merges())
    kwargs = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer.from_pretrained(str(folder), **kwargs)


def tiny_scheduler():
    """SD's DDPM noise schedule (1000 steps, scaled-linear betas 0.00085 → 0.012, epsilon)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,
    )


def make_tiny_diffusers_folder(dir, kind: str = "sd15", seed: int = 0) -> Path:
    """Save a complete tiny diffusers pipeline (safetensors) into ``dir`` and return its path.

    ``kind="sd15"`` → ``StableDiffusionPipeline`` layout; ``kind="sdxl"`` →
    ``StableDiffusionXLPipeline`` layout (two text encoders and tokenizers, ``text_time`` UNet).
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tok_tmp = Path(tempfile.mkdtemp(prefix="tiny-tok-"))
    try:
        if kind == "sd15":
            pipe = StableDiffusionPipeline(
                vae=tiny_vae(seed),
                text_encoder=tiny_text_encoder(seed),
                tokenizer=tiny_tokenizer(tok_tmp / "t1"),
                unet=tiny_unet(seed, "sd15"),
                scheduler=tiny_scheduler(),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        elif kind == "sdxl":
            pipe = StableDiffusionXLPipeline(
                vae=tiny_vae(seed, scaling_factor=0.13025),
                text_encoder=tiny_text_encoder(seed),
                text_encoder_2=tiny_text_encoder(seed + 1, projection=True),
                tokenizer=tiny_tokenizer(tok_tmp / "t1"),
                tokenizer_2=tiny_tokenizer(tok_tmp / "t2", pad_token="!"),
                unet=tiny_unet(seed, "sdxl"),
                scheduler=tiny_scheduler(),
            )
        else:
            raise ValueError(f"make_tiny_diffusers_folder: kind must be 'sd15' or 'sdxl', got {kind!r}")
        pipe.save_pretrained(str(dir), safe_serialization=True)
    finally:
        shutil.rmtree(tok_tmp, ignore_errors=True)
    return dir


_CACHE: dict[str, Path] = {}


def tiny_diffusers_folder(kind: str = "sd15") -> Path:
    """``make_tiny_diffusers_folder`` built once per test process (a temp dir removed at exit).

    Treat the folder as read-only; copy it if a test needs to modify it.
    """
    if kind not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix=f"vitruvian-tiny-{kind}-"))
        atexit.register(shutil.rmtree, root, True)
        _CACHE[kind] = make_tiny_diffusers_folder(root / kind, kind)
    return _CACHE[kind]
