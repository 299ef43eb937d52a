"""``vitruvian-train <objective> [--config FILE.toml] [--set key=value ...] [--resume PATH|latest]``.

Also ``python -m vitruvian.trainers``. Objectives are the subcommands, taken from the registry
``vitruvian.trainers.objectives``; every subcommand takes the same options, and ``--help`` lists every
``TrainConfig`` setting with its help text and default, generated from the dataclass fields.

Exit status: 0 after training (or ``--print-config``), 2 for a bad command line, config, dataset or
model path (the message goes to stderr, without a traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from ..core.errors import VitruvianError
from ._toml import format_toml
from .config import GROUPS, TrainConfig, _objective_names, load_config

__all__ = ["build_parser", "main", "settings_help"]

PROG = "vitruvian-train"


def settings_help() -> str:
    """One line per ``TrainConfig`` field, grouped: ``  key  help (default: value)``."""
    fields = dataclasses.fields(TrainConfig)
    width = max(len(f.name) for f in fields) + 2
    lines = ["settings (--set key=value, or key = value in --config FILE.toml; --set wins over the file):"]
    for group, title in GROUPS.items():
        members = [f for f in fields if f.metadata.get("group") == group]
        if members:
            lines.append(f"\n{title}:")
        for f in members:
            tail = "(required)" if f.metadata["required"] else f"(default: {_default_text(f.default)})"
            lines.append(f"  {f.name:<{width}}{f.metadata['help']} {tail}")
    return "\n".join(lines)


def build_parser(objectives: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``objectives`` defaults to the registry's names (none while it is absent)."""
    names = _objective_names() if objectives is None else tuple(objectives)
    epilog = settings_help()
    parser = argparse.ArgumentParser(
        prog=PROG, description="Vitruvian headless trainer: LoRA fine-tuning of SD1.5 / SDXL for anatomically "
        "right people.", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="objective", metavar="<objective>", required=True,
                                title="objectives" if names else "objectives (none registered yet)")
    for name in names:
        summary = _objective_summary(name)
        p = sub.add_parser(name, help=summary, description=f"{PROG} {name}: {summary}", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, build the config, train (or print the config), and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): keep main() returning an int
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    overrides = list(args.set)
    if args.resume is not None:
        overrides.append(f"resume={args.resume}")
    try:
        config = load_config(args.objective, args.config, overrides)
        if args.print_config:
            print(_render(config, args.print_config), end="")
            return 0
        from . import train  # owned by the training loop; imports torch, diffusers, peft

        result = train(config)
    except VitruvianError as e:  # ConfigError, DatasetError, ModelNotFoundError: the user's input
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    lora = getattr(result, "lora_path", None)
    kind = getattr(result, "output_kind", "LoRA")
    print(f"{PROG}: saved {kind} to {lora}" if lora is not None else f"{PROG}: done: {result}")
    return 0


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file with settings, flat or under [train]; relative paths in it are relative to its folder")
    p.add_argument("--set", metavar="key=value", action="append", default=[],
                   help="override one setting (repeatable; wins over --config); see the settings list below")
    p.add_argument("--resume", metavar="PATH|latest", default=None,
                   help="resume from a checkpoint folder, or 'latest' in <out> (same as --set resume=...)")
    p.add_argument("--print-config", nargs="?", const="toml", choices=("toml", "json"), default=None,
                   help="print the resolved config (TOML by default, or json) and exit without training")


def _render(config: TrainConfig, fmt: str) -> str:
    values = config.to_dict()
    if fmt == "json":
        return json.dumps(values, indent=2) + "\n"
    comments = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    return format_toml(values, comments)


def _objective_summary(name: str) -> str:
    """First docstring line of the objective or recipe ``name``; '' when none."""
    from .registry import summary

    return summary(name)


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
