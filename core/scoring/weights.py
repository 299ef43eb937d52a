"""Safe reading of a scorer's weights, and exact key matching with a readable error.

Only two ways in: ``.safetensors`` (``safetensors.torch.load_file``) or a PyTorch file read with
``torch.load(weights_only=True)``, which accepts tensors and plain containers and refuses any
pickled code. Nothing is ever unpickled freely.
"""

from __future__ import annotations

import os
import pickle
from typing import Iterable, Mapping

import torch

from ..errors import ModelNotFoundError, VitruvianError

__all__ = ["WeightsError", "read_state_dict", "match_keys"]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class WeightsError(VitruvianError, ValueError):
    """A weights file that cannot be used: unsafe, not a state dict, or keys/shapes that do not match."""


def read_state_dict(path: str | os.PathLike, *, where: str = "read_state_dict") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or PyTorch weights file, on the CPU.

    Raises:
        ModelNotFoundError: no such file.
        WeightsError: a pickle that holds code or objects other than tensors (refused), or a file
            that is not a ``name → tensor`` mapping.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"{where}: weights file {path!r}", [os.path.dirname(path) or "."])
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path, device="cpu"))
    if not path.lower().endswith(PICKLE_SUFFIXES):
        raise WeightsError(
            f"{where}: weights file must end in .safetensors or one of {', '.join(PICKLE_SUFFIXES)}, got {path!r}"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{where}: refused to load {os.path.basename(path)!r}: it is not a plain tensor file "
            f"(torch.load with weights_only=True said: {first}). Files that need arbitrary Python code to "
            "load are never opened; convert the checkpoint to .safetensors with a tool you trust"
        ) from None
    if isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(data.get(wrapper), Mapping):
                data = data[wrapper]
                break
    if not isinstance(data, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise WeightsError(
            f"{where}: {os.path.basename(path)!r} must hold a state dict (name → tensor), got {type(data).__name__}"
        )
    return dict(data)


def match_keys(
    expected: Mapping[str, tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    *,
    optional: Iterable[str] = (),
    where: str = "match_keys",
    what: str = "checkpoint",
) -> None:
    """Raise :class:`WeightsError` unless ``state_dict`` has exactly the ``expected`` keys with the
    expected shapes (keys in ``optional`` may be absent). The message lists missing and unexpected
    keys (the first 12 of each) and shape mismatches."""
    optional = set(optional)
    missing = sorted(k for k in expected if k not in state_dict and k not in optional)
    unexpected = sorted(k for k in state_dict if k not in expected)
    shapes = sorted(
        f"{k}: expected {tuple(expected[k])}, got {tuple(state_dict[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])
    )
    if not (missing or unexpected or shapes):
        return

    def listing(title: str, items: list[str]) -> str:
        more = f"\n    … and {len(items) - 12} more" if len(items) > 12 else ""
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:12]) + more if items else ""

    raise WeightsError(
        f"{where}: {what} keys must match the model exactly, got {len(missing)} missing, {len(unexpected)} "
        f"unexpected, {len(shapes)} with another shape"
        + listing("missing", missing) + listing("unexpected", unexpected) + listing("shape mismatch", shapes)
    )
