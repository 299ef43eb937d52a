"""The Chroma family (Chroma1-HD, Chroma1-Base, the v4x releases: "chroma").

Flux.1-schnell's architecture (8.9 B parameters) with the per-block modulation replaced by one "distilled
guidance" approximator that maps σ to every block's shift / scale / gate, conditioned on T5-XXL hidden states
alone (no CLIP, no pooled vector, no guidance input): ``ChromaTransformer2DModel`` over 2×2-packed 16-channel
latents of Flux's ae, rectified flow (``flow.FlowMatchProcess`` through ``flux.pack`` / ``unpack`` /
``image_ids``; the transformer takes σ ∈ (0, 1) and scales it by 1000 itself). Files as ComfyUI users keep
them (``chroma_files``).

Text conditioning, as ``ChromaPipeline._get_t5_prompt_embeds`` builds it: T5 runs on ``t5_tokens`` (512)
padded tokens *with* the tokenizer's attention mask, and the transformer attends to the prompt, its ``</s>``
and the first padding token only (Chroma's training recipe masks every other padding token). The mask is
passed as bool: diffusers 0.42's pipeline casts it to the text encoder's float dtype, which
``scaled_dot_product_attention`` adds to the scores (+1 / +0) instead of masking (diffusers issue #12116), so
padding leaks into its samples; with bool, the image tokens get what an unpadded prompt gives (checked in
``tests/trainers/test_chroma_train.py``). With ``gradient_checkpointing`` diffusers 0.42's Chroma drops the
mask in the single blocks (``ChromaTransformer2DModel.forward`` does not pass it through the checkpointed call),
so a run asking for it (or ``low_memory``) is refused before training rather than trained on leaked padding.

LoRA files use diffusers names under ``transformer.`` with ``.alpha`` (``core.lora_io`` ``key_style=
"diffusers"``), as for Flux.1: ComfyUI's ``model_base.Chroma`` subclasses ``Flux``, so ``comfy/lora.py`` maps
``transformer.<module>`` through ``comfy.utils.flux_to_diffusers`` (the attention of both streams, and the single
blocks' q / k / v as slices of ``linear1``), which Chroma's diffusers module names share; diffusers'
``ChromaPipeline`` (``FluxLoraLoaderMixin``) reads the same file. The σ schedule: logit-normal with Flux's
resolution shift (``flow_shift = "auto"``; a folder's ``scheduler_config.json`` when it has one).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ConfigError
from .base import BaseModel
from .chroma_files import chroma_kind, load_folder, load_transformer
from .component_files import folder_schedule, load_text_encoders, load_vae, transformer_config
from .flow import FlowMatchProcess
from .flux import Flux, SCHEDULES, image_ids, pack, unpack

__all__ = ["Chroma", "T5_TOKENS"]

#: ChromaPipeline's max_sequence_length
T5_TOKENS = 512


def _call(model: torch.nn.Module, x_t: torch.Tensor, timestep: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
    """Chroma's velocity for (B, 16, h, w) latents at σ = ``timestep`` (B,) under ``cond``
    (``encoder_hidden_states`` (B, L, D_t5), ``attention_mask`` (B, L) bool): the text mask is extended with
    the h/2 · w/2 image tokens, always attended."""
    B, _, h, w = x_t.shape
    text = cond["encoder_hidden_states"]
    dtype = text.dtype
    image = torch.ones(B, (h // 2) * (w // 2), dtype=torch.bool, device=x_t.device)
    mask = torch.cat([cond["attention_mask"].to(x_t.device, torch.bool), image], dim=1)
    out = model(hidden_states=pack(x_t).to(dtype), timestep=timestep.to(dtype), encoder_hidden_states=text,
                txt_ids=torch.zeros(text.shape[1], 3, device=x_t.device, dtype=dtype),
                img_ids=image_ids(h, w, x_t.device, dtype), attention_mask=mask, return_dict=False)[0]
    return unpack(out, h, w)


class Chroma(Flux):
    """Chroma; see the module docstring. Latents, the VAE, LoRA targets and files are Flux.1's."""

    name = "chroma"
    kinds = ("chroma",)

    def folder_kind(self, folder: Path) -> str | None:
        """"chroma" for a diffusers ``ChromaPipeline`` folder, else None."""
        return "chroma" if transformer_config(folder, "ChromaTransformer2DModel") is not None else None

    def shapes_kind(self, shapes: Mapping[str, tuple], *, source: str = "checkpoint") -> str | None:
        """"chroma" for a Chroma BFL-layout diffusion-model file, else None (``chroma_files.chroma_kind``)."""
        return chroma_kind(shapes)

    def load(self, source: Path, kind: str, *, tokenizer: str = "", dtype: torch.dtype = torch.float32,
             shapes: Mapping | None = None, text_encoders: Sequence[str] = (), vae: str = "") -> BaseModel:
        """The base from a ChromaPipeline folder (``shapes`` None) or a diffusion-model file plus
        ``text_encoders`` (the t5xxl file) and ``vae`` (ae). ``tokenizer``: a T5 tokenizer folder; "" uses the
        folder's ``tokenizer/`` or the shipped one."""
        from ..t5_tokenizer import load_t5_tokenizer

        if shapes is None:
            transformer, ae, t5 = load_folder(source, dtype)
            schedule = folder_schedule(source, SCHEDULES["flux-dev"])
            folder = str(source) if (source / "tokenizer").is_dir() else ""
        else:
            if not text_encoders or not vae:
                raise ConfigError(
                    f"load_base: base {str(source)!r} is a Chroma diffusion model alone, so it needs "
                    f"text_encoders=<t5xxl file> (ComfyUI: models/text_encoders/, e.g. t5xxl_fp16.safetensors; "
                    f"Chroma uses no CLIP) and vae=<Flux's ae file> (models/vae/ae.safetensors), got "
                    f"text_encoders={list(text_encoders)!r} and vae={vae!r}")
            transformer = load_transformer(source, shapes, dtype)
            t5 = load_text_encoders(text_encoders, dtype, need=("t5",))["t5"]
            ae = load_vae(vae, dtype, factors=self.vae_factors)
            schedule = dict(SCHEDULES["flux-dev"])  # ChromaPipeline shifts by resolution (Flux-dev's rule)
            folder = ""
        t5_tok = load_t5_tokenizer(tokenizer or folder)
        return BaseModel(kind=kind, family=self, unet=transformer, vae=ae, text_encoders=(t5,), tokenizers=(t5_tok,),
                         scheduler=schedule, vae_scale=float(ae.config.scaling_factor), source=str(source),
                         configs={"transformer": dict(transformer.config), "t5_tokens": T5_TOKENS})

    def encode_prompt(self, base: BaseModel, prompts: Sequence[str], **_options) -> dict:
        """``{"encoder_hidden_states": (B, L, D_t5), "attention_mask": (B, L) bool}`` (L = ``t5_tokens``; the
        mask keeps the prompt, ``</s>`` and one padding token, as ChromaPipeline's)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"encode_prompt: prompts must be a sequence of str, got {type(prompts).__name__}")
        (t5,), (tok,) = base.text_encoders, base.tokenizers
        device = next(t5.parameters()).device
        n = int(base.configs.get("t5_tokens", T5_TOKENS))
        batch = tok(list(prompts), padding="max_length", max_length=n, truncation=True, return_tensors="pt")
        tokens = batch.attention_mask.to(device)
        hidden = t5(batch.input_ids.to(device), attention_mask=tokens).last_hidden_state
        keep = torch.arange(n, device=device)[None, :] <= tokens.sum(dim=1, keepdim=True)
        return {"encoder_hidden_states": hidden, "attention_mask": keep}

    def process(self, scheduler: Any, config: Any = None) -> FlowMatchProcess:
        """Flux.1's σ schedule (``Flux.process``: the "auto" shift from the resolution, ``flow_shift``,
        ``flow_logit_mean``/``_std``) calling Chroma's transformer, which has no guidance input. ConfigError for
        ``gradient_checkpointing`` / ``low_memory`` (see the module docstring)."""
        if config is not None and (getattr(config, "gradient_checkpointing", False) or getattr(config, "low_memory", False)):
            raise ConfigError("train: a Chroma base must train without gradient_checkpointing and low_memory, got "
                              f"gradient_checkpointing={config.gradient_checkpointing}, low_memory={config.low_memory}: "
                              "diffusers' Chroma drops the text mask in its checkpointed single blocks; fix: --set "
                              "gradient_checkpointing=false --set low_memory=false (--set base_storage=fp8 still saves "
                              "memory)")
        process = super().process({k: v for k, v in dict(scheduler or {}).items() if k != "guidance"}, config)
        process.call = _call
        return process

    def pipelines(self, base: BaseModel) -> tuple:
        """(ChromaPipeline, ChromaImg2ImgPipeline) on ``base``'s modules with its flow-matching Euler sampler
        (their ``guidance_scale`` is real classifier-free guidance against an empty negative prompt)."""
        from diffusers import ChromaImg2ImgPipeline, ChromaPipeline, FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(base.scheduler)
        parts = dict(scheduler=scheduler, vae=base.vae, text_encoder=base.text_encoders[0],
                     tokenizer=base.tokenizers[0], transformer=base.unet)
        return ChromaPipeline(**parts), ChromaImg2ImgPipeline(**parts)
