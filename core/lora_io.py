"""Save and load LoRA files that ComfyUI's ``LoraLoader`` applies with no unmatched key.

File format (kohya, the de-facto standard; ComfyUI maps it for SD1.5 and SDXL):

- ``lora_unet_<module>.lora_down.weight`` (rank, in[, kh, kw]), ``….lora_up.weight`` (out, rank[, 1, 1])
  and ``….alpha`` (0-d) for each UNet module, where ``<module>`` is the diffusers module path with
  ``.`` → ``_`` (``down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``);
- text encoders: ``lora_te_`` (SD1.5), ``lora_te1_`` / ``lora_te2_`` (SDXL), module paths starting
  with ``text_model_`` (``lora_te_text_model_encoder_layers_0_self_attn_q_proj``).

PEFT's own names (``unet.….lora_A.weight``) are *not* applied by ComfyUI to the UNet (it logs
"lora key not loaded"), which is why files are converted. The transformer families (Flux.1, Chroma, SD3.5,
Qwen-Image) use ``key_style="diffusers"`` instead: ``transformer.<module>.lora_A.weight`` / ``….lora_B.weight`` /
``….alpha`` with diffusers module paths, which ComfyUI maps for those models (``comfy/lora.py``:
``"transformer.{}"`` keys for Flux, SD3 and QwenImage) and diffusers' ``load_lora_weights`` reads (alphas
included); metadata ``vitruvian_lora_keys`` says which style a file has. The effective update is
``up @ down * alpha / rank``, identical to peft's ``lora_B @ lora_A * lora_alpha / r``.

Safetensors metadata: ``ss_network_module``, ``ss_network_dim``, ``ss_network_alpha``,
``ss_base_model_version`` (when known), ``vitruvian_config`` (JSON), ``vitruvian_version``,
``vitruvian_step``, and ``vitruvian_lora_modules`` (JSON: the peft module names per part). The last
one makes the kohya → peft mapping exact, so ``load_lora_state`` can restore a run (resume) without
guessing which ``_`` were dots.

Writes are atomic: a temp file in the same folder, then ``os.replace``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_save_safetensors
from .errors import ConfigError

__all__ = [
    "KOHYA_PREFIXES",
    "LoraState",
    "kohya_module_name",
    "peft_to_kohya",
    "save_lora",
    "load_lora_state",
    "read_lora_metadata",
    "unwrap_model",
]

KOHYA_PREFIXES = {"unet": "lora_unet_", "te": "lora_te_", "te1": "lora_te1_", "te2": "lora_te2_"}
BASE_VERSIONS = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
_A, _B = ".lora_A.weight", ".lora_B.weight"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("vitruvian")
    except Exception:  # not installed (running from a checkout inside ComfyUI)
        return "unknown"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP/DataParallel and ``torch.compile`` (``_orig_mod``) wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


_STYLES = ("kohya", "diffusers")


def _file_keys(module: str, part: str, style: str) -> tuple[str, str, str]:
    """(down/A, up/B, alpha) tensor names of one peft module in a file of ``style``."""
    if style == "diffusers":
        if part != "unet":
            raise ConfigError(f"save_lora: key_style 'diffusers' covers the denoiser only, got a {part!r} part")
        return f"transformer.{module}{_A}", f"transformer.{module}{_B}", f"transformer.{module}.alpha"
    name = kohya_module_name(module, part)
    return f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"


def kohya_module_name(module: str, part: str) -> str:
    """Kohya name of a peft module path: ``"unet"`` keeps diffusers paths, text encoders get
    a ``text_model.`` root (transformers ≥ 5.6 dropped it from ``CLIPTextModel``); dots → ``_``."""
    if part != "unet" and not module.startswith("text_model."):
        module = "text_model." + module
    return KOHYA_PREFIXES[part] + module.replace(".", "_")


def peft_to_kohya(
    state: Mapping[str, torch.Tensor], part: str, alpha: float, *, dtype: torch.dtype = torch.float32,
    style: str = "kohya", fold_alpha: bool = False,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert a peft LoRA state dict (``get_peft_model_state_dict``) to kohya keys (or, ``style="diffusers"``,
    ``transformer.``-prefixed diffusers names; see the module docstring).

    Parameters
    ----------
    state : mapping
        ``{"<module>.lora_A.weight": (r, in[, kh, kw]), "<module>.lora_B.weight": (out, r[, 1, 1])}``.
    part : str
        ``"unet"``, ``"te"``, ``"te1"`` or ``"te2"`` (the kohya prefix).
    alpha : float
        peft ``lora_alpha``; stored per module as a 0-d ``.alpha`` tensor.

    Returns
    -------
    (tensors, modules)
        kohya tensors and the peft module names in order.

    Raises
    ------
    ConfigError
        For peft tensors other than plain LoRA A/B weights (DoRA magnitudes, LoRA biases, embeddings).
    """
    other = [k for k in state if not k.endswith((_A, _B))]
    if other:
        raise ConfigError(
            f"peft_to_kohya: state must hold only lora_A/lora_B weights, got {other[:3]}; "
            "DoRA, LoRA bias and embedding adapters have no kohya form"
        )
    modules = sorted({k[: -len(_A)] for k in state if k.endswith(_A)})
    out: dict[str, torch.Tensor] = {}
    for m in modules:
        down, up, alpha_key = _file_keys(m, part, style)
        a, b = state[m + _A].detach(), state[m + _B].detach()
        out[down] = a.to("cpu", dtype).contiguous()
        if fold_alpha:  # the update B·A·alpha/r carried by B alone: readers without alpha support get it right
            out[up] = (b.float() * (float(alpha) / a.shape[0])).to("cpu", dtype).contiguous()
        else:
            out[up] = b.to("cpu", dtype).contiguous()
            out[alpha_key] = torch.tensor(float(alpha), dtype=torch.float32)
    return out, modules


