"""Model families the trainer loads and trains (``base.Family``): the SD UNets, Flux.1, Chroma and SD3.5.

>>> sorted(FAMILIES)
['chroma', 'flux', 'sd', 'sd3']
>>> family_of("sdxl").name
'sd'
"""
from __future__ import annotations

from pathlib import Path

from ...core.errors import ConfigError
from .base import BaseModel, Family, ForwardProcess
from .chroma import Chroma
from .flux import Flux
from .sd import StableDiffusion
from .sd3 import SD3

__all__ = ["FAMILIES", "BaseModel", "Family", "ForwardProcess", "family_of", "detect"]

#: name → the family. Detection asks them in this order (SD last: it explains any file nobody claims).
FAMILIES: dict[str, Family] = {"flux": Flux(), "chroma": Chroma(), "sd3": SD3(), "sd": StableDiffusion()}


def family_of(kind: str) -> Family:
    """The family that loads models of ``kind`` ("sd15", "sdxl", …)."""
    for family in FAMILIES.values():
        if kind in family.kinds:
            return family
    known = sorted(k for f in FAMILIES.values() for k in f.kinds)
    raise ConfigError(f"family_of: kind must be one of {', '.join(known)}, got {kind!r}")


def detect(source: Path) -> tuple[Family, str, dict | None]:
    """``(family, kind, shapes)`` of a diffusers folder (``shapes`` None) or a single file (its tensor shapes).

    Each family is asked in turn; one that recognises a variant it refuses (SD2, an inpainting UNet, a refiner)
    raises ConfigError saying so, and the last family's error explains a file none of them claims.
    """
    from ..model_detect import read_shapes

    shapes = None if source.is_dir() else read_shapes(source)
    for family in FAMILIES.values():
        kind = family.folder_kind(source) if shapes is None else family.shapes_kind(shapes, source=str(source))
        if kind is not None:
            return family, kind, shapes
    raise ConfigError(f"load_base: base {str(source)!r} must be a model of a known family "
                      f"({', '.join(FAMILIES)}), got one none of them recognises")
