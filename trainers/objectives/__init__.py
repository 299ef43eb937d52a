"""Training objectives: the ``Objective`` protocol and the registry the loop looks names up in.

An objective turns one model-ready batch into a loss (plus optional hooks, ``objectives.base``); runs made of
several runs are recipes (``trainers.recipes``); ``trainers.registry`` lists both for the CLI.

>>> objective_names()
('dpo', 'face-guidance', 'hg-dpo-stage', 'mpd', 'patch-dpo', 'pose-adapter', 'sft', 'train-scorer')
>>> get_objective("dpo").images_per_sample
2
"""
from __future__ import annotations

from typing import Any

from ...core.errors import ConfigError
from .base import Cond, Objective, ObjectiveContext, ObjectiveFactory, ObjectiveOutput
from .dpo import DPO
from .face_guidance import FaceGuidance
from .hg_dpo import HGDPO
from .mpd import MPD
from .patch_dpo import PatchDPO
from .pose_adapter import PoseAdapterObjective
from .sft import SFT
from .train_scorer import TrainScorer

__all__ = [
    "OBJECTIVES",
    "Cond",
    "Objective",
    "ObjectiveContext",
    "ObjectiveOutput",
    "ObjectiveFactory",
    "objective_names",
    "get_objective",
    "SFT",
    "DPO",
    "PatchDPO",
    "MPD",
    "FaceGuidance",
    "HGDPO",
    "TrainScorer",
    "PoseAdapterObjective",
]

#: name → factory(config or None) → Objective.
OBJECTIVES: dict[str, ObjectiveFactory] = {
    "sft": SFT.from_config,
    "dpo": DPO.from_config,
    "patch-dpo": PatchDPO.from_config,
    "mpd": MPD.from_config,
    "face-guidance": FaceGuidance.from_config,
    "hg-dpo-stage": HGDPO.from_config,
    "train-scorer": TrainScorer.from_config,
    "pose-adapter": PoseAdapterObjective.from_config,
}


def objective_names() -> tuple[str, ...]:
    """The registered objective names, sorted."""
    return tuple(sorted(OBJECTIVES))


def get_objective(name: str, config: Any = None) -> Objective:
    """Build the objective ``name`` from a ``TrainConfig`` (None → the objective's defaults).

    Raises:
        ConfigError: ``name`` is not registered; the message lists the registered names.
    """
    try:
        factory = OBJECTIVES[name]
    except KeyError:
        raise ConfigError(
            f"get_objective: objective must be one of {', '.join(objective_names())}, got {name!r}"
        ) from None
    try:
        return factory(config)
    except ValueError as e:
        raise ConfigError(f"get_objective: bad settings for objective {name!r}: {e}") from e
