"""The ``Family`` seam: everything the trainer knows about one kind of diffusion model, in one place.

A family owns (shapes in the methods' docstrings):

- **finding and loading a base**: whether a diffusers folder or a single-file checkpoint's tensor names belong
  to it (``folder_kind`` / ``shapes_kind``), and ``load(...)`` → a frozen ``BaseModel``;
- **prompts**: ``encode_prompt(base, prompts, ...)`` → the model's text conditioning (a dict of B-row tensors,
  what the latent cache stores);
- **latents**: ``encode_images`` / ``decode_latents`` (the VAE and the latent scaling);
- **the forward process**: ``process(scheduler)`` → a :class:`ForwardProcess` (how t and x_t are drawn, the
  regression target, how the model is called, x̂0 from a prediction);
- **LoRA**: ``lora_targets`` (module-name suffixes) and ``lora_prefix`` (the key format ComfyUI loads for it,
  ``core.lora_io``).

Adding a family is one module beside ``sd.py`` plus its shipped configs in ``trainers/model_configs/`` and one
line in ``trainers.families.FAMILIES`` (docs/ARCHITECTURE.md, "Trainer seams").
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["BaseModel", "Family", "ForwardProcess"]

Cond = Mapping[str, Any]


@runtime_checkable
class ForwardProcess(Protocol):
    """How a family noises latents and reads its model's output; objectives use only this.

    Shapes: x0, noise, x_t, target, pred are (B, C, h, w); t is (B,) (int64 timesteps for DDPM families).
    ``patch``: latent cells per model token side (1 for a UNet, 2 for Flux/SD3), for region masks.
    """

    patch: int

    def sample_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """B training timesteps from the family's training distribution, on the generator's device."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, target)``: the noised latents and what the model regresses onto."""

    def predict(self, model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The model's prediction for ``x_t`` at ``t`` under ``cond`` (B rows)."""

    def predicted_x0(self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean latents the prediction implies (float32)."""

    def signal_level(self, t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """(B,) float32 share of signal in x_t (DDPM: ᾱ_t) on ``device`` (default t's), for objectives that weigh
        steps by it."""

    def target_towards(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target that denoises ``x_t`` to ``x0`` (face guidance's ε*), float32."""


@runtime_checkable
class Family(Protocol):
    """A kind of diffusion model the trainer can load and train (see the module docstring)."""

    name: str
    kinds: tuple[str, ...]
    lora_targets: tuple[str, ...]

    def folder_kind(self, folder: Path) -> str | None:
        """The kind of a diffusers folder if it is this family's (raising ConfigError for a variant it refuses),
        else None."""

    def shapes_kind(self, shapes: Mapping[str, tuple]) -> str | None:
        """The kind of a single file (its tensor names → shapes) if it is this family's, else None."""

    def load(self, source: Path, kind: str, *, tokenizer: str, dtype: torch.dtype, shapes: Mapping | None) -> Any:
        """The frozen ``BaseModel`` from a folder (``shapes`` None) or a single file."""

    def encode_prompt(self, base: Any, prompts: Sequence[str], **options) -> dict:
        """The model's text conditioning for B prompts."""

    def encode_images(self, base: Any, pixels: torch.Tensor, *, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → model-space latents."""

    def decode_latents(self, base: Any, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents → (B, 3, H, W) in about [-1, 1]."""

    def process(self, scheduler: Any, config: Any = None) -> ForwardProcess:
        """The forward process of a base with this training ``scheduler`` (``BaseModel.scheduler``); ``config``,
        the run's settings, may tune it (flow families: resolution, ``flow_shift``, guidance)."""

    def pipelines(self, base: Any) -> tuple:
        """(text-to-image, image-to-image) diffusers pipelines on the base's modules (HG-DPO's image pools)."""

    def save_lora(self, path: Path, model: torch.nn.Module, *, config: dict, step: int, kind: str,
                  final: bool = False) -> Path:
        """Write the LoRA of ``model`` (peft layers from ``add_lora``) in the key format ComfyUI loads for this
        family, atomically; ``final``: the run's output file (not a resume checkpoint), which a family may write
        for its ecosystem's readers at the cost of bit-exact reloading (SD3.5 folds alpha into B)."""


@dataclass
class BaseModel:
    """A loaded base: frozen fp32 (or ``dtype``) diffusers/transformers modules.

    Attributes
    ----------
    kind : str
        ``"sd15"`` or ``"sdxl"`` (the family's kinds).
    family : Family
        What knows this kind of model: prompt and image encoding, the forward process, LoRA targets.
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
    family: Any
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
