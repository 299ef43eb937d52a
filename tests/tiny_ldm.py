"""Write diffusers components as one LDM-layout ``.safetensors`` checkpoint (what ComfyUI users hold).

The inverse of diffusers' single-file conversion, for tests: a tiny diffusers pipeline becomes a
tiny ``model.diffusion_model.* / first_stage_model.* / cond_stage_model.*`` (SD1.5) or
``conditioner.embedders.{0,1}.*`` (SDXL) file, so the single-file path of
``trainers.models.load_base`` can be checked tensor for tensor against the folder it came from.

    >>> path = save_single_file(tiny_diffusers_folder("sd15"), tmp / "tiny.safetensors")  # doctest: +SKIP
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["unet_to_ldm", "vae_to_ldm", "clip_to_ldm", "open_clip_to_ldm", "ldm_state_dict", "save_single_file"]

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_RESNET[name]}.{tail}"


def unet_to_ldm(sd: dict, config) -> dict:
    """diffusers ``UNet2DConditionModel`` state dict → LDM ``UNetModel`` keys (no prefix)."""
    n = config["layers_per_block"]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in sd.items():
        module, _, param = key.rpartition(".")
        parts = key.split(".")
        if module in _UNET_FIXED:
            new = f"{_UNET_FIXED[module]}.{param}"
        elif parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + i * (n + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + i * (n + 1) + j}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(i + 1) * (n + 1)}.0.op.{rest.split('.', 1)[1]}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{i * (n + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{i * (n + 1) + j}.1.{rest}"
            else:  # upsamplers.0.conv.*
                new = f"output_blocks.{i * (n + 1) + n}.{2 if up_attn[i] else 1}.{rest}"
        else:
            raise KeyError(f"unet_to_ldm: no LDM name for {key!r}")
        out[new] = value
    return out


_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(sd: dict, config) -> dict:
    """diffusers ``AutoencoderKL`` state dict → LDM ``AutoencoderKL`` keys (no prefix)."""
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        new = key.replace("conv_norm_out", "norm_out")
        if len(parts) > 2 and parts[1] in ("down_blocks", "up_blocks"):
            side, i, kind, j, rest = parts[0], int(parts[2]), parts[3], parts[4], ".".join(parts[5:])
            level = i if side == "encoder" else n_up - 1 - i
            word = "down" if side == "encoder" else "up"
            if kind == "resnets":
                name, _, tail = rest.partition(".")
                new = f"{side}.{word}.{level}.block.{j}.{_VAE_RESNET.get(name, name)}.{tail}"
            else:
                new = f"{side}.{word}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.{rest}"
        elif len(parts) > 2 and parts[1] == "mid_block":
            side, kind, j, rest = parts[0], parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                name, _, tail = rest.partition(".")
                new = f"{side}.mid.block_{j + 1}.{_VAE_RESNET.get(name, name)}.{tail}"
            else:
                module, _, param = rest.rpartition(".")
                new = f"{side}.mid.attn_1.{_VAE_ATTN[module]}.{param}"
                if param == "weight" and value.ndim == 2:
                    value = value[:, :, None, None]  # LDM attention uses 1x1 convolutions
        out[new] = value
    return out


def clip_to_ldm(sd: dict) -> dict:
    """transformers CLIP text state dict → ``text_model.*`` keys (HF layout, as SD1.5 files store it)."""
    out = {}
    for key, value in sd.items():
        if key == "text_projection.weight" or key.endswith("position_ids"):
            continue
        out[key if key.startswith("text_model.") else f"text_model.{key}"] = value
    return out


_OPEN_CLIP = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_to_ldm(sd: dict) -> dict:
    """``CLIPTextModelWithProjection`` state dict → OpenCLIP text-tower keys (SDXL's second encoder)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out = {
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        src = f"encoder.layers.{i}."
        dst = f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            qkv = [sd.pop(f"{src}self_attn.{p}_proj.{param}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{param}"] = torch.cat(qkv, 0)
        for key in [k for k in sd if k.startswith(src)]:
            rest = key[len(src):]
            module, _, param = rest.rpartition(".")
            out[f"{dst}{_OPEN_CLIP[module]}.{param}"] = sd.pop(key)
    if sd:
        raise KeyError(f"open_clip_to_ldm: unmapped keys {sorted(sd)[:5]}")
    return out


def ldm_state_dict(folder: str | os.PathLike, kind: str) -> dict[str, torch.Tensor]:
    """Load a diffusers pipeline folder and return one LDM-layout state dict (SD1.5 or SDXL)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    out = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    out.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    if kind == "sd15":
        out.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_to_ldm(te.state_dict()).items()})
    elif kind == "sdxl":
        te2 = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2")
        out.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in clip_to_ldm(te.state_dict()).items()})
        out.update({f"conditioner.embedders.1.model.{k}": v for k, v in open_clip_to_ldm(te2.state_dict()).items()})
    else:
        raise ValueError(f"ldm_state_dict: kind must be 'sd15' or 'sdxl', got {kind!r}")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_single_file(
    folder: str | os.PathLike, path: str | os.PathLike, kind: str = "sd15", *, extra: dict | None = None
) -> Path:
    """Write ``ldm_state_dict(folder, kind)`` (+ ``extra`` tensors) to ``path`` as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = ldm_state_dict(folder, kind)
    sd.update(extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(sd, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
