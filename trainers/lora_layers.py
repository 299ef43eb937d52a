"""peft LoRA layers on diffusers/transformers models: add, switch off for the reference, merge, restore.

- ``add_lora`` injects peft LoRA layers in place (the model keeps its class, so diffusers'
  ``unet(...)`` call signature is unchanged); base weights are frozen, LoRA weights fp32.
- ``adapters_disabled(*models)`` is the DPO reference: inside it every LoRA layer returns exactly
  its base layer's output (peft skips the adapter branch), so the output equals the base model's
  bit for bit; DDP / ``torch.compile`` wrappers are unwrapped first.
- ``merge_lora`` folds the LoRA into the base weights and removes the layers (HG-DPO stages).
- ``apply_lora_state`` loads a ``core.lora_io.LoraState`` part back (resume), strictly.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..core.errors import ConfigError
from ..core.lora_io import unwrap_model

__all__ = ["unwrap_model", "lora_layers", "add_lora", "adapters_disabled", "merge_lora", "apply_lora_state"]


#: attribute where ``add_lora`` keeps the model's layer list (a module walk per reference pass costs ≈ 0.7 ms on a
#: 32-layer UNet); ``merge_lora`` drops it (layers added or removed by other code than these two are not seen)
_LAYERS_ATTR = "_vitruvian_lora_layers"


def lora_layers(model: torch.nn.Module) -> list:
    """Every peft tuner layer (``BaseTunerLayer``) inside ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model_u = unwrap_model(model)
    cached = model_u.__dict__.get(_LAYERS_ATTR)
    if cached is not None:
        return list(cached)
    return [m for m in model_u.modules() if isinstance(m, BaseTunerLayer)]


def _suffixes(model: torch.nn.Module) -> list[str]:
    leaf = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    return sorted(leaf)


