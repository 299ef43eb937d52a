"""Base models for training: load SD1.5/SDXL offline, encode prompts, and the LoRA helpers.

``load_base(path)`` accepts

- a diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/`` …), SD1.5- or
  SDXL-style (told apart by the UNet's ``addition_embed_type``), or
- a single-file ``.safetensors`` checkpoint as ComfyUI users hold it (LDM keys). The family is
  detected from the keys and the diffusers configs are the shipped ones in ``model_configs/``,
  sized from the weights (``model_detect.py``), so nothing is fetched from a model hub.

Tokenizers are found by ``tokenizer_search.load_tokenizers``. All base weights are frozen
(``requires_grad=False``) and in eval mode; add trainable LoRA layers with ``add_lora``.
``encode_prompt`` gives the UNet's text conditioning, ``encode_images`` / ``decode_latents`` convert
between pixels and UNet-space latents for either VAE kind (SD ``AutoencoderKL`` or a TAESD).

The LoRA helpers (``add_lora``, ``adapters_disabled``, ``merge_lora``, ``apply_lora_state``) live in
``lora_layers.py``; saving/loading LoRA files in ``core/lora_io.py``. Both are re-exported here.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, ModelNotFoundError
from ..core.lora_io import LoraState, load_lora_state, save_lora
from .lora_layers import adapters_disabled, add_lora, apply_lora_state, merge_lora, unwrap_model
from .model_detect import UNET_PREFIX, VAE_PREFIX, detect_family, read_shapes, write_config_folder
from .tokenizer_search import load_tokenizers

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

_LDM_PREFIXES = (UNET_PREFIX, VAE_PREFIX, "cond_stage_model.", "conditioner.embedders.")


@dataclass
class BaseModel:
    """A loaded base: frozen fp32 (or ``dtype``) diffusers/transformers modules.

    Attributes
    ----------
    kind : str
        ``"sd15"`` or ``"sdxl"``.
    unet : UNet2DConditionModel
        ``unet(x_t (B, 4, h, w), t (B,), encoder_hidden_states (B, 77, C), added_cond_kwargs=…)``.
    vae : AutoencoderKL or AutoencoderTiny
        ``(B, 3, H, W)`` in [-1, 1] ↔ ``(B, 4, H/8, W/8)``; use ``encode_images`` /
        ``decode_latents``, which handle both kinds and ``vae_scale``.
    text_encoders, tokenizers : tuple
        One (SD1.5) or two (SDXL: CLIP-L, OpenCLIP bigG with projection) of each.
    scheduler : DDPMScheduler
        The training noise schedule (1000 steps, scaled-linear betas, epsilon prediction).
    vae_scale : float
        Latent scaling factor (0.18215 SD1.5, 0.13025 SDXL; for a TAESD, divided by its file scale).
    source : str
        The path it was loaded from.
    configs : dict
        Single files only: the diffusers configs inferred from the weights (``{"unet": {...}, ...}``).
    """

    kind: str
    unet: Any
    vae: Any
    text_encoders: tuple
    tokenizers: tuple
    scheduler: Any
    vae_scale: float
    source: str = ""
    configs: dict = field(default_factory=dict, repr=False)

    @property
    def vae_factor(self) -> int:
        """Pixel size of one latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _freeze(*modules) -> None:
    for m in modules:
        m.requires_grad_(False)
        m.eval()


def _folder_kind(folder: Path) -> str:
    """SD1.5 or SDXL for a diffusers folder; SD2/v-prediction folders are refused."""
    unet_cfg = folder / "unet" / "config.json"
    if not (folder / "model_index.json").is_file() or not unet_cfg.is_file():
        raise ModelNotFoundError(
            f"load_base: base {str(folder)!r} is a folder, so it must be a diffusers pipeline folder "
            "(model_index.json and unet/config.json)",
            [str(folder / "model_index.json"), str(unet_cfg)],
        )
    cfg = json.loads(unet_cfg.read_text("utf-8"))
    sched = folder / "scheduler" / "scheduler_config.json"
    prediction = json.loads(sched.read_text("utf-8")).get("prediction_type", "epsilon") if sched.is_file() else "epsilon"
    context = cfg.get("cross_attention_dim")
    head = f"load_base: base {str(folder)!r} must be an SD1.5 or SDXL epsilon-prediction model"
    if prediction != "epsilon":
        raise ConfigError(f"{head}, got prediction_type={prediction!r} in scheduler/scheduler_config.json")
    if cfg.get("in_channels", 4) != 4:
        raise ConfigError(f"{head}, got a UNet with in_channels={cfg.get('in_channels')} (inpainting?)")
    if cfg.get("addition_embed_type") == "text_time":
        if not (folder / "text_encoder_2").is_dir():
            raise ConfigError(f"{head}, got an SDXL UNet without text_encoder_2/ (an SDXL refiner?)")
        return "sdxl"
    if context == 1024:
        raise ConfigError(f"{head}, got cross_attention_dim=1024 (SD2.x), which is not supported")
    return "sd15"


