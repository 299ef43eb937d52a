"""Before/after pictures of a training run: an image grid and a plot of score distributions (PIL only).

:func:`before_after_grid` puts the images generated before and after training (same prompts, same
seeds) in two rows per block, with optional per-image scores under each one; :func:`score_plot` draws
the two score distributions as dot strips with their means, so a shift is visible at a glance.

Shape:
    - inputs: ``(B, 3, H, W)`` float in [0, 1]; outputs: ``(3, H', W')`` float in [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .checks import check_image

__all__ = ["before_after_grid", "score_plot", "to_pil", "from_pil"]

_BG, _INK, _GRID = (255, 255, 255), (20, 20, 20), (200, 200, 200)
_BEFORE, _AFTER = (70, 110, 200), (230, 120, 30)


def to_pil(image: torch.Tensor):
    """``(3, H, W)`` float in [0, 1] → a PIL RGB image."""
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(arr.numpy(), "RGB")


def from_pil(img) -> torch.Tensor:
    """A PIL image → ``(3, H, W)`` float32 in [0, 1]."""
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"  # the default PIL font has no en dash
    return f"{v:.4g}"


def before_after_grid(before: torch.Tensor, after: torch.Tensor, *, scores_before: Sequence | None = None,
                      scores_after: Sequence | None = None, columns: int = 8, min_side: int = 128,
                      labels: tuple[str, str] = ("before", "after")) -> torch.Tensor:
    """Image ``i`` before training above image ``i`` after, ``columns`` per block; scores under each.

    Args:
        before, after: ``(B, 3, H, W)`` in [0, 1], the same prompts and seeds (same shape).
        scores_before, scores_after: B values each (None or NaN shows "n/a"), or None for no score line.
        columns: images per block (a wider batch wraps into more blocks).
        min_side: images with a shorter side are enlarged by an integer factor (nearest) to reach it.

    Returns:
        ``(3, H', W')`` float32 in [0, 1].

    Example:
        >>> before_after_grid(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)).shape[0]
        3
    """
    from PIL import Image, ImageDraw

    where = "before_after_grid"
    before = check_image(before, where, "before", channels=(3,))
    after = check_image(after, where, "after", channels=(3,))
    if before.shape != after.shape:
        raise ValueError(f"before_after_grid: before and after must have the same shape (same prompts, seeds and "
                         f"size), got {tuple(before.shape)} and {tuple(after.shape)}")
    b, _, h, w = before.shape
    for name, s in (("scores_before", scores_before), ("scores_after", scores_after)):
        if s is not None and len(s) != b:
            raise ValueError(f"before_after_grid: {name} must have one value per image ({b}), got {len(s)}")
    scale = max(1, math.ceil(min_side / min(h, w)))
    cw, ch = w * scale, h * scale
    pad, label_w = 6, 64
    text_h = 14 if (scores_before is not None or scores_after is not None) else 0
    columns = max(1, min(columns, b))
    blocks = math.ceil(b / columns)
    row_h = ch + text_h + pad
    width = label_w + columns * (cw + pad) + pad
    height = 20 + blocks * (2 * row_h + pad)
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), f"{b} image(s): {labels[0]} (top) vs {labels[1]} (bottom), same prompts and seeds", fill=_INK)
    for i in range(b):
        block, col = divmod(i, columns)
        x = label_w + col * (cw + pad)
        for row, (batch, scores, color) in enumerate(((before, scores_before, _BEFORE), (after, scores_after, _AFTER))):
            y = 20 + block * (2 * row_h + pad) + row * row_h
            tile = to_pil(batch[i])
            if scale > 1:
                tile = tile.resize((cw, ch), Image.NEAREST)
            canvas.paste(tile, (x, y))
            if scores is not None:
                draw.text((x, y + ch + 1), _fmt(scores[i]), fill=color)
            if col == 0:
                draw.text((pad, y + ch // 2 - 6), labels[row], fill=color)
    return from_pil(canvas)


def _finite(values: Sequence | None) -> list[float]:
    return [float(v) for v in (values or ()) if v is not None and math.isfinite(float(v))]


def score_plot(before: Sequence, after: Sequence, *, name: str = "score", size: tuple[int, int] = (640, 300),
               higher_is_better: bool = True) -> torch.Tensor:
    """Dot strips of the per-image scores before and after, each with its mean (a bar) and the shift.

    None / NaN values (images without a scored region) are left out and counted in the legend.
    Returns ``(3, size[1], size[0])`` float32 in [0, 1].

    Example:
        >>> score_plot([0.1, 0.2], [0.3, 0.5], name="sharpness").shape
        torch.Size([3, 300, 640])
    """
    from PIL import Image, ImageDraw

    W, H = size
    if W < 200 or H < 120:
        raise ValueError(f"score_plot: size must be at least (200, 120), got {size}")
    b, a = _finite(before), _finite(after)
    canvas = Image.new("RGB", (W, H), _BG)
    draw = ImageDraw.Draw(canvas)
    left, right, top, bottom = 70, W - 20, 34, H - 40
    draw.text((10, 8), f"{name}: distribution per image, before vs after training", fill=_INK)
    if not b and not a:
        draw.text((left, H // 2), "no scores (connect scored regions of both batches)", fill=_INK)
        return from_pil(canvas)
    lo, hi = min(b + a), max(b + a)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    for k in range(5):  # axis ticks
        v = lo + k * (hi - lo) / 4
        x = x_of(v)
        draw.line((x, top, x, bottom), fill=_GRID)
        draw.text((x - 14, bottom + 4), f"{v:.3g}", fill=_INK)
    lane = (bottom - top) / 2
    for row, (values, color, label, total) in enumerate(((b, _BEFORE, "before", before), (a, _AFTER, "after", after))):
        y0 = top + row * lane
        mid = y0 + lane / 2
        missing = len(list(total or ())) - len(values)
        draw.text((8, mid - 6), label, fill=color)
        for i, v in enumerate(values):  # deterministic jitter so equal values stay visible
            y = mid + ((i * 7919) % 21 - 10) * lane / 60
            x = x_of(v)
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=color, width=2)
        if values:
            m = sum(values) / len(values)
            draw.line((x_of(m), y0 + 6, x_of(m), y0 + lane - 6), fill=color, width=3)
            extra = f", {missing} without a score" if missing else ""
            draw.text((left + 4, y0 + 2), f"mean {m:.4g} (n={len(values)}{extra})", fill=color)
    if b and a:
        shift = sum(a) / len(a) - sum(b) / len(b)
        better = shift > 0 if higher_is_better else shift < 0
        verdict = "better" if better else ("unchanged" if shift == 0 else "worse")
        draw.text((W // 2, H - 18), f"mean shift {shift:+.4g} ({verdict})", fill=_INK)
    return from_pil(canvas)
