"""The rectified-flow (flow-matching) forward process of the transformer families (Flux.1, Chroma, SD3.5, …).

x_t = (1 − σ)·x0 + σ·ε, the model regresses the velocity v = ε − x0, x̂0 = x_t − σ·v̂. σ ∈ (0, 1) is drawn from
the families' training distribution: u ~ N(mean, std²), σ = sigmoid(u) (logit-normal, SD3 paper §5.1, the
choice of Flux and SD3 trainers), then shifted, σ' = s·σ / (1 + (s − 1)·σ), which moves mass to noisier
steps for larger images. ``shift="auto"`` derives s from the image's token count as Flux does
(log s = μ, linear in the sequence length from (256, 0.5) to (4096, 1.15): FluxPipeline's
``calculate_shift``); a number fixes it (SD3.5: 3.0). A family's model takes σ scaled by ``timestep_scale``
(Flux: 1 — the transformer multiplies by 1000 itself; SD3: 1000).

Shapes: x0, noise, x_t, target, pred are (B, C, h, w) latents; t is (B,) float32 σ ∈ (0, 1).

    >>> import torch
    >>> p = FlowMatchProcess(call=lambda m, x, s, c: m(x), shift=1.0)
    >>> x0, eps, s = torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.tensor([0.25])
    >>> x_t, v = p.add_noise(x0, eps, s)
    >>> float(x_t[0, 0, 0, 0]), float(v[0, 0, 0, 0])
    (0.75, -1.0)
    >>> float(p.predicted_x0(x_t, v, s)[0, 0, 0, 0])
    1.0
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["FlowMatchProcess", "flux_shift", "resolve_shift"]

#: a prediction call: (model, x_t (B, C, h, w), σ·timestep_scale (B,), cond) → (B, C, h, w)
Call = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Mapping[str, Any]], torch.Tensor]


def flux_shift(image_tokens: int, *, base: tuple[int, float] = (256, 0.5), top: tuple[int, float] = (4096, 1.15)) -> float:
    """Flux's resolution-dependent shift s = exp(μ), μ linear in the image token count (1024² → 4096 tokens).

    >>> round(flux_shift(256), 4), round(flux_shift(4096), 4)
    (1.6487, 3.1582)
    """
    slope = (top[1] - base[1]) / (top[0] - base[0])
    return math.exp(base[1] + slope * (image_tokens - base[0]))


def resolve_shift(schedule: Mapping[str, Any], config: Any, default: float) -> float:
    """The σ shift of a run: ``config.flow_shift`` when set, else the schedule's own — by resolution when it shifts
    dynamically (its ``base_/max_image_seq_len`` and ``base_/max_shift``, Flux's values when absent), else its
    ``shift`` (``default`` when absent)."""
    shift = getattr(config, "flow_shift", "auto")
    if shift not in ("auto", None, ""):
        return float(shift)
    if schedule.get("use_dynamic_shifting"):
        tokens = (int(getattr(config, "resolution", 1024) or 1024) // 16) ** 2
        return flux_shift(tokens, base=(schedule.get("base_image_seq_len", 256), schedule.get("base_shift", 0.5)),
                          top=(schedule.get("max_image_seq_len", 4096), schedule.get("max_shift", 1.15)))
    return float(schedule.get("shift", default))


class FlowMatchProcess:
    """:class:`~.base.ForwardProcess` of rectified flow; see the module docstring.

    Args:
        call: how the family calls its model (packing, ids, guidance); returns the velocity (B, C, h, w).
        shift: the σ shift s (≥ 1 moves mass to noise; 1 = none).
        logit_mean, logit_std: the logit-normal's parameters (SD3/Flux: 0 and 1).
        timestep_scale: what σ is multiplied by before the model sees it.
        patch: latent cells per token side (Flux, SD3: 2); region masks are made constant per token.
    """

    def __init__(self, *, call: Call, shift: float, logit_mean: float = 0.0, logit_std: float = 1.0,
                 timestep_scale: float = 1.0, patch: int = 1):
        if not (isinstance(shift, (int, float)) and shift > 0 and math.isfinite(shift)):
            raise ValueError(f"FlowMatchProcess: shift must be a finite number > 0, got {shift!r}")
        if not logit_std > 0:
            raise ValueError(f"FlowMatchProcess: logit_std must be > 0, got {logit_std!r}")
        self.call, self.shift = call, float(shift)
        self.logit_mean, self.logit_std, self.timestep_scale = float(logit_mean), float(logit_std), float(timestep_scale)
        self.patch = int(patch)

    def sample_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """σ for ``batch`` samples: shifted logit-normal, (batch,) float32 on the generator's device."""
        u = torch.randn(batch, generator=generator, device=generator.device) * self.logit_std + self.logit_mean
        sigma = torch.sigmoid(u)
        s = self.shift
        return (s * sigma / (1 + (s - 1) * sigma)).float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, v)``: x_t = (1 − σ)·x0 + σ·ε in x0's dtype, v = ε − x0."""
        s = t.to(x0.device, torch.float32).view(-1, *([1] * (x0.ndim - 1)))
        x_t = ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)
        return x_t, (noise.float() - x0.float()).to(x0.dtype)

    def predict(self, model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
        """The model's velocity for ``x_t`` at σ = ``t`` under ``cond`` (B rows)."""
        return self.call(model, x_t, t.to(x_t.device, torch.float32) * self.timestep_scale, cond)

    def signal_level(self, t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """The share of signal in x_t's variance, (1 − σ)² / ((1 − σ)² + σ²): the DDPM ᾱ of the same SNR."""
        s = t.to(device or t.device, torch.float32)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s ** 2)

    def predicted_x0(self, x_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂0 = x_t − σ·v̂, float32."""
        s = t.to(x_t.device, torch.float32).view(-1, *([1] * (x_t.ndim - 1)))
        return x_t.float() - s * pred.float()

    def target_towards(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v* = (x_t − x0) / σ: the velocity whose x̂0 is ``x0`` (face guidance), float32."""
        s = t.to(x_t.device, torch.float32).view(-1, *([1] * (x_t.ndim - 1)))
        return (x_t.float() - x0.float()) / s
