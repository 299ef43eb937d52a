"""Recognise a single-file Stable Diffusion checkpoint and size its diffusers configs from the weights.

ComfyUI users hold one ``.safetensors`` file per model (LDM key layout: ``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.*`` or ``conditioner.embedders.*``). diffusers can convert
such a file offline when it is given a local folder of diffusers JSON configs; the shipped ones are
in ``trainers/model_configs/{sd15,sdxl}``. Like ComfyUI (``comfy/model_detection.py``), the UNet,
VAE and text-encoder sizes are read from the tensor shapes, so shallower test checkpoints load too;
what shapes cannot tell is taken from the family's conventions:

- GroupNorm uses 32 groups (UNet and VAE);
- SD1.5 UNets use 8 attention heads per block, SDXL UNets heads of width 64;
- CLIP text encoders use heads of width 64 (12 for CLIP-L, 20 for OpenCLIP bigG), at least one.

The VAE may also be a TAESD (``first_stage_model.taesd_encoder.*``), which ComfyUI accepts and the
test kit's tiny ComfyUI checkpoint uses; it becomes a diffusers ``AutoencoderTiny``.

Only the tensor *shapes* are read here (no weights), so detection of a 7 GB file is instant.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..core.errors import ConfigError
from ..core.ldm_unet import count_indices, read_layout

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "CONFIG_ROOT",
    "read_shapes",
    "detect_family",
    "infer_unet_config",
    "infer_vae_config",
    "infer_clip_config",
    "write_config_folder",
]

Shapes = Mapping[str, tuple[int, ...]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIXES = {
    # family -> (component folder, key prefix, layout)
    "sd15": (("text_encoder", "cond_stage_model.transformer.text_model.", "hf"),),
    "sdxl": (
        ("text_encoder", "conditioner.embedders.0.transformer.text_model.", "hf"),
        ("text_encoder_2", "conditioner.embedders.1.model.", "open_clip"),
    ),
}
CONFIG_ROOT = Path(__file__).parent / "model_configs"
_WHAT = "load_base"


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names → shapes of a ``.safetensors`` file, without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(
            f"{_WHAT}: base must be a diffusers folder or a .safetensors checkpoint, got {str(path)!r}; "
            "pickled .ckpt/.pt files are not loaded for safety, convert them to .safetensors first"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
        raise ConfigError(f"{_WHAT}: base {str(path)!r} is not a readable .safetensors file ({exc})") from exc


def _examples(keys, n: int = 4) -> str:
    keys = sorted(keys)
    more = f", … ({len(keys)} keys)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def detect_family(shapes: Shapes, *, source: str = "checkpoint") -> str:
    """Tell SD1.5 from SDXL by the keys of an LDM-layout checkpoint; refuse anything else clearly.

    Parameters
    ----------
    shapes : mapping of str to tuple
        Tensor names and shapes of the checkpoint (``read_shapes``).
    source : str
        Name used in error messages (the file path).

    Returns
    -------
    str
        ``"sd15"`` (``cond_stage_model.transformer.*`` CLIP-L, 768-wide cross attention, no
        ``label_emb``) or ``"sdxl"`` (``conditioner.embedders.0/1`` CLIP-L + OpenCLIP bigG,
        ``label_emb``).

    Raises
    ------
    ConfigError
        For files that are not SD checkpoints (naming what was found instead), SD2.x,
        v-prediction, SDXL refiner and inpainting checkpoints, and files without a text encoder.
    """
    keys = shapes.keys()
    head = f"{_WHAT}: base {source!r} must be an SD1.5 or SDXL checkpoint"
    unet = [k for k in keys if k.startswith(UNET_PREFIX)]
    if not unet:
        if any(".lora_down." in k or ".lora_A." in k or k.startswith("lora_") for k in keys):
            raise ConfigError(f"{head}, got a LoRA file (keys {_examples(keys)}); pass the base model, not a LoRA")
        if any(k.startswith(("down_blocks.", "conv_in.", "mid_block.")) for k in keys):
            raise ConfigError(
                f"{head}, got a diffusers UNet weight file (keys {_examples(keys)}); pass the whole diffusers "
                "folder (with model_index.json) instead of one component file"
            )
        raise ConfigError(f"{head}, got no 'model.diffusion_model.*' UNet keys (keys {_examples(keys)})")
    for marker in ("v_pred", "edm_vpred.sigma_max", "edm_vpred.sigma_min"):
        if marker in keys:
            raise ConfigError(
                f"{head} with epsilon prediction, got a v-prediction checkpoint (key {marker!r}); "
                "only epsilon-prediction SD1.5/SDXL bases are supported"
            )
    in_ch = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight", (0, 0))[1]
    if in_ch != 4:
        kind = "an inpainting" if in_ch == 9 else "a non-standard"
        raise ConfigError(f"{head} with 4 latent input channels, got {kind} UNet with {in_ch} input channels")
    contexts = {s[-1] for k, s in shapes.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")}
    has_label_emb = UNET_PREFIX + "label_emb.0.0.weight" in keys
    if any(k.startswith("cond_stage_model.model.") for k in keys) or 1024 in contexts:
        raise ConfigError(
            f"{head}, got SD2.x (OpenCLIP-H text encoder 'cond_stage_model.model.*', cross-attention width "
            f"{sorted(contexts)}); SD2 models are v-prediction/768 px and not supported"
        )
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise ConfigError(f"{head}, got an SDXL refiner ('conditioner.embedders.0.model.*'); use the SDXL base")
    if has_label_emb and any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        if not any(k.startswith(CLIP_PREFIXES["sdxl"][0][1]) for k in keys):
            raise ConfigError(f"{head}, got SDXL without its CLIP-L text encoder ('conditioner.embedders.0.*')")
        return "sdxl"
    if not has_label_emb and any(k.startswith(CLIP_PREFIXES["sd15"][0][1]) for k in keys):
        return "sd15"
    found = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in keys if k.count(".") >= 1})
    raise ConfigError(
        f"{head}, got a UNet with label_emb={has_label_emb}, cross-attention width {sorted(contexts)} and "
        f"top-level parts {found[:8]}; a full checkpoint needs its text encoder(s) "
        "('cond_stage_model.transformer.*' for SD1.5, 'conditioner.embedders.*' for SDXL)"
    )


def infer_unet_config(shapes: Shapes, base: dict, family: str) -> dict:
    """The diffusers ``UNet2DConditionModel`` config for the LDM UNet in ``shapes``.

    ``base`` is the family's shipped config; block structure, widths, transformer depths, context
    width, projection type and the SDXL embedding width are replaced by what the weights say.
    """
    sd = {k[len(UNET_PREFIX):]: s for k, s in shapes.items() if k.startswith(UNET_PREFIX)}
    layout = read_layout(sd, where=_WHAT)
    channels, depth = list(layout.channels), list(layout.depth)
    has_attn = [d > 0 for d in depth]
    cfg = dict(base)
    cfg.update(
        in_channels=layout.in_channels,
        out_channels=layout.out_channels,
        block_out_channels=channels,
        layers_per_block=layout.layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        use_linear_projection=layout.linear_projection,
    )
    if layout.contexts:
        cfg["cross_attention_dim"] = layout.contexts[-1]
    mid_depth = layout.mid_depth
    if family == "sdxl":
        cfg["attention_head_dim"] = [max(1, c // 64) for c in channels]
        tlpb = [d if d else 1 for d in depth]
        if mid_depth and mid_depth != tlpb[-1]:
            raise ConfigError(f"{_WHAT}: SDXL middle-block depth {mid_depth} must equal the last level's {tlpb[-1]}")
        cfg["transformer_layers_per_block"] = tlpb
        cfg["projection_class_embeddings_input_dim"] = layout.label_emb_dim
    elif any(d > 1 for d in depth) or mid_depth > 1:
        cfg["transformer_layers_per_block"] = [d if d else 1 for d in depth]
    return cfg


def infer_vae_config(shapes: Shapes, base: dict) -> dict:
    """The diffusers VAE config for the checkpoint's ``first_stage_model.*``.

    An LDM ``encoder/decoder`` VAE gives an ``AutoencoderKL`` config. A TAESD (the tiny
    autoencoder ComfyUI also accepts, ``first_stage_model.taesd_encoder/taesd_decoder``) gives an
    ``AutoencoderTiny`` config with the family's ``scaling_factor``; ``load_base`` divides it by
    the file's ``vae_scale`` tensor (so latents × scaling_factor are what the UNet saw in ComfyUI).
    """
    sd = {k[len(VAE_PREFIX):]: s for k, s in shapes.items() if k.startswith(VAE_PREFIX)}
    if "taesd_encoder.0.weight" in sd:
        last_enc = max(int(k.split(".")[1]) for k in sd if k.startswith("taesd_encoder."))
        last_dec = max(int(k.split(".")[1]) for k in sd if k.startswith("taesd_decoder."))
        width = sd["taesd_encoder.0.weight"][0]
        return {
            "_class_name": "AutoencoderTiny",
            "in_channels": sd["taesd_encoder.0.weight"][1],
            "out_channels": sd[f"taesd_decoder.{last_dec}.weight"][0],
            "latent_channels": sd[f"taesd_encoder.{last_enc}.weight"][0],
            "encoder_block_out_channels": [width] * 4,
            "decoder_block_out_channels": [width] * 4,
            "scaling_factor": base["scaling_factor"],
        }
    if "encoder.conv_in.weight" not in sd:
        raise ConfigError(
            f"{_WHAT}: the checkpoint must contain its VAE ('first_stage_model.encoder.*'), got keys {_examples(sd) or 'none'}"
        )
    n_levels = count_indices(sd, r"encoder\.down\.(\d+)\.")
    cfg = dict(base)
    cfg.update(
        in_channels=sd["encoder.conv_in.weight"][1],
        out_channels=sd["decoder.conv_out.weight"][0],
        latent_channels=sd["encoder.conv_out.weight"][0] // 2,
        block_out_channels=[sd[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(n_levels)],
        layers_per_block=count_indices(sd, r"encoder\.down\.0\.block\.(\d+)\."),
        down_block_types=["DownEncoderBlock2D"] * n_levels,
        up_block_types=["UpDecoderBlock2D"] * n_levels,
    )
    return cfg


def infer_clip_config(shapes: Shapes, base: dict, prefix: str, layout: str) -> dict:
    """The transformers ``CLIPTextConfig`` for a text encoder stored under ``prefix``.

    ``layout`` is ``"hf"`` (``text_model.encoder.layers.N.*``) or ``"open_clip"``
    (``transformer.resblocks.N.*``, ``positional_embedding``, ``text_projection``).
    """
    sd = {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix)}
    if layout == "hf":
        vocab, hidden = sd["embeddings.token_embedding.weight"]
        positions = sd["embeddings.position_embedding.weight"][0]
        layers = count_indices(sd, r"encoder\.layers\.(\d+)\.")
        inner = sd["encoder.layers.0.mlp.fc1.weight"][0]
        proj = base["projection_dim"]
    else:
        vocab, hidden = sd["token_embedding.weight"]
        positions = sd["positional_embedding"][0]
        layers = count_indices(sd, r"transformer\.resblocks\.(\d+)\.")
        inner = sd["transformer.resblocks.0.mlp.c_fc.weight"][0]
        proj = sd["text_projection"][1] if "text_projection" in sd else hidden
    cfg = dict(base)
    heads = base["num_attention_heads"] if hidden == base["hidden_size"] else max(1, hidden // 64)
    cfg.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=positions,
        num_hidden_layers=layers,
        intermediate_size=inner,
        num_attention_heads=heads,
        projection_dim=proj,
    )
    return cfg


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_config_folder(shapes: Shapes, family: str, dest: str | Path) -> Path:
    """Write a diffusers config folder (JSON only) that fits the checkpoint in ``shapes``.

    The shipped ``model_configs/<family>`` folder is copied with each component's sizes inferred
    from the weights; for a standard SD1.5/SDXL checkpoint the result equals the shipped configs.

    Returns
    -------
    Path
        ``dest``, usable as ``config=`` of diffusers' ``from_single_file``.
    """
    src, dest = CONFIG_ROOT / family, Path(dest)
    (dest / "scheduler").mkdir(parents=True, exist_ok=True)
    (dest / "model_index.json").write_text((src / "model_index.json").read_text("utf-8"), "utf-8")
    sched = src / "scheduler" / "scheduler_config.json"
    (dest / "scheduler" / "scheduler_config.json").write_text(sched.read_text("utf-8"), "utf-8")
    parts = {
        "unet": infer_unet_config(shapes, _load_json(src / "unet" / "config.json"), family),
        "vae": infer_vae_config(shapes, _load_json(src / "vae" / "config.json")),
    }
    for folder, prefix, layout in CLIP_PREFIXES[family]:
        parts[folder] = infer_clip_config(shapes, _load_json(src / folder / "config.json"), prefix, layout)
    for folder, cfg in parts.items():
        (dest / folder).mkdir(exist_ok=True)
        (dest / folder / "config.json").write_text(json.dumps(cfg, indent=2), "utf-8")
    return dest
