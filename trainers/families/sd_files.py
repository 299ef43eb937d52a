"""SD1.5 / SDXL weights from disk: a diffusers folder, or a single LDM-layout file as ComfyUI users keep it.

A single file is sized from its weights (``trainers.model_detect`` writes the diffusers configs from the shipped
ones in ``model_configs/``), its tensors loaded strictly into meta-initialised modules; its VAE may be a TAESD
(ComfyUI's ``taesd_encoder``/``taesd_decoder`` keys). Nothing is fetched from a model hub.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from ...core.errors import ConfigError, ModelNotFoundError
from ..model_detect import CLIP_PREFIXES, UNET_PREFIX, VAE_PREFIX, write_config_folder

__all__ = ["folder_kind", "load_folder", "load_single_file"]

_LDM_PREFIXES = (UNET_PREFIX, VAE_PREFIX, "cond_stage_model.", "conditioner.embedders.")


def folder_kind(folder: Path) -> str:
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


def load_folder(folder: Path, kind: str, dtype: torch.dtype):
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


def load_single_file(path: Path, shapes: dict, kind: str, dtype: torch.dtype):
    """UNet, VAE, text encoders, scheduler config and inferred configs from one LDM-layout file."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextModel, CLIPTextModelWithProjection


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
