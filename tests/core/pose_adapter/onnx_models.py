"""Tiny heatmap pose estimators exported to ONNX at test time (no model hub): for the evaluation tests."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["H", "W", "HEAT_STRIDE", "CELLS", "ConstantHeatmaps", "BrightestSpot", "export_onnx", "peaks_px"]

H, W, HEAT_STRIDE = 64, 48, 4  # model input size; heatmaps are H/4 × W/4
# Heatmap cells (row, col) of the 17 COCO keypoints: a rough standing person.
CELLS = [(2, 6), (1, 5), (1, 7), (2, 4), (2, 8), (4, 3), (4, 9), (6, 2), (6, 10), (8, 2), (8, 10), (9, 4),
         (9, 8), (12, 4), (12, 8), (15, 4), (15, 8)]


class ConstantHeatmaps(nn.Module):
    """Heatmaps that peak (0.9) at CELLS whatever the image (the image only passes through)."""

    def __init__(self):
        super().__init__()
        heat = torch.zeros(1, 17, H // HEAT_STRIDE, W // HEAT_STRIDE)
        for k, (r, c) in enumerate(CELLS):
            heat[0, k, r, c] = 0.9
        self.register_buffer("heat", heat)

    def forward(self, x):
        return self.heat.expand(x.shape[0], -1, -1, -1) + 0 * x.mean()


class BrightestSpot(nn.Module):
    """Every keypoint at the brightest 4×4 block of the image."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x.mean(1, keepdim=True), HEAT_STRIDE).expand(-1, 17, -1, -1)


def export_onnx(module: nn.Module, path: Path) -> Path:
    """Export with the TorchScript exporter (the dynamo one needs onnxscript); dynamic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, H, W),), str(path), input_names=["image"],
                          output_names=["heatmaps"], dynamic_axes={"image": {0: "b"}, "heatmaps": {0: "b"}},
                          dynamo=False)
    return path


def peaks_px(width: int = W, height: int = H) -> torch.Tensor:
    """``(17, 2)`` where the estimator puts each keypoint in a width × height image."""
    sx, sy = width / W, height / H
    return torch.tensor([[(c + 0.5) * HEAT_STRIDE * sx - 0.5, (r + 0.5) * HEAT_STRIDE * sy - 0.5] for r, c in CELLS])
