"""Preview of scored regions: shape masks tinted by label, boxes, and the scores written on them.

Drawing uses PIL ``ImageDraw`` per image (a preview, not a training path). Colours: face gold,
hand cyan, person green, any other label magenta. Text is drawn on a dark strip above the box
(inside the image), one line per score.

Shape:
    - image: ``(B, 3, H, W)`` float in [0, 1] → ``(B, 3, H, W)`` float32 in [0, 1]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..checks import check_image, check_regions
from ..regions import RegionBatch, region_mask

__all__ = ["LABEL_COLORS", "draw_regions", "format_score"]

LABEL_COLORS = {"face": (255, 196, 0), "hand": (0, 200, 255), "person": (90, 230, 90)}
_OTHER = (255, 0, 255)


def format_score(value: float) -> str:
    """Short text for a score: 3 significant digits, no exponent below 10⁶ (``0.912``, ``3.12``, ``412``)."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_regions(
    image: torch.Tensor,
    batch: RegionBatch,
    *,
    score_names: Sequence[str] | None = None,
    mask_opacity: float = 0.35,
    thickness: int = 2,
    max_lines: int = 4,
) -> torch.Tensor:
    """Draw every region of every image: tinted shape mask, box, label and scores.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1]; regions must have been found on these images.
        batch: the regions (sizes must match the image).
        score_names: which scores to write (in this order); None writes every score a region has.
        mask_opacity: tint strength of the shape masks in [0, 1] (0 = boxes only).
        thickness: box line width in pixels.
        max_lines: at most this many score lines per region.

    Returns:
        ``(B, 3, H, W)`` float32 in [0, 1].

    Example:
        >>> from vitruvian.core.regions import Region
        >>> batch = RegionBatch(((Region("face", (4, 4, 20, 20), 0.9, scores={"q": 1.5}),),), ((32, 32),))
        >>> draw_regions(torch.zeros(1, 3, 32, 32), batch).shape
        torch.Size([1, 3, 32, 32])
    """
    check_regions(batch, check_image(image, "draw_regions", channels=(3,)), "draw_regions")
    if not 0.0 <= mask_opacity <= 1.0:
        raise ValueError(f"draw_regions: mask_opacity must be in [0, 1], got {mask_opacity}")
    _, _, h, w = image.shape
    out = image.detach().float().cpu().clamp(0, 1).clone()
    font = _font(max(10, min(h, w) // 40))
    for b, per_image in enumerate(batch.regions):
        for r in per_image:
            if mask_opacity > 0:
                m = region_mask(r, h, w)[None] * mask_opacity
                color = torch.tensor(LABEL_COLORS.get(r.label, _OTHER), dtype=torch.float32)[:, None, None] / 255
                out[b] = out[b] * (1 - m) + color * m
        canvas = Image.fromarray((out[b].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for r in per_image:
            color = LABEL_COLORS.get(r.label, _OTHER)
            x0, y0, x1, y1 = r.box
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=thickness)
            names = list(r.scores) if score_names is None else [n for n in score_names if n in r.scores]
            lines = [f"{r.label} {format_score(r.score)}"] + [f"{n} {format_score(r.scores[n])}" for n in names][:max_lines]
            text = "\n".join(lines)
            left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
            tw, th = right - left + 4, bottom - top + 4
            tx = min(max(0, x0), max(0, w - tw))
            ty = y0 - th if y0 - th >= 0 else min(y1, h - th)
            draw.rectangle([tx, ty, tx + tw, ty + th], fill=(0, 0, 0))
            draw.multiline_text((tx + 2 - left, ty + 2 - top), text, fill=color, font=font)
        out[b] = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255).permute(2, 0, 1)
    return out
