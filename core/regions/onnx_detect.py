"""YOLOv8-style ONNX detectors (as ``yolo export format=onnx`` writes them) → regions.

The layout ultralytics exports, which this module reads:

- input ``(1, 3, S, S)`` float RGB in [0, 1], the image letterboxed: resized keeping its aspect
  ratio, centred, padded with grey 114/255;
- bbox models: one output ``(1, 4 + nc, N)``: per anchor ``cx, cy, w, h`` in input pixels, then nc
  class scores (already sigmoid);
- segm models: ``(1, 4 + nc + nm, N)`` (nm mask coefficients, 32) plus prototypes ``(1, nm, mh, mw)``;
  an instance mask is ``sigmoid(coefficients · prototypes) > 0.5``, cut to the box;
- metadata props: ``names`` (a Python dict literal ``{0: 'face'}``), ``imgsz``, ``task``.

Post-processing: confidence = the best class score, threshold, class-aware NMS, then the
``max_per_image`` best; boxes are mapped back through the letterbox to the original image and
clipped to it. Labels come from ``names``; without them a one-class model is labelled from its file
name (``face``/``hand``/``person``/``people``/``body`` in it), and other classes are ``class<i>``.

Shape:
    - image: ``(B, 3, H, W)`` float32 in [0, 1] (1 or 4 channels are accepted: grey is repeated,
      alpha dropped).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import check_image
from ..errors import ModelNotFoundError
from ..onnx_runtime import get_session
from .nms import batched_nms
from .types import Region, RegionBatch, pixel_box

__all__ = ["Detector", "load_detector", "letterbox", "labels_from_filename", "PAD_VALUE"]

#: Letterbox padding, ultralytics' grey.
PAD_VALUE = 114 / 255
_DEFAULT_SIZE = 640
_PRE_NMS = 3000  # candidates kept (best first) before NMS, as ultralytics' max_nms caps them
_FILENAME_LABELS = (("face", "face"), ("hand", "hand"), ("person", "person"), ("people", "person"), ("body", "person"))


def labels_from_filename(path: str | os.PathLike) -> str | None:
    """``"face"``, ``"hand"`` or ``"person"`` when the file name says so (``face_yolov8n.onnx``)."""
    name = os.path.basename(os.fspath(path)).lower()
    for word, label in _FILENAME_LABELS:
        if word in name:
            return label
    return None


def letterbox(image: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int]]:
    """Resize ``image`` ``(3, H, W)`` to fit ``size`` = ``(S_h, S_w)`` keeping its aspect ratio,
    centre it and pad with :data:`PAD_VALUE`.

    Returns:
        ``(padded (3, S_h, S_w), (scale_x, scale_y), (left, top))``: an image pixel ``x`` lands
        at ``x * scale_x + left`` in the padded input.

    Example:
        >>> out, scale, pad = letterbox(torch.rand(3, 100, 200), (64, 64))
        >>> out.shape, scale, pad
        (torch.Size([3, 64, 64]), (0.32, 0.32), (0, 16))
    """
    _, h, w = image.shape
    sh, sw = size
    r = min(sh / h, sw / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    resized = image
    if (nh, nw) != (h, w):
        resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                antialias=(nh < h or nw < w))[0]
    top, left = round((sh - nh) / 2 - 0.1), round((sw - nw) / 2 - 0.1)
    out = torch.full((3, sh, sw), PAD_VALUE, dtype=image.dtype)
    out[:, top : top + nh, left : left + nw] = resized.clamp(0, 1)
    return out, (nw / w, nh / h), (left, top)


def _parse_names(meta: dict) -> dict[int, str] | None:
    text = meta.get("names")
    if not text:
        return None
    try:
        names = ast.literal_eval(text)  # ultralytics writes str(dict); literal_eval runs no code
    except (ValueError, SyntaxError):
        return None
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        return None
    return {int(k): str(v) for k, v in names.items()}


def _parse_size(meta: dict, shape) -> tuple[int, int]:
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[2]), int(shape[3])
    try:
        value = ast.literal_eval(meta.get("imgsz", ""))
        if isinstance(value, int):
            return value, value
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
    except (ValueError, SyntaxError):
        pass
    return _DEFAULT_SIZE, _DEFAULT_SIZE


@dataclass(frozen=True, eq=False)
class Detector:
    """A loaded ONNX detector. Call it on ``(B, 3, H, W)`` images to get a :class:`RegionBatch`.

    Attributes:
        path: the model file. session: the onnxruntime session. provider: where it runs.
        names: class index → label from the metadata, or None (see :meth:`label`).
        input_size: ``(S_h, S_w)``. input_name, input_dtype: the session's input.
    """

    path: str
    session: object
    provider: str
    names: dict[int, str] | None
    input_size: tuple[int, int]
    input_name: str
    input_dtype: torch.dtype

    @property
    def source(self) -> str:
        return f"onnx:{os.path.basename(self.path)}"

    @property
    def known_labels(self) -> tuple[str, ...] | None:
        """The labels the model can emit, from its metadata's ``names``; None when it does not list them."""
        return tuple(dict.fromkeys(self.names.values())) if self.names else None

    def label(self, cls: int, num_classes: int) -> str:
        """The label of class ``cls``: from ``names``; else, for a one-class model, from the file
        name; else ``class<cls>``."""
        if self.names is not None and cls in self.names:
            return self.names[cls]
        guess = labels_from_filename(self.path) if num_classes == 1 else None
        return guess or f"class{cls}"

    def __call__(self, image: torch.Tensor, *, threshold: float = 0.5, iou: float = 0.45,
                 max_per_image: int = 100, labels=None) -> RegionBatch:
        """Detect on every image. ``labels`` (set of str or None = all) keeps only those labels.
        ``-> RegionBatch`` with one tuple of regions per image, best score first."""
        image = check_image(image, "Detector").float()
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"Detector: threshold and iou must be in [0, 1], got threshold={threshold}, iou={iou}")
        if max_per_image < 1:
            raise ValueError(f"Detector: max_per_image must be at least 1, got {max_per_image}")
        regions = tuple(self._detect_one(img, threshold, iou, max_per_image, labels) for img in image)
        sizes = tuple((int(image.shape[2]), int(image.shape[3])) for _ in range(image.shape[0]))
        return RegionBatch(regions, sizes)

    def _detect_one(self, img: torch.Tensor, threshold, iou, max_per_image, labels) -> tuple[Region, ...]:
        _, h, w = img.shape
        x, (sx, sy), (left, top) = letterbox(img.cpu(), self.input_size)
        feed = x[None].to(self.input_dtype).numpy()
        outputs = self.session.run(None, {self.input_name: feed})
        pred = torch.from_numpy(outputs[0]).float()
        protos = torch.from_numpy(outputs[1]).float()[0] if len(outputs) > 1 and outputs[1].ndim == 4 else None
        nm = protos.shape[0] if protos is not None else 0
        if pred.ndim != 3 or pred.shape[0] != 1:
            raise ValueError(f"Detector: {self.source} output 0 must be (1, 4 + classes, anchors), got {tuple(pred.shape)}")
        pred = pred[0]
        if self.names is not None and pred.shape[0] != 4 + len(self.names) + nm and pred.shape[1] == 4 + len(self.names) + nm:
            pred = pred.T  # some exporters put anchors first
        nc = pred.shape[0] - 4 - nm
        if nc < 1:
            raise ValueError(
                f"Detector: {self.source} output 0 has {pred.shape[0]} rows, expected 4 box rows + class scores"
                + (f" + {nm} mask coefficients" if nm else "") + "; is this a YOLOv8-style detector?"
            )
        boxes_c, cls_scores, coeffs = pred[:4].T, pred[4 : 4 + nc].T, pred[4 + nc :].T
        scores, classes = cls_scores.max(dim=1)
        keep = scores >= threshold
        if labels is not None:
            wanted = torch.tensor([self.label(c, nc) in labels for c in range(nc)])
            keep &= wanted[classes]
        idx = keep.nonzero()[:, 0]
        idx = idx[scores[idx].argsort(descending=True)][:_PRE_NMS]
        cx, cy, bw, bh = boxes_c[idx].unbind(1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        # Letterbox input pixels → image pixels.
        xyxy[:, 0::2] = (xyxy[:, 0::2] - left) / sx
        xyxy[:, 1::2] = (xyxy[:, 1::2] - top) / sy
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
        ok = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)
        idx, xyxy = idx[ok], xyxy[ok]
        kept = batched_nms(xyxy, scores[idx], classes[idx], iou)[:max_per_image]
        found = []
        for k in kept.tolist():
            i, box = int(idx[k]), tuple(float(v) for v in xyxy[k])
            mask = None
            if protos is not None:
                mask = self._instance_mask(coeffs[i], protos, box, (sx, sy), (left, top))
                if not bool(mask.any()):
                    continue
            found.append(Region(self.label(int(classes[i]), nc), box, min(1.0, float(scores[i])), mask=mask,
                                source=self.source))
        return tuple(found)

    def _instance_mask(self, coeff: torch.Tensor, protos: torch.Tensor, box, scale, pad) -> torch.Tensor:
        """The instance mask over the box's pixel extent, sampled from the prototypes at each
        pixel centre (so it is cut to the box by construction). ``-> (h, w)`` float32 in {0, 1}."""
        nm, mh, mw = protos.shape
        logits = (coeff @ protos.reshape(nm, -1)).reshape(1, 1, mh, mw)
        x0, y0, x1, y1 = pixel_box(box)
        sh, sw = self.input_size
        xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5) * scale[0] + pad[0]
        ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * scale[1] + pad[1]
        gy, gx = torch.meshgrid(ys / sh * 2 - 1, xs / sw * 2 - 1, indexing="ij")
        grid = torch.stack([gx, gy], dim=-1)[None]
        sampled = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        return (sampled > 0).float()  # sigmoid(z) > 0.5  ⇔  z > 0


def load_detector(path: str | os.PathLike, searched: list[str] | None = None) -> Detector:
    """Open the ONNX detector at ``path`` (session cached by :func:`~vitruvian.core.onnx_runtime.get_session`).

    Raises:
        ModelNotFoundError: no such file (``searched`` = the folders to list in the message).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"detector {os.path.basename(path)!r}", searched or [os.path.dirname(path)])
    session, provider = get_session(path)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    inp = session.get_inputs()[0]
    dtype = torch.float16 if inp.type == "tensor(float16)" else torch.float32
    return Detector(path=path, session=session, provider=provider, names=_parse_names(meta),
                    input_size=_parse_size(meta, inp.shape), input_name=inp.name, input_dtype=dtype)