def _load_folder(folder: Path, kind: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    opts = dict(local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **opts)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **opts)
    encoders = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, **opts)]
    if kind == "sdxl":
        encoders.append(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", dtype=dtype, **opts))
    return unet, vae, encoders, folder / "scheduler"


def _strict_load(model, state: dict, what: str, source: str) -> None:
    """Load ``state`` into a meta-initialised ``model``; every parameter must be covered."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(
            f"load_base: {what} weights in {source!r} must match the inferred config, got "
            f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _load_clip(cls, cfg_dir: Path, state: dict, prefix: str, layout: str, source: str):
    """A CLIP text encoder from LDM keys (HF layout or OpenCLIP's), loaded strictly."""
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    config = cls.config_class.from_pretrained(str(cfg_dir), local_files_only=True)
    with init_empty_weights():  # parameters on "meta", buffers (position_ids) real
        model = cls(config)
    if layout == "open_clip":
        sd = convert_open_clip_checkpoint(model, state, prefix=prefix)
    else:
        sd = {"text_model." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = set(model.state_dict())
    if not any(k.startswith("text_model.") for k in own):  # transformers >= 5.6 flattened CLIPTextModel
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    _strict_load(model, sd, cls.__name__, source)
    return model


def _load_taesd(config: dict, state: dict, source: str):
    """ComfyUI's TAESD (``first_stage_model.taesd_encoder.N`` / ``taesd_decoder.N``) as ``AutoencoderTiny``.

    diffusers' ``EncoderTiny.layers`` has ComfyUI's encoder indices; its decoder applies the
    ``tanh`` clamp outside ``layers``, so decoder indices shift by one. The file's ``vae_scale``
    divides the family's latent scale (ComfyUI: UNet input = taesd(x) / vae_scale × 0.18215).
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderTiny

    scale = float(state.get(VAE_PREFIX + "vae_scale", torch.tensor(1.0)))
    shift = float(state.get(VAE_PREFIX + "vae_shift", torch.tensor(0.0)))
    if shift != 0.0 or scale <= 0.0:
        raise ConfigError(
            f"load_base: the TAESD in {source!r} must have vae_shift 0 and vae_scale > 0, got {shift} and {scale}"
        )
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs["scaling_factor"] = config["scaling_factor"] / scale
    with init_empty_weights():
        vae = AutoencoderTiny(**kwargs)
    sd = {}
    for key, value in state.items():
        for side, offset in (("encoder", 0), ("decoder", -1)):
            head = f"{VAE_PREFIX}taesd_{side}."
            if key.startswith(head):
                index, rest = key[len(head):].split(".", 1)
                sd[f"{side}.layers.{int(index) + offset}.{rest}"] = value
    _strict_load(vae, sd, "TAESD VAE", source)
    return vae


def _load_single_file(path: Path, shapes: dict, kind: str, dtype: torch.dtype):
    """UNet, VAE, text encoders, scheduler config and inferred configs from one LDM-layout file."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .model_detect import CLIP_PREFIXES

    state = {}
    with safe_open(str(path), framework="pt") as f:  # skips EMA copies and anything else unused
        for k in f.keys():
            if k.startswith(_LDM_PREFIXES):
                t = f.get_tensor(k)
                state[k] = t.to(dtype) if t.is_floating_point() else t
    tmp = Path(tempfile.mkdtemp(prefix="vitruvian-config-"))
    try:
        cfg = write_config_folder(shapes, kind, tmp)
        opts = dict(config=str(cfg), local_files_only=True)  # tensors are already in ``dtype``
        unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", **opts)
        vae_cfg = json.loads((cfg / "vae" / "config.json").read_text("utf-8"))
        if vae_cfg.get("_class_name") == "AutoencoderTiny":
            vae = _load_taesd(vae_cfg, state, str(path))
        else:
            vae = AutoencoderKL.from_single_file(state, subfolder="vae", **opts)
        encoders = []
        for (folder, prefix, layout), cls in zip(CLIP_PREFIXES[kind], (CLIPTextModel, CLIPTextModelWithProjection)):
            encoders.append(_load_clip(cls, cfg / folder, state, prefix, layout, str(path)))
        configs = {p.parent.name: json.loads(p.read_text("utf-8")) for p in cfg.glob("*/config.json")}
        sched_cfg = DDPMScheduler.load_config(str(cfg), subfolder="scheduler")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for model in (unet, vae, *encoders):
        # nn.Module.to, not diffusers' override, which warns about fp32 modules even when there are none
        torch.nn.Module.to(model, dtype=dtype)
    for name, model in (("UNet", unet), ("VAE", vae)):
        meta = [n for n, p in model.named_parameters() if p.is_meta]
        if meta:
            raise ConfigError(
                f"load_base: {name} weights in {str(path)!r} must cover the inferred config, got "
                f"{len(meta)} parameters without weights (e.g. {meta[:3]})"
            )
    return unet, vae, encoders, sched_cfg, configs


def load_base(
    path: str | os.PathLike, *, tokenizer: str | os.PathLike = "", device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BaseModel:
    """Load an SD1.5 or SDXL base model without network access.

    Parameters
    ----------
    path : path
        A diffusers pipeline folder, or a single-file ``.safetensors`` checkpoint (LDM layout).
    tokenizer : path, optional
        Folder with CLIP ``vocab.json`` + ``merges.txt``; "" searches (see ``tokenizer_search``).
    device, dtype
        Where and in which dtype the frozen base weights live (LoRA layers added later stay fp32).

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
    from diffusers import DDPMScheduler

    src = Path(path).expanduser()
    if not src.exists():
        raise ModelNotFoundError(f"load_base: base model {str(path)!r}", [str(src.parent)])
    if src.is_dir():
        kind = _folder_kind(src)
        unet, vae, encoders, sched_dir = _load_folder(src, kind, dtype)
        scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(str(sched_dir)))
        base_dir, configs = src, {}
    else:
        shapes = read_shapes(src)
        kind = detect_family(shapes, source=str(src))
        unet, vae, encoders, sched_cfg, configs = _load_single_file(src, shapes, kind, dtype)
        scheduler = DDPMScheduler.from_config(sched_cfg)
        base_dir = None
    tokenizers = load_tokenizers(kind, tokenizer=tokenizer, base_dir=base_dir)
    _freeze(unet, vae, *encoders)
    for m in (unet, vae, *encoders):
        m.to(device)
    return BaseModel(
        kind=kind,
        unet=unet,
        vae=vae,
        text_encoders=tuple(encoders),
        tokenizers=tokenizers,
        scheduler=scheduler,
        vae_scale=float(vae.config.scaling_factor),
        source=str(src),
        configs=configs,
    )


def _token_ids(tokenizer, encoder, prompts: list[str], device) -> torch.Tensor:
    n = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    ids = tokenizer(prompts, padding="max_length", max_length=n, truncation=True, return_tensors="pt").input_ids
    return ids.to(device)


def encode_prompt(
    base: BaseModel,
    prompts: Sequence[str],
    *,
    resolution: int | None = None,
    crops_coords_top_left: torch.Tensor | None = None,
) -> dict:
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


def encode_images(
    base: BaseModel, pixels: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
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


def decode_latents(base: BaseModel, latents: torch.Tensor) -> torch.Tensor:
    """Images from UNet-space latents: ``(B, 4, h, w)`` → ``(B, 3, 8h, 8w)`` in about [-1, 1]."""
    return base.vae.decode(latents / base.vae_scale).sample
