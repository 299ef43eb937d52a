"""Any ONNX model that maps a crop to one number, as a region scorer.

The model's first input is ``(P, 3, S, S)`` float (float16 models get float16); ``S`` is read from
the model's input shape (or given when the model leaves it dynamic), the batch axis should be
dynamic (a model fixed to batch 1 is run one crop at a time). Its first output is ``(P,)`` or
``(P, 1)``. Crops are the region boxes (``"box"``, stretched to a square) or the square that holds
each box (``"square"``), grown by ``padding``, resampled with antialiasing, then normalised.

Shape:
    - crops fed to the model: ``(P, 3, S, S)``; scores ``(P,)`` float64
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ..regions import Region
from .crops import crop_boxes, square_boxes

__all__ = ["NORMALIZATIONS", "CROP_SHAPES", "OnnxScorer"]

#: name → (mean, std) per channel applied to [0, 1] RGB; "none" feeds [0, 1].
NORMALIZATIONS = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
CROP_SHAPES = ("square", "box")


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxScorer:
    """Score every region with a user's ONNX model (crop → scalar), all crops in few runs.

    Args:
        path: the ``.onnx`` file.
        name: the score name (default ``"onnx:<file stem>"``).
        size: crop side when the model's input size is dynamic (ignored when the model fixes it;
            a different value is an error).
        normalization: a key of :data:`NORMALIZATIONS`.
        crop: ``"square"`` (the square holding the box) or ``"box"`` (the box, stretched).
        padding: grow each box by this fraction of its size on every side before cropping.
        batch_size: crops per run.
        labels: region labels scored by default (None = all).

    Example:
        >>> scorer = OnnxScorer("quality.onnx", normalization="imagenet")  # doctest: +SKIP
        >>> scorer.score(image, regions, image_index)["onnx:quality"].shape  # doctest: +SKIP
        torch.Size([P])
    """

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, size: int | None = None,
                 normalization: str = "none", crop: str = "square", padding: float = 0.0, batch_size: int = 32,
                 labels: Sequence[str] | None = None, providers: list[str] | None = None):
        from ..onnx_runtime import get_session

        if normalization not in NORMALIZATIONS:
            raise ValueError(f"OnnxScorer: normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        if crop not in CROP_SHAPES:
            raise ValueError(f"OnnxScorer: crop must be one of {', '.join(CROP_SHAPES)}, got {crop!r}")
        if not 0.0 <= padding <= 2.0:
            raise ValueError(f"OnnxScorer: padding must be in [0, 2] (a fraction of the box), got {padding}")
        if batch_size < 1:
            raise ValueError(f"OnnxScorer: batch_size must be ≥ 1, got {batch_size}")
        self.path = os.fspath(path)
        self.session, self.provider = get_session(self.path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        first = inputs[0]
        if len(first.shape) != 4 or _dim(first.shape[1]) not in (3, None):
            raise ValueError(
                f"OnnxScorer: {os.path.basename(self.path)} input {first.name!r} must be (P, 3, S, S), got {first.shape}; "
                "export the model with a channels-first image input"
            )
        fixed_h, fixed_w = _dim(first.shape[2]), _dim(first.shape[3])
        if fixed_h is not None and fixed_w is not None:
            if fixed_h != fixed_w:
                raise ValueError(f"OnnxScorer: input must be square (S, S), got {fixed_h}×{fixed_w}")
            if size is not None and size != fixed_h:
                raise ValueError(f"OnnxScorer: size must be {fixed_h} (the model's input size), got {size}")
            size = fixed_h
        elif size is None:
            raise ValueError(
                f"OnnxScorer: {os.path.basename(self.path)} has a dynamic input size {first.shape}; give size=S"
            )
        self.input_name, self.size = first.name, int(size)
        self.input_dtype = "float16" if first.type == "tensor(float16)" else "float32"
        self.fixed_batch = _dim(first.shape[0])
        self.output_name = outputs[0].name
        self.normalization, self.crop, self.padding, self.batch_size = normalization, crop, padding, batch_size
        stem = os.path.splitext(os.path.basename(self.path))[0]
        self.names = (name or f"onnx:{stem}",)
        self.labels = tuple(labels) if labels else None

    def crops(self, image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor) -> torch.Tensor:
        """The normalised model inputs: ``(P, 3, S, S)`` float32."""
        boxes = torch.tensor([r.box for r in regions], dtype=torch.float64).reshape(-1, 4)
        if self.crop == "square":
            boxes = square_boxes(boxes, shrink=False)
        grow = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1).repeat(1, 2) * self.padding
        boxes = boxes + grow * torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
        crops = crop_boxes(image.float(), image_index, boxes, self.size, mode="bilinear").clamp(0, 1)
        mean, std = (torch.tensor(v)[:, None, None] for v in NORMALIZATIONS[self.normalization])
        return (crops.cpu() - mean) / std

    def score(self, image: torch.Tensor, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = self.crops(image, regions, image_index).numpy().astype(self.input_dtype)
        step = 1 if self.fixed_batch == 1 else self.batch_size
        if self.fixed_batch not in (None, 1) and len(pixels) % self.fixed_batch:
            raise ValueError(f"OnnxScorer: the model's batch is fixed to {self.fixed_batch}; export it with a dynamic batch axis")
        step = self.fixed_batch or step
        out = []
        for start in range(0, len(pixels), step):
            (values,) = self.session.run([self.output_name], {self.input_name: pixels[start : start + step]})
            values = torch.from_numpy(values).double()
            n = min(step, len(pixels) - start)
            if values.numel() != n:
                raise ValueError(
                    f"OnnxScorer: {os.path.basename(self.path)} must output one number per crop ((P,) or (P, 1)), "
                    f"got shape {tuple(values.shape)} for {n} crops"
                )
            out.append(values.reshape(n))
        return {self.names[0]: torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)}
