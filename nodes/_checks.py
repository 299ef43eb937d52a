"""Input checks every node of the pack runs before its work, driven by the node's own schema.

ComfyUI checks widget values typed in the UI, but not what arrives over a link (any Python object a
custom node returned: ``None``, a NaN image, a channels-first tensor) and, in the V3 API of the host we
test against, not combo values either. :class:`VitruvianNode` wraps each node's ``execute`` so that
every input is checked against its declared type first, and a bad one is answered with a
:class:`~vitruvian.core.errors.NodeInputError` that names the node, the input, what was expected, what
came and the fix, before any model is loaded.

Types the pack defines register their check with :func:`register_type` (the module that owns the class
knows it best); ComfyUI's own types are checked here.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch

from ..core.checks import check_names  # the nodes' name checks are core's (core.pairs runs them too)
from ..core.errors import NodeInputError

__all__ = ["check_output_prefix", "check_names", "check_inputs", "register_type", "wrap_execute", "image_problem",
           "NodeInputError"]

#: io type → (predicate on the value, what is expected in words, hint when the check fails)
_TYPES: dict[str, tuple[Callable[[object], bool], str, str]] = {}


def register_type(io_type: str, accepts: Callable[[object], bool], expected: str, fix: str = "") -> None:
    """Check values of ``io_type`` with ``accepts(value) -> bool``; ``expected`` says what it takes in words."""
    _TYPES[str(io_type)] = (accepts, expected, fix)


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if value is None:
        return "nothing (None)"
    if isinstance(value, (list, tuple, dict)) and not value:
        return f"an empty {type(value).__name__}"
    return f"{type(value).__name__} {value!r}"[:120]


def _non_finite(t: torch.Tensor) -> str:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "infinite"
        return f"{bad} values"
    return ""


def image_problem(image) -> str:
    """Why ``image`` is not a usable ComfyUI IMAGE ``(B, H, W, C)``, or ``""`` when it is."""
    if not isinstance(image, torch.Tensor):
        return f"a ComfyUI IMAGE tensor (B, H, W, C) is expected, got {_kind(image)}"
    shape = tuple(image.shape)
    if image.ndim != 4:
        return f"an IMAGE (B, H, W, C) is expected, got shape {shape}"
    if 0 in shape:
        return (f"a non-empty IMAGE is expected, got shape {shape}; connect a node that outputs at least "
                "one image")
    if shape[-1] not in (1, 3, 4):
        hint = ""
        if shape[1] in (1, 3, 4):
            hint = ("; it looks channels-first (B, C, H, W): a node upstream returned a torch layout, "
                    "convert it with image.movedim(1, -1)")
        return f"an IMAGE (B, H, W, C) with 1, 3 or 4 channels is expected, got shape {shape}{hint}"
    if not image.is_floating_point():
        return (f"float pixel values in [0, 1] are expected, got dtype {image.dtype}; a node upstream returned "
                "an integer image (convert it with image.float() / 255)")
    bad = _non_finite(image)
    if bad:
        return f"finite pixel values are expected, got {bad}; a node upstream produced them (check its settings)"
    return ""


def _mask_problem(mask) -> str:
    if not isinstance(mask, torch.Tensor):
        return f"a ComfyUI MASK tensor (B, H, W) is expected, got {_kind(mask)}"
    if mask.ndim not in (2, 3) or 0 in mask.shape:
        return f"a non-empty MASK (B, H, W) or (H, W) is expected, got shape {tuple(mask.shape)}"
    bad = _non_finite(mask)
    return f"finite mask values are expected, got {bad}" if bad else ""


def _latent_problem(latent) -> str:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        return f"a LATENT (a dict with a 'samples' tensor) is expected, got {_kind(latent)}"
    if samples.ndim < 4 or 0 in samples.shape:
        return f"LATENT samples of shape (B, C, H, W) are expected, got {tuple(samples.shape)}"
    bad = _non_finite(samples)
    return f"finite latent values are expected, got {bad}" if bad else ""


def _conditioning_problem(cond) -> str:
    if not isinstance(cond, list) or not cond:
        return f"a CONDITIONING (a non-empty list from a text encoder) is expected, got {_kind(cond)}"
    for i, entry in enumerate(cond):
        ok = (isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], torch.Tensor)
              and isinstance(entry[1], dict))
        if not ok:
            return f"CONDITIONING entries [tensor, dict] are expected, entry {i} is {_kind(entry)}"
    return ""


def _host_class(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def _is_instance_of(module: str, name: str) -> Callable[[object], bool]:
    return lambda value: isinstance(value, _host_class(module, name))


_PROBLEMS: dict[str, Callable[[object], str]] = {
    "IMAGE": image_problem, "MASK": _mask_problem, "LATENT": _latent_problem, "CONDITIONING": _conditioning_problem,
}
register_type("MODEL", _is_instance_of("comfy.model_patcher", "ModelPatcher"), "a MODEL from a checkpoint loader")
register_type("CLIP", _is_instance_of("comfy.sd", "CLIP"), "a CLIP from a checkpoint loader")
register_type("VAE", _is_instance_of("comfy.sd", "VAE"), "a VAE from a checkpoint or VAE loader")
register_type("POSE_KEYPOINT", lambda v: isinstance(v, list) and bool(v) and all(isinstance(f, dict) for f in v),
              "a POSE_KEYPOINT (a non-empty list with one dict per image, as OpenPose / DWPose nodes output)")
register_type("SEGS", lambda v: isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], list),
              "SEGS ((height, width), [SEG, ...]) as Impact Pack nodes output")


def _widget_problem(spec, value) -> str:
    kind = spec.get_io_type()
    if kind == "COMBO":
        options = list(spec.options or [])
        if value in options:
            return ""
        shown = ", ".join(repr(o) for o in options[:8]) + (", …" if len(options) > 8 else "")
        listed = f"one of [{shown}]" if options else "one of the listed options (the list is empty)"
        return f"{listed} is expected, got {_kind(value)}; pick a value from the list (press R to refresh file lists)"
    if kind == "BOOLEAN":
        return "" if isinstance(value, bool) else f"true or false is expected, got {_kind(value)}"
    if kind == "STRING":
        return "" if isinstance(value, str) else f"a string is expected, got {_kind(value)}"
    if kind in ("INT", "FLOAT"):
        number = (int,) if kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return f"{'an integer' if kind == 'INT' else 'a number'} is expected, got {_kind(value)}"
        if not math.isfinite(value):
            return f"a finite number is expected, got {value}"
        low, high = getattr(spec, "min", None), getattr(spec, "max", None)
        if (low is not None and value < low) or (high is not None and value > high):
            return f"a value in [{low}, {high}] is expected, got {value}"
    return ""


def check_output_prefix(node: str, name: str, prefix: str) -> None:
    """NodeInputError unless ``prefix`` is a file-name prefix that stays inside ComfyUI's output folder
    (relative, no ``..``, no NUL, components of at most 200 characters)."""
    import os

    problem = ""
    parts = prefix.replace("\\", "/").split("/")
    if not prefix.strip():
        problem = "a non-empty file-name prefix is expected, got an empty text"
    elif "\x00" in prefix:
        problem = "a file-name prefix without NUL characters is expected"
    elif os.path.isabs(prefix) or prefix.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        problem = (f"a prefix relative to ComfyUI's output folder is expected, got {prefix!r}; write e.g. "
                   "'vitruvian/compare' (sub-folders are fine, '..' and absolute paths are not)")
    elif max(len(p) for p in parts) > 200:
        problem = f"file-name parts of at most 200 characters are expected, got {max(len(p) for p in parts)}"
    if problem:
        raise NodeInputError(node, name, problem)


def input_problem(spec, value) -> str:
    """Why ``value`` does not fit the input ``spec`` (a V3 ``io.*.Input``), or ``""``."""
    kind = str(spec.get_io_type())
    if kind in _PROBLEMS:
        return _PROBLEMS[kind](value)
    if kind in _TYPES:
        accepts, expected, fix = _TYPES[kind]
        return "" if accepts(value) else f"{expected} is expected, got {_kind(value)}" + (f"; {fix}" if fix else "")
    return _widget_problem(spec, value)


def check_inputs(node_cls, kwargs: dict) -> None:
    """Raise :class:`NodeInputError` for the first input of ``kwargs`` that does not fit ``node_cls``'s schema.

    An optional input left unconnected (absent or ``None``) is fine; a required one that arrives as
    ``None`` is not.
    """
    schema = node_cls.define_schema()
    if schema.is_input_list:  # values arrive as lists; such nodes check their own inputs
        return
    for spec in schema.inputs:
        if spec.id not in kwargs or getattr(spec, "lazy", False):
            continue
        value = kwargs[spec.id]
        if value is None and spec.optional:
            continue
        problem = input_problem(spec, value)
        if problem:
            raise NodeInputError(schema.node_id, spec.id, problem)


def wrap_execute(node_cls) -> None:
    """Make ``node_cls.execute`` run :func:`check_inputs` first (sync or async).

    ComfyUI runs nodes on shallow, locked clones of their class (``type(name, bases, dict(cls.__dict__))``),
    which call ``__init_subclass__`` again with the already-wrapped method: that one is left as it is.
    """
    raw = node_cls.__dict__["execute"].__func__
    if getattr(raw, "checks_inputs", False):
        return
    if inspect.iscoroutinefunction(raw):
        @functools.wraps(raw)
        async def execute(cls, *args, **kwargs):
            check_inputs(cls, kwargs)
            return await raw(cls, *args, **kwargs)
    else:
        @functools.wraps(raw)
        def execute(cls, *args, **kwargs):
            check_inputs(cls, kwargs)
            return raw(cls, *args, **kwargs)
    execute.checks_inputs = True
    node_cls.execute = classmethod(execute)
