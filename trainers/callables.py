"""User callables named in a config as ``"package.module:function"`` (scorers, patch-quality makers).

The config is the user's own file or command line, so importing the module they name is what they asked
for; nothing from a dataset or a web request ever reaches here.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from ..core.errors import ConfigError

__all__ = ["import_callable"]


def import_callable(spec: str, *, key: str, example: str) -> Callable:
    """``"module:function"`` → the function; ConfigError naming ``key`` when it is not one.

    Args:
        spec: the config value.
        key: the config key, for the message (``"hg_scorer"``).
        example: a valid value to show in the fix (``"my_pkg.rewards:pickscore"``).
    """
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise ConfigError(f"{key} must be a callable 'module:function', got {spec!r}; fix: --set {key}={example}")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key} must name an importable callable, got {spec!r} ({e}); fix: put the module on "
                          "PYTHONPATH or install its package") from e
    if not callable(fn):
        raise ConfigError(f"{key} must be callable, got {spec!r} = {type(fn).__name__}")
    return fn
