"""Small crop → scalar scorers exported to ONNX at test time (legacy TorchScript exporter, opset 17)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["TinyScorer", "export_scorer"]


class TinyScorer(nn.Module):
    """A seeded conv net: ``(P, 3, S, S) -> (P,)`` (or ``(P, 1)`` / ``(P, outputs)``)."""

    def __init__(self, outputs: int = 1, keep_dim: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, outputs)
        self.keep_dim = keep_dim or outputs > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return y if self.keep_dim else y[:, 0]


def export_scorer(path: Path, model: nn.Module | None = None, *, size: int | None = 32, dynamic_batch: bool = True) -> Path:
    """Export ``model`` (default :class:`TinyScorer`) with input ``crops (P, 3, size, size)``; ``size=None``
    makes height and width dynamic, ``dynamic_batch=False`` fixes P to 1."""
    model = (model or TinyScorer()).eval()
    axes = {}
    if dynamic_batch:
        axes = {"crops": {0: "P"}, "score": {0: "P"}}
    if size is None:
        axes.setdefault("crops", {}).update({2: "S", 3: "S"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnxscript
        torch.onnx.export(model, (torch.rand(1, 3, size or 32, size or 32),), str(path), input_names=["crops"],
                          output_names=["score"], dynamic_axes=axes or None, opset_version=17, dynamo=False)
    return path
