"""FaceScore on regions: the official face preprocessing (:func:`face_crops`) and the ``facescore`` scorer.

The model is :mod:`.facescore`; the crop geometry and the Pillow-matching resize are :mod:`.crops`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..regions import Region
from .crops import official_face_boxes, official_face_crops
from .facescore import CLIP_MEAN, CLIP_STD, FaceScoreModel

__all__ = ["face_crops", "FaceScorer"]


def face_crops(image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor, size: int = 224) -> torch.Tensor:
    """FaceScore's official preprocessing: box ±1 px in whole pixels, Pillow's bicubic short-side resize and centre
    crop (:mod:`.crops`), CLIP normalisation. ``image (B, 3, H, W)`` in [0, 1] → ``(P, 3, size, size)`` float32."""
    h, w = image.shape[-2:]
    boxes = official_face_boxes(regions, [h] * len(regions), [w] * len(regions))
    crops = official_face_crops(image, image_index, boxes, size)
    mean = torch.tensor(CLIP_MEAN, dtype=crops.dtype, device=crops.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=crops.dtype, device=crops.device)[:, None, None]
    return (crops - mean) / std


class FaceScorer:
    """``scores["facescore"]`` for every face region, all faces in batches of ``batch_size``.

    Args:
        model: a :class:`FaceScoreModel` (e.g. from :func:`load_facescore`).
        batch_size: faces per forward pass (memory bound; 16 by default).
    """

    names = ("facescore",)
    labels = ("face",)

    def __init__(self, model: FaceScoreModel, *, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"FaceScorer: batch_size must be ≥ 1, got {batch_size}")
        self.model, self.batch_size = model, batch_size

    @torch.inference_mode()
    def score(self, image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        param = next(self.model.parameters())
        pixels = face_crops(image, regions, image_index, self.model.config.image_size)  # where the image is (CPU in ComfyUI)
        out = [self.model(chunk.to(param.device, param.dtype)).float().cpu() for chunk in pixels.split(self.batch_size)]
        return {"facescore": torch.cat(out).double() if out else torch.zeros(0, dtype=torch.float64)}
