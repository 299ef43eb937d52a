"""The DDPM forward process of the UNet families (SD1.5, SDXL): x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, ε- or v-targets.

Shapes: x0, noise, x_t, target, pred are (B, C, h, w); t is (B,) int64 in {0, …, T−1}.

    >>> from diffusers import DDPMScheduler                         # doctest: +SKIP
    >>> process = DDPMProcess(DDPMScheduler(num_train_timesteps=1000))  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["DDPMProcess"]


class DDPMProcess:
    """The forward process of a diffusers ``DDPMScheduler`` (``alphas_cumprod``, ``prediction_type`` "epsilon" or
    "v_prediction"); :class:`~.base.ForwardProcess` for the UNet families."""

    #: latent cells per model token side: a UNet sees every cell (region masks are used as they are)
    patch = 1

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler

    def sample_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """t ~ U{0, …, T−1} for ``batch`` samples → (batch,) int64 on the generator's device."""
        T = int(self.scheduler.config.num_train_timesteps)
        return torch.randint(0, T, (batch,), generator=generator, device=generator.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, target)``: target = ε ("epsilon") or v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 ("v_prediction")."""
        t = t.to(x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return x_t, noise
        if kind == "v_prediction":
            return x_t, self.scheduler.get_velocity(x0, noise, t)
        raise ValueError(f"DDPMProcess: scheduler prediction_type must be 'epsilon' or 'v_prediction', got {kind!r}; "
                         "set it in the base model's scheduler/scheduler_config.json")

    def predict(self, model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
        """The UNet's output (ε̂ or v̂) for ``x_t`` at ``t`` under ``cond`` (B rows)."""
        return model(x_t, t.to(x_t.device), **cond, return_dict=False)[0]

    def signal_level(self, t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """ᾱ_t, (B,) float32."""
        device = device or t.device
        return self.scheduler.alphas_cumprod.to(device, torch.float32)[t.to(device)]

    def predicted_x0(self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂0 from the model output (ε̂ or v̂): (B, C, h, w) float32."""
        a = self.signal_level(t, x_t.device).view(-1, 1, 1, 1)
        if self.scheduler.config.prediction_type == "v_prediction":
            return a.sqrt() * x_t.float() - (1 - a).sqrt() * pred.float()
        return (x_t.float() - (1 - a).sqrt() * pred.float()) / a.sqrt()

    def target_towards(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target that denoises ``x_t`` to ``x0`` at ``t`` (face guidance): ε* or v*, float32."""
        a = self.signal_level(t, x_t.device).view(-1, 1, 1, 1)
        eps_star = (x_t.float() - a.sqrt() * x0.float()) / (1.0 - a).sqrt()
        if self.scheduler.config.prediction_type == "v_prediction":
            return a.sqrt() * eps_star - (1.0 - a).sqrt() * x0.float()
        return eps_star
