"""Component files as ComfyUI users keep them, for the transformer families: text encoders and VAEs.

- ``models/text_encoders/``: ``clip_l.safetensors`` (transformers ``CLIPTextModel`` names, ``text_model.…``),
  ``clip_g.safetensors`` (OpenCLIP bigG as ``CLIPTextModelWithProjection`` names: ``text_model.…`` +
  ``text_projection.weight``; SD3.5) and ``t5xxl_fp16.safetensors`` / ``t5xxl_fp8_e4m3fn.safetensors``
  (``T5EncoderModel`` names: ``shared``, ``encoder.block.N…``), told apart by their keys, in any order
  (``load_text_encoders``; ``text_encoder_kind`` says how);
- ``models/vae/``: an LDM-layout autoencoder (``ae.safetensors``) → ``AutoencoderKL`` with the family's latent
  scaling and shift, which are not in the file (``load_vae``).

Sizes come from the tensors' shapes, nothing from a hub. Head counts that shapes cannot tell: CLIP uses 64-wide
heads (one head below 64, for test models); T5 reads them from its relative-attention table. fp8-stored files
are up-cast to the run's dtype (fp8 is a storage format here).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ...core.errors import ConfigError, ModelNotFoundError
from ...core.ldm_unet import count_indices
from ..model_detect import VAE_PREFIX, infer_clip_config, infer_vae_config, read_shapes

__all__ = ["WHERE", "read_tensors", "cast", "load_strict", "build_strict", "transformer_config", "folder_schedule", "text_encoder_kind", "load_text_encoders", "load_vae"]

_CONFIGS = Path(__file__).resolve().parent.parent / "model_configs"
#: where ComfyUI keeps each component, for error messages
WHERE = {"clip_l": "models/text_encoders/ (clip_l.safetensors)", "clip_g": "models/text_encoders/ (clip_g.safetensors)",
         "t5": "models/text_encoders/ (t5xxl_fp16.safetensors)", "vae": "models/vae/ (ae.safetensors)"}


def read_tensors(path: Path, keep=lambda k: True) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if keep(k)}


def cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors in ``dtype`` (fp8-stored files are up-cast: fp8 is a storage format here)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def load_strict(model: torch.nn.Module, state: dict, what: str, source: Path, optional: tuple[str, ...] = ()) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith(("position_ids", *optional))]
    if missing or unexpected:
        raise ConfigError(f"load_base: the {what} in {str(source)!r} must match the config its shapes give, got "
                          f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unexpected)} unexpected tensors "
                          f"(e.g. {unexpected[:3]})")


def build_strict(cls, config: Mapping, state: dict, what: str, source: Path):
    """``cls(**config)`` built on the meta device, then ``state`` assigned strictly (see :func:`load_strict`)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(**config)
    load_strict(model, state, what, source)
    return model


def transformer_config(folder: Path, class_name: str) -> dict | None:
    """``transformer/config.json`` of a diffusers folder when its ``_class_name`` is ``class_name``, else None."""
    cfg = folder / "transformer" / "config.json"
    if not cfg.is_file():
        return None
    config = json.loads(cfg.read_text("utf-8"))
    return config if config.get("_class_name") == class_name else None


def folder_schedule(folder: Path, default: Mapping) -> dict:
    """A diffusers folder's ``scheduler/scheduler_config.json``, or a copy of ``default`` when it has none."""
    sched = folder / "scheduler" / "scheduler_config.json"
    return json.loads(sched.read_text("utf-8")) if sched.is_file() else dict(default)


def text_encoder_kind(shapes: Mapping[str, tuple]) -> str | None:
    """"clip_l" (a CLIP text model: ComfyUI's clip_l), "clip_g" (OpenCLIP bigG), "t5" (a T5 encoder: t5xxl) or None.

    CLIP-G as ComfyUI's ``comfy/sd.py: detect_te_model`` tells it (a 31st layer: bigG has 32, CLIP-L 12); a
    24-layer CLIP (CLIP-H, ``layers.22``) is neither. Below full size (test models) a width other than CLIP-L's
    768 with a ``text_projection.weight`` is CLIP-G, otherwise CLIP-L (a CLIP-L file may carry a projection).
    """
    if "text_model.embeddings.token_embedding.weight" in shapes:
        if "text_model.encoder.layers.30.mlp.fc1.weight" in shapes:
            return "clip_g"
        if "text_model.encoder.layers.22.mlp.fc1.weight" in shapes:
            return None
        width = shapes["text_model.embeddings.token_embedding.weight"][1]
        return "clip_g" if width != 768 and "text_projection.weight" in shapes else "clip_l"
    if "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes and "shared.weight" in shapes:
        return "t5"
    return None