def add_lora(
    model: torch.nn.Module,
    *,
    rank: int,
    alpha: float,
    targets: Sequence[str] = ("to_q", "to_k", "to_v", "to_out.0"),
    init: str | bool = "gaussian",
    adapter_name: str = "default",
) -> torch.nn.Module:
    """Inject trainable peft LoRA layers into ``model`` (in place) and freeze everything else.

    Parameters
    ----------
    model : torch.nn.Module
        A diffusers UNet or a transformers CLIP text encoder (any module tree works).
    rank, alpha : int, float
        LoRA rank r and ``lora_alpha``; the update is ``B @ A * alpha / r``.
    targets : sequence of str
        Module-name suffixes (``"to_q"`` matches ``….attn1.to_q``); text encoders use
        ``q_proj, k_proj, v_proj, out_proj``.
    init : {"gaussian", True, False, ...}
        peft ``init_lora_weights``: A random, B zero (so the output is unchanged at step 0);
        ``False`` makes B random too (tests).

    Returns
    -------
    torch.nn.Module
        ``model``, with LoRA parameters in fp32 and ``requires_grad=True``, all others frozen.

    Raises
    ------
    ConfigError
        Bad rank/alpha, or targets that match no module (listing the available names).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"add_lora: rank must be an int ≥ 1, got {rank!r}")
    if not alpha > 0:
        raise ConfigError(f"add_lora: alpha must be > 0, got {alpha!r}")
    if isinstance(targets, str):
        raise ConfigError(f"add_lora: targets must be a sequence of module-name suffixes, got the str {targets!r}")
    model_u = unwrap_model(model)
    names = [n for n, _ in model_u.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not targets or unmatched:
        raise ConfigError(
            f"add_lora: targets must name modules of {type(model_u).__name__}, got {list(targets)} "
            f"({unmatched} match nothing); layer names there: {_suffixes(model_u)[:40]}"
        )
    if adapter_name in getattr(model_u, "peft_config", {}):
        raise ConfigError(f"add_lora: the model already has a LoRA adapter {adapter_name!r}; merge_lora it first")
    model_u.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=init)
    inject_adapter_in_model(config, model_u, adapter_name=adapter_name)
    if not hasattr(model_u, "peft_config"):
        model_u.peft_config = {}
    model_u.peft_config[adapter_name] = config
    if hasattr(model_u, "_hf_peft_config_loaded"):  # diffusers: lets unet.disable_adapters() etc. work too
        model_u._hf_peft_config_loaded = True
    model_u.__dict__.pop(_LAYERS_ATTR, None)
    layers = lora_layers(model_u)
    model_u.__dict__[_LAYERS_ATTR] = tuple(layers)
    for layer in layers:
        for p in layer.lora_A[adapter_name].parameters():
            p.data = p.data.float()
            p.requires_grad_(True)
        for p in layer.lora_B[adapter_name].parameters():
            p.data = p.data.float()
            p.requires_grad_(True)
    return model


@contextmanager
def adapters_disabled(*models: torch.nn.Module) -> Iterator[None]:
    """Run the models as their frozen bases: every LoRA layer is bypassed inside the block.

    Works on peft-injected models and ``PeftModel`` wrappers, under DDP or ``torch.compile``.
    On exit each layer's previous state is restored. The switch is peft's own flag (``_disable_adapters``, what
    every peft layer's forward reads through ``disable_adapters``), set directly: peft's ``enable_adapters``
    also rewrites ``requires_grad`` of every LoRA parameter and re-activates the adapter on the way back, 1.7 ms
    per reference pass on a 32-layer UNet, all of which had to be undone here. Where a peft version lacks that
    flag, its ``enable_adapters`` is used and ``requires_grad`` restored. ``tests/trainers/test_lora_layers.py``
    checks the reference equals the base bit for bit.

    Raises
    ------
    ConfigError
        If none of the models has a LoRA layer (the "reference" would silently be the policy).

    Examples
    --------
    >>> with torch.no_grad(), adapters_disabled(unet):        # doctest: +SKIP
    ...     ref = unet(x_t, t, encoder_hidden_states=h).sample
    """
    layers = [layer for model in models for layer in lora_layers(model)]
    if not layers:
        raise ConfigError(
            f"adapters_disabled: models must contain LoRA layers, got none in "
            f"{[type(unwrap_model(m)).__name__ for m in models]}; call add_lora first"
        )
    was_disabled = [layer.disable_adapters for layer in layers]
    if all(hasattr(layer, "_disable_adapters") for layer in layers):
        for layer in layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer, disabled in zip(layers, was_disabled):
                layer._disable_adapters = disabled
        return
    grads = [(p, p.requires_grad) for layer in layers for n, p in layer.named_parameters() if "lora_" in n]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, disabled in zip(layers, was_disabled):
            layer.enable_adapters(not disabled)
        for p, g in grads:
            p.requires_grad_(g)


def merge_lora(model: torch.nn.Module, *, adapter_name: str = "default") -> torch.nn.Module:
    """Fold the LoRA into the base weights (``W += B @ A * alpha / r``) and remove the layers.

    Afterwards ``model`` is a plain model again (its output equals the LoRA model's up to float
    rounding) and ``add_lora`` can start a new adapter, as HG-DPO's stages do.
    """
    model_u = unwrap_model(model)
    model_u.__dict__.pop(_LAYERS_ATTR, None)
    layers = {id(m) for m in lora_layers(model_u)}
    if not layers:
        raise ConfigError(f"merge_lora: model must contain LoRA layers, got none in {type(model_u).__name__}")
    for name, module in list(model_u.named_modules()):
        if id(module) not in layers:
            continue
        module.merge(safe_merge=True, adapter_names=[adapter_name])
        parent_name, _, child = name.rpartition(".")
        parent = model_u.get_submodule(parent_name) if parent_name else model_u
        setattr(parent, child, module.get_base_layer())
    getattr(model_u, "peft_config", {}).pop(adapter_name, None)
    if not getattr(model_u, "peft_config", True):
        del model_u.peft_config
        if hasattr(model_u, "_hf_peft_config_loaded"):
            model_u._hf_peft_config_loaded = False
    model_u.requires_grad_(False)
    return model


def apply_lora_state(model: torch.nn.Module, state: dict, *, adapter_name: str = "default") -> None:
    """Copy peft-named LoRA weights (``LoraState.unet`` / ``.text_encoders[i]``) into ``model``.

    Raises
    ------
    ConfigError
        If the state and the model's LoRA layers do not match one to one (names or shapes).
    """
    from peft import get_peft_model_state_dict

    model_u = unwrap_model(model)
    if adapter_name not in getattr(model_u, "peft_config", {}):
        raise ConfigError(f"apply_lora_state: model must have the LoRA adapter {adapter_name!r}; call add_lora first")
    own = get_peft_model_state_dict(model_u, adapter_name=adapter_name)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"apply_lora_state: state must match the model's LoRA layers, got {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(shapes)} with other shapes (e.g. {shapes[:2]}); was it saved with the same rank/targets?"
        )
    params = dict(model_u.named_parameters())
    with torch.no_grad():  # in place, so optimizer references to the LoRA parameters stay valid
        for key, value in state.items():
            module, _, which = key.rpartition(".lora_")
            name = f"{module}.lora_{which.split('.')[0]}.{adapter_name}.weight"
            params[name].copy_(value)
