"""A tiny YOLOv8-layout detector exported to ONNX at test time, whose detections are known.

:class:`ColourBoxDetector` finds strongly red and green rectangles (or discs), with no weights:
per pixel, the class scores are ``relu(r - max(g, b) - FLOOR) / (1 - FLOOR)`` (red → "face") and the
same for green (→ "hand"), so grey (the letterbox padding) and the natural photos in tests/data score
0. The box of an anchor is the bright run around its centre pixel, found with max-pooling over
"where is the nearest dark pixel" maps in the four directions; a column (row) counts as bright when
any pixel within ``reach`` input pixels above or below (left or right) is, so a disc's box is the
whole disc's. Shapes must be more than ``reach`` input pixels apart, or share no rows and columns.
The ONNX file emits exactly ultralytics' layout:

- bbox: ``(1, 4 + 2, N)`` (cx, cy, w, h in input pixels, then the two class scores);
- segm: ``(1, 4 + 2 + 32, N)`` + prototypes ``(1, 32, S/4, S/4)``; prototype 0 is the bright-pixel
  map as logits (±10) and every anchor's coefficients are ``[1, 0, …, 0]``, so instance masks are
  the drawn shapes (a disc gives a round mask).

Every anchor inside a shape predicts the same box, so NMS must reduce them to one. Drawing helpers
make test images with known boxes in the original (not letterboxed) image.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NAMES = {0: "face", 1: "hand"}
#: Colour saturation (channel minus the other two's max) below which a pixel scores 0.
FLOOR = 0.6


def expected_score(value: float) -> float:
    """The class score of a shape drawn with channel value ``value``."""
    return max(0.0, value - FLOOR) / (1 - FLOOR)


class ColourBoxDetector(nn.Module):
    """``(1, 3, S, S)`` → YOLOv8 bbox or segm outputs (see the module docstring)."""

    def __init__(self, size: int = 320, stride: int = 8, segm: bool = False, nm: int = 32, reach: int = 100,
                 classes: int = 2):
        super().__init__()
        self.size, self.stride, self.segm, self.nm, self.reach = size, stride, segm, nm, reach
        self.classes = classes  # 2: red, green; 1: red only
        self.register_buffer("pos", torch.arange(size, dtype=torch.float32))

    def _nearest_dark(self, dark: torch.Tensor, axis: int, before: bool) -> torch.Tensor:
        """Index of the nearest dark pixel at or before (``before``) / at or after each pixel along
        ``axis`` (3 = x, 2 = y), or -1 / S when there is none. ``dark (1, 1, S, S)``."""
        s = self.size
        pos = self.pos.view(1, 1, 1, s) if axis == 3 else self.pos.view(1, 1, s, 1)
        k = s + 1
        kernel = (1, k) if axis == 3 else (k, 1)
        if before:
            values = torch.where(dark, pos, torch.full_like(pos, -1.0).expand_as(dark))
            pad = (k - 1, 0, 0, 0) if axis == 3 else (0, 0, k - 1, 0)
            return F.max_pool2d(F.pad(values, pad, value=-1.0), kernel, stride=1)
        values = torch.where(dark, -pos, torch.full_like(pos, -float(s)).expand_as(dark))
        pad = (0, k - 1, 0, 0) if axis == 3 else (0, 0, 0, k - 1)
        return -F.max_pool2d(F.pad(values, pad, value=-float(s)), kernel, stride=1)

    def forward(self, x: torch.Tensor):
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        # Only strongly saturated colour counts (natural photos stay below FLOOR, so they give no
        # detections); a drawn value v scores (v - FLOOR) / (1 - FLOOR).
        red = F.relu(r - torch.maximum(g, b) - FLOOR) / (1 - FLOOR)
        green = F.relu(g - torch.maximum(r, b) - FLOOR) / (1 - FLOOR)
        if self.classes == 1:
            green = torch.zeros_like(green)
        bright = (torch.maximum(red, green) > 0.05).float()
        # A column counts as bright near a pixel when any pixel within ±reach above or below is: so
        # the x extent found from any anchor of a disc is the whole disc's, not its chord.
        r = self.reach
        cols = F.max_pool2d(bright, (2 * r + 1, 1), stride=1, padding=(r, 0)) < 0.5
        rows = F.max_pool2d(bright, (1, 2 * r + 1), stride=1, padding=(0, r)) < 0.5
        x0 = self._nearest_dark(cols, 3, True) + 1
        x1 = self._nearest_dark(cols, 3, False)
        y0 = self._nearest_dark(rows, 2, True) + 1
        y1 = self._nearest_dark(rows, 2, False)
        c = self.stride // 2
        cells = [t[:, :, c :: self.stride, c :: self.stride] for t in (x0, y0, x1, y1, red, green)]
        ax0, ay0, ax1, ay1, sred, sgreen = (t.reshape(1, 1, -1) for t in cells)
        rows = [(ax0 + ax1) / 2, (ay0 + ay1) / 2, ax1 - ax0, ay1 - ay0, sred, sgreen][: 4 + self.classes]
        if not self.segm:
            return torch.cat(rows, dim=1)
        n = ax0.shape[-1]
        coeff = torch.cat([torch.ones(1, 1, n), torch.zeros(1, self.nm - 1, n)], dim=1)
        proto0 = F.avg_pool2d(bright, 4) * 20 - 10
        protos = torch.cat([proto0, torch.zeros(1, self.nm - 1, self.size // 4, self.size // 4)], dim=1)
        return torch.cat(rows + [coeff], dim=1), protos


def export_detector(path: Path, *, size: int = 320, segm: bool = False, names: dict | None = NAMES,
                    classes: int = 2, task_meta: bool = True) -> Path:
    """Export :class:`ColourBoxDetector` to ``path`` with ultralytics-style metadata props
    (``names`` left out when None, to exercise labels from the file name)."""
    import onnx

    model = ColourBoxDetector(size=size, segm=segm, classes=classes).eval()
    outputs = ["output0", "output1"] if segm else ["output0"]
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["images"],
                      output_names=outputs, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    meta = {"imgsz": f"[{size}, {size}]", "stride": "8"}
    if task_meta:
        meta["task"] = "segment" if segm else "detect"
    if names is not None:
        meta["names"] = repr(names)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def canvas(height: int, width: int) -> torch.Tensor:
    """A black ``(1, 3, H, W)`` image."""
    return torch.zeros(1, 3, height, width)


def draw_box(image: torch.Tensor, box: tuple[int, int, int, int], colour: str, value: float = 1.0) -> None:
    """Fill pixel box ``(x0, y0, x1, y1)`` (ints, exclusive ends) with pure red or green."""
    x0, y0, x1, y1 = box
    image[:, 0 if colour == "red" else 1, y0:y1, x0:x1] = value


def draw_disc(image: torch.Tensor, centre: tuple[float, float], radius: float, colour: str, value: float = 1.0) -> None:
    """Fill a disc (pixel centres within ``radius``) with pure red or green."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    image[:, 0 if colour == "red" else 1][:, inside] = value
