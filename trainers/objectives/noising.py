"""The forward process every objective shares: draw (t, ε), noise x0, build the target, call the UNet.

Also the conditioning helpers (row selection, repetition, prompt dropping) that treat SD1.5 and SDXL
conditioning alike: a dict of (B, …) tensors, with SDXL's ``added_cond_kwargs`` nested one level.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Cond

__all__ = [
    "sample_timesteps",
    "sample_noise",
    "noisy_latents_and_target",
    "predict",
    "map_cond",
    "repeat_cond",
    "drop_prompts",
]


def sample_timesteps(batch: int, scheduler, generator: torch.Generator) -> torch.Tensor:
    """t ~ U{0, …, T−1} for ``batch`` samples → (batch,) int64 on the generator's device."""
    T = int(scheduler.config.num_train_timesteps)
    return torch.randint(0, T, (batch,), generator=generator, device=generator.device)


def sample_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε ~ N(0, I) with ``like``'s shape, float32, drawn on the generator's device then moved."""
    eps = torch.randn(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(like.device)


def noisy_latents_and_target(
    scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε and the regression target for the scheduler's prediction type.

    Args:
        scheduler: diffusers ``DDPMScheduler``.
        x0: (B, C, h, w) clean latents. noise: (B, C, h, w) ε. t: (B,) int64 timesteps.

    Returns:
        ``(x_t, target)``, both (B, C, h, w): target = ε ("epsilon") or
        v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 ("v_prediction").
    """
    t = t.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return x_t, noise
    if kind == "v_prediction":
        return x_t, scheduler.get_velocity(x0, noise, t)
    raise ValueError(
        f"noisy_latents_and_target: scheduler prediction_type must be 'epsilon' or 'v_prediction', "
        f"got {kind!r}; set it in the base model's scheduler/scheduler_config.json"
    )


def predict(unet: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
    """The UNet's output (ε̂ or v̂) for (B, C, h, w) ``x_t`` at (B,) ``t`` under ``cond`` (B rows)."""
    out = unet(x_t, t.to(x_t.device), **cond, return_dict=False)
    return out[0]


def map_cond(fn: Callable[..., torch.Tensor], *conds: Cond) -> dict:
    """Apply ``fn`` leaf-wise to one or more conditionings of the same structure."""
    first = conds[0]
    return {
        k: map_cond(fn, *(c[k] for c in conds)) if isinstance(first[k], dict) else fn(*(c[k] for c in conds))
        for k in first
    }


def repeat_cond(cond: Cond, times: int) -> dict:
    """Stack ``times`` copies along the batch: rows [c_0 … c_{B−1}, c_0 … c_{B−1}, …]."""
    return map_cond(lambda x: torch.cat([x] * times), cond)


def drop_prompts(cond: Cond, empty_cond: Cond | None, proportion: float, generator: torch.Generator) -> dict:
    """Replace each row's conditioning by the empty prompt's with probability ``proportion``.

    Classifier-free-guidance dropout (the Diffusion-DPO launchers use 0.2). ``empty_cond`` has one
    row; the draw uses ``generator`` (one uniform per row) so it is reproducible across resumes.
    SDXL's ``time_ids`` (image size and crop) stay the row's own.
    """
    if proportion <= 0.0:
        return dict(cond)
    if empty_cond is None:
        raise ValueError("drop_prompts: proportion > 0 needs the empty prompt's conditioning, got None")
    batch = next(_leaves(cond)).shape[0]
    drop = torch.rand(batch, generator=generator, device=generator.device) < proportion

    def pick(x, e):
        mask = drop.to(x.device).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, e.to(x.device, x.dtype).expand_as(x), x)

    dropped = map_cond(pick, cond, empty_cond)
    added = cond.get("added_cond_kwargs")
    if isinstance(added, dict) and "time_ids" in added:  # SDXL size/crop conditioning is not the prompt's
        dropped["added_cond_kwargs"]["time_ids"] = added["time_ids"]
    return dropped


def _leaves(cond: Cond):
    for v in cond.values():
        if isinstance(v, dict):
            yield from _leaves(v)
        else:
            yield v
