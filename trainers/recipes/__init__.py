"""Recipes: runs made of several ``trainers.loop.train`` runs (HG-DPO's curriculum: pairs per stage, a run per
stage, the stage LoRAs merged). An objective turns a batch into a loss; a recipe decides which runs happen.

A recipe is a class with ``name``, a docstring whose first line the CLI shows, and
``run(config, *, callbacks) -> TrainResult``; :data:`RECIPES` maps names to where the class lives, imported only
when the recipe is asked for (hg-dpo's pools and pipelines are heavy).

>>> recipe_names()
('hg-dpo',)
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from ...core.errors import ConfigError

__all__ = ["RECIPES", "Recipe", "recipe_names", "recipe_class", "get_recipe"]

#: name → "module:Class" inside this package.
RECIPES: dict[str, str] = {
    "hg-dpo": "hg_dpo.runner:HGDPOCurriculum",
}


class Recipe(Protocol):
    name: str

    def run(self, config: Any, *, callbacks=()) -> Any: ...


def recipe_names() -> tuple[str, ...]:
    """The registered recipe names, sorted."""
    return tuple(sorted(RECIPES))


def recipe_class(name: str) -> type:
    """The recipe class registered as ``name`` (imports its module); ConfigError listing the names otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"recipe_class: recipe must be one of {', '.join(recipe_names())}, got {name!r}")
    module, cls = RECIPES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_recipe(name: str) -> Recipe:
    """A new instance of the recipe ``name``."""
    return recipe_class(name)()
