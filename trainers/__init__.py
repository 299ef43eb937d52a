"""Headless trainer: ``train(config) -> TrainResult``, the ``vitruvian-train`` CLI, objectives and recipes.

Nothing heavy is imported here; diffusers and peft load when training starts.

>>> from vitruvian.trainers import train, TrainResult   # resolved lazily
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["train", "TrainResult"]

if TYPE_CHECKING:
    from .loop import TrainResult
    from .registry import train


def __getattr__(name: str) -> Any:
    if name == "train":  # an objective's run or a recipe's runs (trainers.registry)
        from .registry import train

        return train
    if name == "TrainResult":
        from .loop import TrainResult

        return TrainResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
