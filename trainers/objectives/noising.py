"""What every objective shares besides the family's forward process (``ctx.process``): drawing ε, and the
conditioning helpers (repetition, prompt dropping) that treat every family's conditioning alike: a dict of
(B, …) tensors, possibly nested one level (SDXL's ``added_cond_kwargs``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Cond

__all__ = [
    "sample_noise",
    "map_cond",
    "repeat_cond",
    "drop_prompts",
]


def sample_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε ~ N(0, I) with ``like``'s shape, float32, drawn on the generator's device then moved."""
    eps = torch.randn(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(like.device)


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
