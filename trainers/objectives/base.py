"""What every objective is: the ``Objective`` protocol, its inputs (batch + context) and its output.

The loop owns data, models, the optimizer and the backward pass; an objective only turns one
model-ready batch into a loss. The batch it receives (built by ``trainers.latent_cache``) is::

    {"latents": (B, N, C, h, w) float32   # VAE mean × scaling factor; N = 2 → [chosen, rejected]
     "cond": {"encoder_hidden_states": (B, L, D), "added_cond_kwargs": {...} (SDXL only)},
     "keys": list[str], "prompts": list[str], ...the dataset's other fields}
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Cond", "Objective", "ObjectiveContext", "ObjectiveOutput", "OPTIONAL_HOOKS"]

#: Text conditioning as the UNet takes it: tensors with B rows, possibly nested one level
#: (``added_cond_kwargs`` for SDXL).
Cond = Mapping[str, Any]


@dataclass
class ObjectiveContext:
    """Everything an objective may use besides the batch.

    Attributes:
        unet: the policy exactly as the loop calls it for the gradient pass (possibly wrapped by
            accelerate/DDP); LoRA adapters enabled.
        scheduler: the diffusers ``DDPMScheduler`` (``alphas_cumprod``, ``num_train_timesteps``,
            ``prediction_type`` "epsilon" or "v_prediction").
        generator: the one generator for timesteps, noise and prompt dropping; the loop saves its
            state in every checkpoint, so a resumed run draws the same numbers.
        empty_cond: conditioning of the empty prompt ``""`` with one row, or None when no objective
            needs it (``proportion_empty_prompts`` = 0).
        step: the optimizer step being computed (0-based), for schedules inside objectives.
        modules: the objective's own trainable modules (its ``modules`` after ``setup``) as the loop
            prepared them (accelerate: autocast, DDP); call these for the gradient pass. Empty when the
            objective has none.
    """

    unet: torch.nn.Module
    scheduler: Any
    generator: torch.Generator
    empty_cond: Cond | None = None
    step: int = 0
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveOutput:
    """One batch's result.

    Attributes:
        loss: () float32, what the loop back-propagates (already reduced over the batch).
        per_sample: (B,) float32 detached per-sample losses, for logging and weighting.
        metrics: name → () detached tensor; the loop averages them over processes and logs them.
    """

    loss: torch.Tensor
    per_sample: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """A training objective: a callable from (batch, context) to :class:`ObjectiveOutput`.

    Attributes:
        name: registry name (``"sft"``, ``"dpo"``, …).
        images_per_sample: 1 (one image per sample) or 2 (a [chosen, rejected] pair).
        needs_reference: True when the objective runs the adapter-off reference UNet.
    """

    name: str
    images_per_sample: int
    needs_reference: bool

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput: ...


#: Optional members the loop looks up with ``getattr`` (an objective defines only those it needs).
#:
#: ``drive(config, *, callbacks) -> TrainResult``
#:     The objective runs the whole job itself (hg-dpo's stages, train-scorer); ``train`` returns its result.
#: ``check_dataset(records) -> None``
#:     Called with ``validate_dataset``'s records (``[]`` for parquet folders) before any model loads;
#:     raises ``DatasetError`` for data the objective cannot use (e.g. records without a ``pose``).
#: ``prepare_base(base) -> None``
#:     Called with the loaded, frozen ``BaseModel`` before any trainable weights are added.
#: ``setup(unet) -> list[Parameter]``
#:     The objective trains modules of its own: build them from the frozen (unwrapped) UNet under the run's
#:     seed and return their parameters. The loop then optimises exactly these (no LoRA is added unless the
#:     objective sets ``wants_lora = True``; then both train) and needs, with ``setup``:
#:
#:     - ``modules: dict[str, nn.Module]``: the modules holding those parameters. The loop
#:       ``accelerator.prepare``-s each and passes the prepared ones as ``ctx.modules`` (same names).
#:     - ``export(path, *, config: dict, step: int) -> Path``: write the trained modules as the user's
#:       file, atomically. Used for every checkpoint (``<ckpt>/<export_name>``, copied to
#:       ``<out>/<name>-step<N>.safetensors``) and for the final ``<out>/<name>.safetensors``.
#:     - ``restore(path) -> None``: load an exported file back into the modules in place, bit-exactly
#:       (resume); ``export_name``: that file's name inside a checkpoint folder.
#:     - optional ``output_kind`` (words for messages, default "LoRA") and ``resume_identity`` (config keys
#:       a resumed run must keep, besides the loop's ``RESUME_IDENTITY``).
#: ``backward(result, params, accelerator, *, step) -> dict | None``
#:     The objective runs the backward pass itself (mpd: per-task gradients).
OPTIONAL_HOOKS = ("drive", "check_dataset", "prepare_base", "setup", "backward")


#: A registry entry: builds an objective from a ``TrainConfig`` (or None for its defaults).
ObjectiveFactory = Callable[[Any], Objective]