def _adapter(model, adapter_name: str, what: str):
    config = getattr(model, "peft_config", {}).get(adapter_name)
    if config is None:
        raise ConfigError(
            f"save_lora: {what} must carry the LoRA adapter {adapter_name!r}, got adapters "
            f"{sorted(getattr(model, 'peft_config', {}))}; call add_lora(...) first"
        )
    return config


def _jsonable(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def save_lora(
    path: str | os.PathLike,
    unet,
    *,
    text_encoder=None,
    metadata: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    step: int | None = None,
    base_kind: str | None = None,
    adapter_name: str = "default",
    dtype: torch.dtype = torch.float32,
    key_style: str = "kohya",
    fold_alpha: bool = False,
) -> Path:
    """Write the LoRA of ``unet`` (and text encoders) as a kohya ``.safetensors`` file, atomically.

    Parameters
    ----------
    path : path
        Destination; the folder must exist. An existing file is replaced only once the new one
        is completely written.
    unet : torch.nn.Module
        A UNet with peft LoRA layers (``add_lora``); DDP/compile wrappers are unwrapped.
    text_encoder : module or sequence of (module or None), optional
        One encoder (→ ``lora_te_``) or a pair aligned with SDXL's encoders (→ ``lora_te1_`` /
        ``lora_te2_``; ``None`` entries are skipped).
    metadata : mapping, optional
        Extra metadata; non-string values are stored as JSON.
    config : mapping, optional
        The resolved training config, stored as JSON under ``vitruvian_config``.
    step : int, optional
        Training step, stored as ``vitruvian_step``.
    base_kind : {"sd15", "sdxl"}, optional
        Sets ``ss_base_model_version``.
    dtype : torch.dtype
        Tensor dtype in the file (fp32 keeps resume exact; fp16 halves the size).
    key_style : {"kohya", "diffusers"}
        ``"kohya"`` for the UNet families, ``"diffusers"`` (``transformer.…lora_A.weight``) for the transformer
        families (no text-encoder parts).
    fold_alpha : bool
        Write ``B·alpha/r`` and no ``.alpha`` tensors (metadata ``vitruvian_alpha_folded``), for readers that refuse
        or ignore alphas (diffusers' SD3 loader); ``load_lora_state`` divides it back (not bit-exact, so resume
        checkpoints never fold).

    Returns
    -------
    Path
        ``path``.
    """
    from peft import get_peft_model_state_dict

    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"save_lora: path must be in an existing folder, got {str(path)!r}")
    if key_style not in _STYLES:
        raise ConfigError(f"save_lora: key_style must be one of {_STYLES}, got {key_style!r}")
    unet = unwrap_model(unet)
    cfg = _adapter(unet, adapter_name, "unet")
    tensors, modules = peft_to_kohya(get_peft_model_state_dict(unet, adapter_name=adapter_name), "unet", cfg.lora_alpha,
                                     dtype=dtype, style=key_style, fold_alpha=fold_alpha)
    names = {"unet": modules}
    if text_encoder is not None:
        encoders = list(text_encoder) if isinstance(text_encoder, Sequence) else [text_encoder]
        parts = ["te"] if len(encoders) == 1 else ["te1", "te2"]
        if len(encoders) > 2:
            raise ConfigError(f"save_lora: text_encoder must be one module or a pair, got {len(encoders)} items")
        for part, enc in zip(parts, encoders):
            if enc is None:
                continue
            enc = unwrap_model(enc)
            te_cfg = _adapter(enc, adapter_name, f"text encoder {part!r}")
            state = get_peft_model_state_dict(enc, adapter_name=adapter_name)
            te_tensors, names[part] = peft_to_kohya(state, part, te_cfg.lora_alpha, dtype=dtype, style=key_style,
                                                    fold_alpha=fold_alpha)
            tensors.update(te_tensors)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.r),
        "ss_network_alpha": _jsonable(cfg.lora_alpha),
        "vitruvian_version": _version(),
        "vitruvian_config": json.dumps(dict(config or {}), sort_keys=True, default=str),
        "vitruvian_lora_modules": json.dumps(names),
        "vitruvian_lora_keys": key_style,
    }
    if fold_alpha:
        meta["vitruvian_alpha_folded"] = "true"
    if step is not None:
        meta["vitruvian_step"] = str(int(step))
    if base_kind is not None:
        meta["ss_base_model_version"] = BASE_VERSIONS.get(base_kind, base_kind)
    meta.update({str(k): _jsonable(v) for k, v in (metadata or {}).items()})
    atomic_save_safetensors(tensors, path, meta)
    return path



