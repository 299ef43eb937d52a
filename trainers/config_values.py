"""How a ``TrainConfig`` value is checked and read: types, constraints and ``--set`` strings (no config knowledge).

``check_type`` never converts between kinds (the string "3" is not an int); ``coerce_scalar`` / ``list_items``
parse what a user types after ``--set key=``; ``check_constraints`` reads a field's ``metadata`` (help, choices,
bounds) as :func:`setting` declares it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

__all__ = ["MAX_NAME_BYTES", "GROUPS", "setting", "fix_text", "BAD", "type_name", "check_type", "check_constraints", "short", "show",
           "list_items", "coerce_scalar", "join"]

#: The longest run ``name`` in bytes (a file name holds 255; ``-step<N>.safetensors`` or a job's
#: ``-<id>.safetensors`` take up to 35 of them). The Train node checks the same.
MAX_NAME_BYTES = 200

GROUPS = {
    "run": "run",
    "model": "base model",
    "lora": "LoRA",
    "data": "data",
    "optim": "optimisation",
    "dpo": "DPO",
    "output": "checkpoints and logs",
    "regions": "region masks (mpd, face-guidance)",
    "patch": "patch-dpo",
    "mpd": "mpd (FairHuman)",
    "guidance": "face-guidance (FaceScore v1)",
    "hgdpo": "hg-dpo (curriculum)",
    "scorer": "train-scorer",
    "pose": "pose-adapter (GRPose)",
}


def setting(default: Any, help: str, *, group: str, required: bool = False, choices: tuple = (),
            ge: float | None = None, gt: float | None = None, lt: float | None = None,
            multiple_of: int | None = None, path: bool = False, keywords: tuple[str, ...] = ()) -> Any:
    """A dataclass field whose ``metadata`` holds its help text and constraints.

    ``path`` fields are expanded (``~``) and made absolute by ``load_config`` (relative to the config
    file's folder for values read from a file); ``keywords`` are values of a path field that are not
    paths (``resume = "latest"``). ``required`` string fields must not be empty.
    """
    if group not in GROUPS:
        raise ValueError(f"setting: group must be one of {sorted(GROUPS)}, got {group!r}")
    meta = {"help": help, "group": group, "required": required, "choices": tuple(choices), "ge": ge,
            "gt": gt, "lt": lt, "multiple_of": multiple_of, "path": path, "keywords": tuple(keywords)}
    return field(default=default, metadata=meta)


def fix_text(f: dataclasses.Field) -> str:
    """The ``fix:`` hint for field ``f``: how to set it, with its default."""
    if f.metadata["required"]:
        return f"--set {f.name}=... or {f.name} = \"...\" in the config file"
    default = ",".join(f.default) if isinstance(f.default, tuple) else show(f.default)
    return f"--set {f.name}=<value> (default {default})"


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return "a list of " + {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(item, str(item))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def check_type(key: str, value: Any, tp: Any) -> tuple[Any, str | None]:
    """``(normalised value, None)`` or ``(value, problem)``; never converts between kinds (str -> int)."""
    if typing.get_origin(tp) is tuple:
        (item_tp, *_) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            items = [check_type(key, v, item_tp) for v in value]
            if all(p is None for _, p in items):
                return tuple(v for v, _ in items), None
        return value, f"{key} must be {type_name(tp)}, got {value!r}"
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value), None
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    return value, None if ok else f"{key} must be {type_name(tp)}, got {type(value).__name__} {value!r}"


def check_constraints(f: dataclasses.Field, value: Any) -> str | None:
    m = f.metadata
    kind = "an integer" if isinstance(value, int) else "a number"
    if m["required"] and value == "":
        return f"{f.name} must be set ({m['help'].rstrip('.')}), got ''"
    if m["choices"] and value not in m["choices"]:
        return f"{f.name} must be one of {', '.join(map(repr, m['choices']))}, got {value!r}"
    if m["ge"] is not None and m["lt"] is not None and not m["ge"] <= value < m["lt"]:
        return f"{f.name} must be {kind} in [{m['ge']}, {m['lt']}), got {value!r}"
    if m["ge"] is not None and value < m["ge"]:
        return f"{f.name} must be {kind} >= {m['ge']}, got {value!r}"
    if m["gt"] is not None and not value > m["gt"]:
        return f"{f.name} must be {kind} > {m['gt']}, got {value!r}"
    if m["multiple_of"] is not None and value % m["multiple_of"]:
        return f"{f.name} must be a multiple of {m['multiple_of']}, got {value!r}"
    if isinstance(value, float) and value != value:  # NaN passes every comparison above
        return f"{f.name} must be a number, got nan"
    return None


def short(value: str, limit: int = 80) -> str:
    """``repr`` of a value cut to ``limit`` characters, with its length (a 100 KB path is no message)."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def list_items(raw: str) -> list[str] | None:
    """The items of a ``--set`` list as strings: ``a,b,c``, or a TOML/JSON array ``[1, 2]`` / ``["a", "b"]``
    (also ``[a, b]`` unquoted); None for a bracketed value that is no flat array."""
    text = raw.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return [p.strip() for p in text.split(",")] if text else []
    try:
        import json

        items = json.loads(text)  # a JSON array is a TOML array for the values a config holds
    except ValueError:
        items = [p.strip() for p in text[1:-1].split(",") if p.strip()]  # [a, b] or a trailing comma
        items = [p[1:-1] if len(p) >= 2 and p[0] == p[-1] and p[0] in "'\"" else p for p in items]
    if not isinstance(items, list) or any(isinstance(i, (list, dict)) for i in items):
        return None
    return [str(i).lower() if isinstance(i, bool) else str(i) for i in items]


BAD = object()
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def coerce_scalar(tp: Any, raw: str) -> Any:
    try:
        if tp is bool:
            low = raw.lower()
            return True if low in _TRUE else False if low in _FALSE else BAD
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
    except ValueError:
        return BAD
    return raw


def join(where: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{where}: {problems[0]}"
    return f"{where}: {len(problems)} invalid settings:\n  " + "\n  ".join(problems)
