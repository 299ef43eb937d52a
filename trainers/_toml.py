"""Read a training config TOML file (stdlib ``tomllib``) and write one back (``--print-config``).

The writer handles only what ``TrainConfig`` holds: str, int, float, bool and lists of str, under a
``[train]`` table, so ``vitruvian-train dpo ... --print-config > run.toml`` gives a file ``--config``
reads back unchanged.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

__all__ = ["read_toml_table", "format_toml"]

TABLE = "train"


def read_toml_table(path: Path) -> dict[str, Any]:
    """The settings in ``path``: its ``[train]`` table, or its top-level keys when there is none.

    Raises ``ConfigError`` for a missing or unparsable file, or for top-level keys beside ``[train]``.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(f"load_config: config_file needs Python >= 3.11 (tomllib) or the tomli package, "
                              f"got Python without either for {str(path)!r}; fix: pip install tomli") from None
    if not path.is_file():
        raise ConfigError(f"load_config: config_file must be an existing TOML file, got {str(path)!r} (not found)")
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"load_config: config_file must be valid TOML, got {str(path)!r}: {e}") from None
    if isinstance(doc.get(TABLE), dict):
        extra = [k for k in doc if k != TABLE]
        if extra:
            raise ConfigError(f"load_config: {path.name} must keep every setting inside [{TABLE}] when it has that "
                              f"table, got top-level key(s) {', '.join(map(repr, extra))}; fix: move them under "
                              f"[{TABLE}] or drop the [{TABLE}] header")
        return dict(doc[TABLE])
    return dict(doc)


def format_toml(values: Mapping[str, Any], comments: Mapping[str, str] = {}) -> str:
    """``values`` as a ``[train]`` TOML table, each key preceded by ``# comments[key]`` when given."""
    lines = [f"[{TABLE}]"]
    for key, value in values.items():
        if key in comments:
            lines.append(f"# {comments[key]}")
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if value != value else ("inf" if value > 0 else "-inf")
        return repr(value)  # '5000.0', '1e-05': both valid TOML floats
    if isinstance(value, str):
        # a JSON string (non-ASCII kept, so no surrogate pairs) is a valid TOML basic string, except for DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"format_toml: values must be str, int, float, bool or lists of them, got {type(value).__name__}")
