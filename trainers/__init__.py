"""Headless trainer: ``train(config) -> TrainResult``, the ``vitruvian-train`` CLI, and objectives.

Nothing heavy is imported here; diffusers and peft load when training starts.

>>> from vitruvian.trainers import train, TrainResult   # resolved lazily
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["train", "TrainResult"]

if TYPE_CHECKING:
    from .loop import TrainResult, train


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