@dataclass
class LoraState:
    """A vitruvian LoRA file read back in peft naming (for resume or stage merges).

    Attributes
    ----------
    unet : dict
        ``{"<module>.lora_A.weight": tensor, "<module>.lora_B.weight": tensor}`` (peft names, no
        adapter name), ready for ``apply_lora_state``/``set_peft_model_state_dict``.
    text_encoders : tuple of (dict or None)
        Same for the text encoders: one entry (SD1.5 ``lora_te_``) or two (SDXL te1/te2); empty
        when none was trained.
    rank, alpha : from the metadata. config, step : ``vitruvian_config`` / ``vitruvian_step``.
    metadata : all safetensors metadata (strings).
    """

    unet: dict[str, torch.Tensor]
    text_encoders: tuple
    rank: int
    alpha: float
    config: dict = field(default_factory=dict)
    step: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def read_lora_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a LoRA file (empty dict when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_lora_state(path: str | os.PathLike) -> LoraState:
    """Read a LoRA written by ``save_lora`` back into peft names.

    Raises
    ------
    ConfigError
        If the file lacks ``vitruvian_lora_modules`` (not written by this pack) or its tensors do
        not match the module list.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"load_lora_state: path must be an existing LoRA .safetensors file, got {str(path)!r}")
    meta = read_lora_metadata(path)
    if "vitruvian_lora_modules" not in meta:
        raise ConfigError(
            f"load_lora_state: path must be a LoRA saved by vitruvian (metadata 'vitruvian_lora_modules'), "
            f"got {str(path)!r} with metadata keys {sorted(meta)[:6]}; foreign LoRAs cannot be resumed"
        )
    names: dict[str, list[str]] = json.loads(meta["vitruvian_lora_modules"])
    tensors = load_file(str(path))
    used: set[str] = set()
    parts: dict[str, dict[str, torch.Tensor]] = {}
    style = meta.get("vitruvian_lora_keys", "kohya")  # files from before the key was kept are kohya
    if style not in _STYLES:
        raise ConfigError(f"load_lora_state: vitruvian_lora_keys must be one of {_STYLES}, got {style!r} in {str(path)!r}")
    folded = meta.get("vitruvian_alpha_folded") == "true"
    for part, modules in names.items():
        state = {}
        for m in modules:
            down, up, alpha_key = _file_keys(m, part, style)
            try:
                state[m + _A] = tensors[down]
                state[m + _B] = tensors[up]
                if folded:  # undo B·alpha/r
                    scale = float(meta.get("ss_network_alpha", 0) or 0) / tensors[down].shape[0]
                    state[m + _B] = (tensors[up].float() / scale).to(tensors[up].dtype)
            except KeyError as exc:
                raise ConfigError(f"load_lora_state: {str(path)!r} must contain {exc.args[0]!r} (listed in its metadata)") from None
            used.update({down, up, alpha_key})
        parts[part] = state
    extra = sorted(set(tensors) - used)
    if extra:
        raise ConfigError(f"load_lora_state: {str(path)!r} has tensors not in its module list, e.g. {extra[:3]}")
    if "te" in parts:
        te = (parts["te"],)
    elif "te1" in parts or "te2" in parts:
        te = (parts.get("te1"), parts.get("te2"))
    else:
        te = ()
    step = meta.get("vitruvian_step")
    return LoraState(
        unet=parts.get("unet", {}),
        text_encoders=te,
        rank=int(meta.get("ss_network_dim", 0)),
        alpha=float(meta.get("ss_network_alpha", 0)),
        config=json.loads(meta.get("vitruvian_config") or "{}"),
        step=int(step) if step is not None else None,
        metadata=meta,
    )
