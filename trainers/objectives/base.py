"""What every objective is: the ``Objective`` protocol, its inputs (batch + context) and its output.

The loop owns data, models, the optimizer and the backward pass; an objective only turns one
model-ready batch into a loss. The batch it receives (built by ``trainers.latent_cache``) is::

    {"latents": (B, N, C, h, w) float32   # VAE mean × scaling factor; N = 2 → [chosen, rejected]
     "cond": {"encoder_hidden_states": (B, L, D), "added_cond_kwargs": {...} (SDXL only)},
     "keys": list[str], "prompts": list[str], ...the dataset's other fields}
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Cond", "Objective", "ObjectiveContext", "ObjectiveOutput", "ChecksDataset", "PreparesBase", "OwnsModules",
           "OwnsBackward"]

#: Text conditioning as the UNet takes it: tensors with B rows, possibly nested one level
#: (``added_cond_kwargs`` for SDXL).
Cond = Mapping[str, Any]


@dataclass
class ObjectiveContext:
    """Everything an objective may use besides the batch.

    Attributes:
        unet: the policy exactly as the loop calls it for the gradient pass (possibly wrapped by
            accelerate/DDP); LoRA adapters enabled. None for an objective with ``needs_base = False``.
        scheduler: the base's training scheduler (SD: the diffusers ``DDPMScheduler``).
        process: the family's forward process (``trainers.families.base.ForwardProcess``: draw t, noise x0,
            the target, call the model, x̂0); built from ``scheduler`` (DDPM) when not given.
        generator: the one generator for timesteps, noise and prompt dropping; the loop saves its
            state in every checkpoint, so a resumed run draws the same numbers.
        empty_cond: conditioning of the empty prompt ``""`` with one row, or None when no objective
            needs it (``proportion_empty_prompts`` = 0).
        step: the optimizer step being computed (0-based), for schedules inside objectives.
        modules: the objective's own trainable modules (its ``modules`` after ``setup``) as the loop
            prepared them (accelerate: autocast, DDP); call these for the gradient pass. Empty when the
            objective has none.
    """

    unet: torch.nn.Module | None
    scheduler: Any
    generator: torch.Generator
    empty_cond: Cond | None = None
    step: int = 0
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)
    process: Any = None

    def __post_init__(self):
        if self.process is None and self.scheduler is not None:
            from ..families.ddpm import DDPMProcess

            self.process = DDPMProcess(self.scheduler)


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


# -- optional hooks: an objective implements a protocol below when it needs the loop to do more --------------
# The loop asks ``isinstance(objective, ChecksDataset)`` etc. (runtime-checkable protocols): a hook is a
# method with the right name, nothing to register.


@runtime_checkable
class ChecksDataset(Protocol):
    """Refuses data it cannot use before any model loads (e.g. pose-adapter: records without a ``pose``)."""

    def check_dataset(self, records: Sequence[Any]) -> None:
        """``records``: ``validate_dataset``'s records (``[]`` for parquet folders); raises ``DatasetError``."""


@runtime_checkable
class PreparesBase(Protocol):
    """Changes the loaded, frozen ``BaseModel`` before trainable weights are added (hg-dpo: merge the previous
    stages' LoRAs; pose-adapter: take the VAE decoder)."""

    def prepare_base(self, base: Any) -> None: ...


@runtime_checkable
class OwnsModules(Protocol):
    """Trains modules of its own instead of (or, with ``wants_lora = True``, beside) a LoRA on the UNet.

    The loop calls :meth:`setup` with the frozen, unwrapped UNet (None when ``needs_base`` is False) under the
    run's seed and optimises exactly the returned parameters; it ``accelerator.prepare``-s each of
    :attr:`modules` and passes the prepared ones as ``ctx.modules`` (same names). :meth:`export` writes the
    user's file atomically — for every checkpoint (``<ckpt>/<export_name>``, copied to
    ``<out>/<name>-step<N>.safetensors``) and for the final ``<out>/<name>.safetensors`` — and :meth:`restore`
    loads one back bit-exactly (resume). Optional attributes: ``wants_lora`` (default False), ``needs_base``
    (default True: False runs without a diffusion model, batches carry ``pixels``), ``output_kind`` (words for
    messages, default "LoRA"), ``resume_identity`` (config keys a resumed run must keep).
    """

    export_name: str

    @property
    def modules(self) -> dict[str, torch.nn.Module]: ...

    def setup(self, unet: torch.nn.Module | None) -> list[torch.nn.Parameter]: ...

    def export(self, path: Any, *, config: dict, step: int) -> Any: ...

    def restore(self, path: Any) -> None: ...


@runtime_checkable
class OwnsBackward(Protocol):
    """Runs the backward pass itself (mpd: per-task gradients) instead of ``accelerator.backward(loss)``; returns
    extra metrics or None."""

    def backward(self, result: ObjectiveOutput, params: list, accelerator: Any, step: int = 0) -> dict | None: ...


#: A registry entry: builds an objective from a ``TrainConfig`` (or None for its defaults).
ObjectiveFactory = Callable[[Any], Objective]
