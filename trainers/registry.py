"""What ``vitruvian-train <name>`` runs: an objective (one ``train()`` run) or a recipe (several composed runs).

The CLI's subcommands, the config's ``objective`` check and the Train node's list all read the names here.

>>> names()
('dpo', 'face-guidance', 'hg-dpo', 'hg-dpo-stage', 'mpd', 'patch-dpo', 'pose-adapter', 'sft', 'train-scorer')
>>> output("train-scorer")
('scorer', '{name}-scorer.safetensors')
"""
from __future__ import annotations

from typing import Any

from ..core.errors import ConfigError
from .objectives import OBJECTIVES, objective_names
from .recipes import RECIPES, get_recipe, recipe_class, recipe_names

__all__ = ["names", "summary", "output", "train"]


def names() -> tuple[str, ...]:
    """Every objective and recipe name, sorted."""
    return tuple(sorted(objective_names() + recipe_names()))


def _owner(name: str) -> Any:
    if name in RECIPES:
        return recipe_class(name)
    if name in OBJECTIVES:
        factory = OBJECTIVES[name]  # often a bound classmethod (``DPO.from_config``): its class documents it
        return getattr(factory, "__self__", factory)
    raise ConfigError(f"objective must be one of {', '.join(names())}, got {name!r}")


def summary(name: str) -> str:
    """First docstring line of the objective's factory or class, or of the recipe's class; '' when none."""
    owner = _owner(name)
    factory = OBJECTIVES.get(name)
    doc = (getattr(factory, "__doc__", None) if factory is not None else None) or getattr(owner, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def output(name: str) -> tuple[str, str]:
    """``(kind, file name pattern)`` of what ``name`` writes into ``out``: ``("LoRA", "{name}.safetensors")``
    unless its class says otherwise (``output_kind``, ``output_file``). Nothing is built."""
    owner = _owner(name)
    return (str(getattr(owner, "output_kind", "LoRA")), str(getattr(owner, "output_file", "{name}.safetensors")))


def train(config, *, callbacks=()):
    """Run ``config.objective``: a recipe's ``run`` or one ``trainers.loop.train`` run. Returns its ``TrainResult``."""
    if config.objective in RECIPES:
        return get_recipe(config.objective).run(config, callbacks=callbacks)
    from .loop import train as train_objective

    return train_objective(config, callbacks=callbacks)
