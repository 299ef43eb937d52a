"""``TrainConfig``: every setting of a training run, flat, validated once at the edge.

One frozen dataclass serves the CLI (``--config FILE.toml``, ``--set key=value``), the Python API and
the ComfyUI training node, so all three fail the same way on the same bad value. Each field carries its
help text and its constraints in ``metadata``; ``__post_init__`` checks them generically, so a new
setting is one ``setting(...)`` line — in ``RunSettings`` when every run has it, else in its objective's options
class (``MPDOptions`` in ``objectives/mpd.py``, …, each with its cross-field rules in ``option_problems``), which
``TrainConfig`` inherits — plus a ``GROUPS`` entry if it opens a new help section. Field types may be
``bool``, ``int``, ``float``, ``str`` or ``tuple[X, ...]`` of those; the CLI help, ``--set`` coercion,
type checks and ``--print-config`` follow from the annotation.

Example
-------
>>> cfg = TrainConfig(objective="dpo", base="/m/sd15", data="/d/pairs", out="/o/run1", steps=3)
>>> cfg.steps, cfg.beta, cfg.lora_targets
(3, 5000.0, ('to_q', 'to_k', 'to_v', 'to_out.0'))
>>> TrainConfig(objective="dpo", base="/m", data="/d", out="/o", steps=0)
Traceback (most recent call last):
...
vitruvian.core.errors.ConfigError: TrainConfig: steps must be an integer >= 1, got 0; fix: --set steps=<value> (default 2000)
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.paths import os_path_problem
from ..core.objectives.losses import CONVENTIONS, NORMS
from .config_values import (BAD, GROUPS, MAX_NAME_BYTES, check_constraints, check_type, coerce_scalar, fix_text, join, list_items,
                            setting, short, type_name)
from .objectives.face_guidance import FaceGuidanceOptions
from .objectives.hg_dpo import HGDPOOptions
from .objectives.mpd import MPDOptions
from .objectives.patch_dpo import PatchDPOOptions
from .objectives.pose_adapter import PoseAdapterOptions
from .objectives.train_scorer import TrainScorerOptions

__all__ = ["TrainConfig", "RunSettings", "load_config", "config_keys", "GROUPS"]

MIXED_PRECISION = ("no", "fp16", "bf16")
BASE_STORAGE = ("auto", "fp8")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The settings every run has (run, model, LoRA, data, optimisation, DPO's beta, outputs, region masks); each
    objective's own settings are its options class, merged below."""

    # run
    objective: str = setting("", "Training objective; set by the CLI subcommand (sft, dpo, ...).",
                             group="run", required=True)
    base: str = setting("", "Base model: a diffusers folder, a single-file SD1.5/SDXL checkpoint, or a Flux.1 / Chroma / "
                        "SD3.5 diffusion model (ComfyUI's models/diffusion_models/, with text_encoders and vae).",
                        group="run", required=True, path=True)
    data: str = setting("", "Dataset folder: metadata.jsonl + images, or Pick-a-Pic style *.parquet files.",
                        group="run", required=True, path=True)
    out: str = setting("", "Output folder for the LoRA, checkpoints, cache and progress.jsonl.",
                       group="run", required=True, path=True)
    name: str = setting("vitruvian", "File name stem of the saved LoRA (<out>/<name>.safetensors).",
                        group="run")
    seed: int = setting(0, "Seed for data order, augmentation, noise and LoRA init.", group="run", ge=0)
    resume: str = setting("", "Resume from a checkpoint folder, or 'latest' for the newest one in <out>; "
                          "'' starts fresh.", group="run", path=True, keywords=("latest",))

    # base model
    tokenizer: str = setting("", "Tokenizer folder for single-file checkpoints; '' finds it automatically.",
                             group="model", path=True)
    text_encoders: tuple[str, ...] = setting(
        (), "Text-encoder files for a diffusion-model base, from ComfyUI's models/text_encoders/, comma-separated, any "
        "order (Flux.1: clip_l, t5xxl; Chroma: t5xxl; SD3.5: clip_l, clip_g, t5xxl); unused for a folder or SD checkpoint.",
        group="model", path=True)
    vae: str = setting("", "VAE file for a diffusion-model base, from ComfyUI's models/vae/ (Flux.1, Chroma: "
                       "ae.safetensors; SD3.5: its VAE).",
                       group="model", path=True)
    flow_shift: str = setting("auto", "Flow-matching families: the sigma shift s (sigma' = s*sigma/(1+(s-1)*sigma)); "
                              "'auto' = the model's own (Flux.1-dev, Chroma: by resolution, exp(mu); schnell: 1; "
                              "SD3.5: 3).",
                              group="model")
    flow_logit_mean: float = setting(0.0, "Flow-matching families: mean of the logit-normal sigma draw.",
                                     group="model")
    flow_logit_std: float = setting(1.0, "Flow-matching families: spread of the logit-normal sigma draw.",
                                    group="model", gt=0)
    text_tokens: int = setting(0, "Transformer families: the T5 sequence length prompts are padded or cut to (0 = the "
                               "model's own: Flux.1-dev and Chroma 512, schnell 256, SD3.5 256); shorter is faster.",
                               group="model", ge=0)
    flux_guidance: float = setting(1.0, "Flux.1-dev: the distilled guidance input while training (1.0, as Flux-dev "
                                   "LoRA trainers use).", group="model", ge=0)
    mixed_precision: str = setting("no", "Autocast precision: no, fp16 or bf16 (the LoRA weights stay fp32).",
                                   group="model", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = setting(False, "Recompute UNet activations in the backward pass "
                                           "(less memory, ~30% slower).", group="model")
    base_storage: str = setting("auto", "How the frozen base model's weights are stored: auto = the mixed_precision dtype; "
                                "fp8 = float8 (e4m3), up-cast layer by layer for compute (about half of bf16's "
                                "memory; the LoRA and the loss stay fp32).", group="model", choices=BASE_STORAGE)
    low_memory: bool = setting(False, "Everything that saves memory: gradient checkpointing, base_storage=fp8, and "
                               "8-bit AdamW when bitsandbytes imports on a CUDA machine (text encoders and VAE "
                               "already leave the GPU once the latent cache is filled).", group="model")
    train_text_encoder: bool = setting(False, "Also put LoRA adapters on the text encoder(s).", group="model")

    # LoRA
    rank: int = setting(8, "LoRA rank: the inner dimension of each adapter.", group="lora", ge=1)
    alpha: float = setting(8.0, "LoRA alpha; the update is scaled by alpha / rank.", group="lora", gt=0)
    lora_targets: tuple[str, ...] = setting(
       ("to_q", "to_k", "to_v", "to_out.0"), "UNet module-name suffixes that get LoRA adapters "
       "(comma-separated on the command line).", group="lora")

    # data
    resolution: int = setting(512, "Training resolution R (square R x R crops); a multiple of 8.",
                              group="data", ge=64, multiple_of=8)
    random_flip: bool = setting(True, "Random horizontal flip, shared by both images of a pair.", group="data")
    random_crop: bool = setting(False, "Random crop after resizing the shorter side to R; false = centre crop.",
                                group="data")
    proportion_empty_prompts: float = setting(0.0, "Fraction of prompts replaced by '' (unconditional "
                                              "training); Diffusion-DPO used 0.2.", group="data", ge=0, lt=1)
    cache_latents: bool = setting(True, "Cache VAE latents on disk, keyed by image content and augmentation.",
                                  group="data")
    cache_dir: str = setting("", "Latent cache folder; '' = <out>/cache.", group="data", path=True)
    num_workers: int = setting(0, "DataLoader worker processes (0 = load in the training process).",
                               group="data", ge=0)

    # optimisation
    steps: int = setting(2000, "Optimizer steps to train.", group="optim", ge=1)
    batch_size: int = setting(1, "Pairs (or single images) per micro-batch per process.", group="optim", ge=1)
    grad_accum: int = setting(1, "Micro-batches accumulated per optimizer step.", group="optim", ge=1)
    learning_rate: float = setting(1e-5, "Peak learning rate (constant after warm-up).", group="optim", gt=0)
    lr_warmup_steps: int = setting(0, "Linear learning-rate warm-up steps.", group="optim", ge=0)
    max_grad_norm: float = setting(1.0, "Gradient-norm clipping threshold.", group="optim", gt=0)
    use_8bit_adam: bool = setting(False, "8-bit AdamW from bitsandbytes (CUDA only).", group="optim")

    # DPO
    beta: float = setting(5000.0, "DPO beta (KL strength); 5000 in the official -1/2*beta convention.",
                          group="dpo", gt=0)
    beta_convention: str = setting("official", "official: logit = -beta/2 * diff (Diffusion-DPO repo); "
                                   "diffusers: logit = -beta * diff (so diffusers 2500 = official 5000).",
                                   group="dpo", choices=CONVENTIONS)

    # checkpoints and logs
    checkpoint_every: int = setting(500, "Save a resumable checkpoint every N optimizer steps.",
                                    group="output", ge=1)
    log_every: int = setting(10, "Append a progress.jsonl line every N optimizer steps.", group="output", ge=1)

    # region masks (mpd, face-guidance); see docs/methods.md
    mask_dilate: float = setting(16.0, "Pixels added on every side of each face/hand box before it becomes a "
                                 "latent mask (FairHuman: 16).", group="regions", ge=0)
    mask_scale: float = setting(5.0, "Factor on the residual inside a face/hand mask (FairHuman: 5, i.e. 25 on "
                                "the squared error).", group="regions", gt=0)
    mask_norm: str = setting("all", "Masked losses divided by all latent elements ('all', FairHuman) or by the "
                             "mask area ('mask').", group="regions", choices=NORMS)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(PoseAdapterOptions, TrainScorerOptions, HGDPOOptions, FaceGuidanceOptions, MPDOptions,
                  PatchDPOOptions, RunSettings):
    """Every setting of one training run; see ``vitruvian-train --help`` for the same list.

    The fields are ``RunSettings``' and then each objective's options (``PatchDPOOptions`` … in the objective's
    module): adding an objective adds its options class here, keys stay flat (``mpd_alpha``, …).
    """

    def __post_init__(self) -> None:
        problems = []
        hints = _type_hints()
        for f in dataclasses.fields(self):
            value, problem = check_type(f.name, getattr(self, f.name), hints[f.name])
            if problem is None:
                object.__setattr__(self, f.name, value)  # lossless normalisation: int -> float, list -> tuple
                problem = check_constraints(f, value)
            if problem is not None:
                problems.append(f"{problem}; fix: {fix_text(f)}")
        if not problems:
            problems = self._cross_field_problems()
        if problems:
            raise ConfigError(join("TrainConfig", problems))

    def _cross_field_problems(self) -> list[str]:
        """Rules linking two fields, or a field and the outside world (the objective registry)."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            for item in (value if isinstance(value, tuple) else (value,)):
                if f.metadata["path"] and item and item not in f.metadata["keywords"]:
                    refused = os_path_problem(item)
                    if refused:
                        problems.append(f"{f.name} must be a path the system accepts, got {short(item)} which {refused}; "
                                        f"fix: --set {f.name}=<another path>")
        if self.lr_warmup_steps > self.steps:
            problems.append(f"lr_warmup_steps must be <= steps ({self.steps}), got {self.lr_warmup_steps}; "
                            "fix: lower lr_warmup_steps or raise steps")
        if len(self.name.encode()) > MAX_NAME_BYTES:
            problems.append(f"name must be at most {MAX_NAME_BYTES} bytes (the LoRA is saved as <name>-step<N>.safetensors), "
                            f"got {short(self.name)}; fix: --set name=my_lora")
        elif not _NAME_RE.fullmatch(self.name):
            problems.append(f"name must be a file name stem of letters, digits, '.', '_' or '-', got {self.name!r}; "
                            "fix: --set name=my_lora")
        if self.flow_shift != "auto":
            try:
                shift = float(self.flow_shift)
            except ValueError:
                shift = float("nan")
            if not (shift > 0 and shift < float("inf")):
                problems.append(f"flow_shift must be 'auto' or a number > 0, got {self.flow_shift!r}; "
                                "fix: --set flow_shift=auto (or 3.0)")
        if any(not t or not isinstance(t, str) for t in self.lora_targets) or not self.lora_targets:
            problems.append(f"lora_targets must be a non-empty list of module-name suffixes, got {self.lora_targets!r}; "
                            "fix: --set lora_targets=to_q,to_k,to_v,to_out.0")
        for cls in type(self).__mro__:  # each objective's options check their own cross-field rules
            own = cls.__dict__.get("option_problems")
            if own is not None:
                problems += own(self)
        names = _objective_names()
        if names and self.objective not in names:
            problems.append(f"objective must be one of {', '.join(names)}, got {self.objective!r}; "
                            "fix: pick an objective as the CLI subcommand (vitruvian-train dpo ...)")
        return problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists), e.g. for the LoRA's safetensors metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from ``to_dict()`` output; unknown keys raise ``ConfigError`` listing valid keys."""
        unknown = [k for k in values if k not in config_keys()]
        if unknown:
            raise ConfigError(_unknown_message("TrainConfig.from_dict", {k: "the dict" for k in unknown}))
        return cls(**dict(values))


def config_keys() -> tuple[str, ...]:
    """Every valid key, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def load_config(objective: str | None, config_file: str | os.PathLike | None = None,
                overrides: Iterable[str] = ()) -> TrainConfig:
    """Build a ``TrainConfig`` from a TOML file, ``key=value`` overrides and the objective name.

    Precedence: defaults < ``config_file`` < ``overrides`` (later overrides win over earlier ones).
    The TOML file holds the keys flat at top level or in a ``[train]`` table. Override values are
    strings coerced by the field type: ``int``, ``float`` (``1e-5``), ``bool`` (true/false/1/0/yes/no),
    ``tuple[str, ...]`` (comma-separated), ``str``. Path values are expanded (``~``) and made absolute:
    relative to the config file's folder when read from the file, to the working directory otherwise.
    ``objective`` may also appear in the file or an override, but must then agree with the argument.

    Raises ``ConfigError`` listing every unknown key (with the valid keys), every value that cannot be
    coerced, or any rule ``TrainConfig`` refuses.
    """
    from ._toml import read_toml_table  # stdlib tomllib behind a version check

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    base_dir = Path.cwd()
    if config_file is not None and str(config_file) != "":
        path = Path(config_file).expanduser().resolve()
        table = read_toml_table(path)
        values.update(table)
        origin.update({k: path.name for k in table})
        base_dir = path.parent
    problems: list[str] = []
    set_values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set must be key=value, got {item!r}; fix: --set steps=1000")
            continue
        origin[key] = "--set"
        if key not in config_keys():
            set_values[key] = raw
            continue
        value, problem = _coerce(key, raw.strip())
        if problem:
            problems.append(problem)
        else:
            set_values[key] = value
    unknown = {k: origin[k] for k in (*values, *set_values) if k not in config_keys()}
    if unknown:
        raise ConfigError(_unknown_message("load_config", unknown))
    if problems:
        raise ConfigError(join("load_config", problems))
    values = {k: _resolve_path(k, v, base_dir) for k, v in values.items()}
    values.update({k: _resolve_path(k, v, Path.cwd()) for k, v in set_values.items()})
    if objective:
        given = values.get("objective", objective)
        if given != objective:
            raise ConfigError(f"load_config: objective must match the subcommand {objective!r}, got {given!r} "
                              f"from {origin['objective']}; fix: remove objective from the config or run "
                              f"vitruvian-train {given}")
        values["objective"] = objective
    return TrainConfig(**values)


# ---------------------------------------------------------------------------------------------------
# helpers: types, constraints, messages


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _objective_names() -> tuple[str, ...]:
    """Every objective and recipe name (``trainers.registry``)."""
    from .registry import names

    return names()


def _coerce(key: str, raw: str) -> tuple[Any, str | None]:
    """Parse one ``--set`` string by the field's type: ``(value, None)`` or ``(None, problem)``."""
    tp = _type_hints()[key]
    bad = f"--set {key}={raw}: {key} must be {type_name(tp)}, got {raw!r}"
    if typing.get_origin(tp) is tuple:
        example = ("1,2,3", "[1, 2, 3]") if typing.get_args(tp)[0] in (int, float) else ("a,b", '["a", "b"]')
        bad += f"; write it as {example[0]} or {example[1]} (TOML/JSON)"
        parts = list_items(raw)
        out = [BAD] if parts is None else [coerce_scalar(typing.get_args(tp)[0], p) for p in parts]
        return (None, bad) if any(o is BAD for o in out) else (tuple(out), None)
    value = coerce_scalar(tp, raw)
    return (None, bad) if value is BAD else (value, None)


def _resolve_path(key: str, value: Any, base_dir: Path) -> Any:
    f = _FIELDS.get(key)
    if f is not None and f.metadata["path"] and isinstance(value, (list, tuple)):
        return type(value)(_resolve_path(key, v, base_dir) for v in value)
    if f is None or not f.metadata["path"] or not isinstance(value, str):
        return value
    if value == "" or value in f.metadata["keywords"]:
        return value
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


def _unknown_message(where: str, unknown: Mapping[str, str]) -> str:
    lines = []
    for key, src in unknown.items():
        close = difflib.get_close_matches(key, config_keys(), n=1)
        lines.append(f"{key!r} (from {src})" + (f", did you mean {close[0]!r}?" if close else ""))
    return (f"{where}: keys must be TrainConfig settings, got unknown key(s) {'; '.join(lines)}\n"
            f"valid keys: {', '.join(config_keys())}\nfix: see vitruvian-train --help for each key")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