def _clip(path: Path, shapes: Mapping[str, tuple], dtype: torch.dtype, *, kind: str = "clip_l", projected: bool = False):
    """CLIP-L as ``CLIPTextModel`` or (``projected``) ``CLIPTextModelWithProjection`` with an identity projection
    (SD3's use of CLIP-L: ComfyUI takes its unprojected pooled output, diffusers' ``from_single_file`` sets
    ``text_projection`` to the identity); CLIP-G as ``CLIPTextModelWithProjection`` with the file's projection."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    big = kind == "clip_g"
    base = json.loads((_CONFIGS / ("sdxl/text_encoder_2" if big else "sd15/text_encoder") / "config.json").read_text("utf-8"))
    cfg = infer_clip_config(shapes, base, "text_model.", "hf")
    if big:
        if "text_projection.weight" not in shapes:
            raise ConfigError(f"load_base: a CLIP-G text encoder must have text_projection.weight (ComfyUI's "
                              f"{WHERE['clip_g']}), got {str(path)!r} without one")
        cfg["projection_dim"] = shapes["text_projection.weight"][0]
    else:
        cfg["projection_dim"] = cfg["hidden_size"]
    config = CLIPTextConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    with_projection = big or projected
    with init_empty_weights():
        model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    state = cast(read_tensors(path, lambda k: k.startswith("text_model.") or (big and k == "text_projection.weight")), dtype)
    if with_projection and not big:
        state["text_projection.weight"] = torch.eye(cfg["hidden_size"], dtype=dtype)
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers >= 5.6 flattened it
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    what = "CLIP-G text encoder" if big else "CLIP-L text encoder"
    load_strict(model, {k: v for k, v in state.items() if not k.endswith("position_ids")}, what, path)
    return model


def _t5(path: Path, shapes: Mapping[str, tuple], dtype: torch.dtype):
    from accelerate import init_empty_weights
    from transformers import T5Config, T5EncoderModel

    vocab, d_model = shapes["shared.weight"]
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    d_ff = shapes["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0]
    config = T5Config(vocab_size=vocab, d_model=d_model, d_kv=shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads,
                      d_ff=d_ff, num_layers=count_indices(shapes, r"encoder\.block\.(\d+)\."), num_heads=heads,
                      relative_attention_num_buckets=buckets, feed_forward_proj="gated-gelu" if gated else "relu",
                      is_encoder_decoder=False, use_cache=False)
    with init_empty_weights():
        model = T5EncoderModel(config)
    state = cast(read_tensors(path), dtype)
    state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])  # tied; some files store one copy
    load_strict(model, state, "T5 text encoder", path)
    model.tie_weights()
    return model


def load_text_encoders(files: Sequence[str], dtype: torch.dtype, *, need: tuple[str, ...] = ("clip_l", "t5"),
                       projected: bool = False) -> dict:
    """``{"clip_l": CLIPTextModel, "t5": T5EncoderModel}`` (Flux) or, with ``need=("clip_l", "clip_g", "t5")``,
    also ``"clip_g": CLIPTextModelWithProjection`` (SD3.5) from the files, in any order; ``projected`` makes CLIP-L
    a ``CLIPTextModelWithProjection`` with an identity projection (SD3.5). ConfigError naming the missing,
    doubled or unrecognised file and where ComfyUI keeps the right one."""
    found: dict[str, tuple] = {}
    for name in map(str, files):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"load_base: text encoder file {name!r}", [str(path.parent)])
        shapes = read_shapes(path)
        kind = text_encoder_kind(shapes)
        if kind is None or kind not in need:
            raise ConfigError(f"load_base: text_encoders must be {' and '.join(need)} files (ComfyUI keeps them in "
                              f"models/text_encoders/), got {name!r} with keys like {sorted(shapes)[:3]}")
        if kind in found:
            raise ConfigError(f"load_base: text_encoders must hold one {kind} file, got {found[kind][0]!r} and {name!r}")
        found[kind] = (name, path, shapes)
    missing = [k for k in need if k not in found]
    if missing:
        raise ConfigError(f"load_base: this base needs text_encoders={','.join(need)} files, got no "
                          f"{' or '.join(missing)} in {list(files)}; ComfyUI keeps them in "
                          + "; ".join(WHERE[k] for k in missing))
    return {kind: (_t5(path, shapes, dtype) if kind == "t5" else _clip(path, shapes, dtype, kind=kind, projected=projected))
            for kind, (_, path, shapes) in found.items()}


def load_vae(name: str, dtype: torch.dtype, *, factors: Mapping[str, float], prefix: str = ""):
    """``AutoencoderKL`` from an LDM-layout VAE file (``ae.safetensors``) with the family's latent ``factors``;
    ``prefix``: the VAE inside a checkpoint (``first_stage_model.``)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    name = str(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"load_base: vae file {name!r} ({WHERE['vae']})", [str(path.parent)])
    shapes = {k[len(prefix):]: v for k, v in read_shapes(path).items() if k.startswith(prefix)}
    if "encoder.conv_in.weight" not in shapes or "decoder.conv_out.weight" not in shapes:
        raise ConfigError(f"load_base: vae must be an autoencoder file in the LDM layout (ComfyUI's "
                          f"{WHERE['vae']}), got {name!r} with keys like {sorted(shapes)[:3]}")
    base = json.loads((_CONFIGS / "sd15" / "vae" / "config.json").read_text("utf-8"))
    cfg = infer_vae_config({VAE_PREFIX + k: s for k, s in shapes.items()}, base)
    cfg.update(factors, use_quant_conv="quant_conv.weight" in shapes, use_post_quant_conv="post_quant_conv.weight" in shapes,
               norm_num_groups=min(32, *cfg["block_out_channels"]))
    with init_empty_weights():
        vae = AutoencoderKL(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    tensors = read_tensors(path, lambda k: k.startswith(prefix))
    state = convert_ldm_vae_checkpoint(cast({k[len(prefix):]: v for k, v in tensors.items()}, dtype), vae.config)
    load_strict(vae, state, "VAE", path)
    return vae
