"""Keypoint error of generated images against the pose they were conditioned on, with any pose estimator.

An estimator is any callable ``images (B, 3, H, W) in [0, 1] → people per image`` (each person a
``(K, 3)`` tensor ``x, y, confidence`` in pixels of the image, in the estimator's keypoint format).
:class:`OnnxHeatmapEstimator` wraps a single-person heatmap ONNX model (HRNet / ViTPose / SimpleBaseline
style: one ``(K, h, w)`` heatmap per keypoint); bottom-up or multi-person estimators plug in the same way.

Metrics (per image, then averaged over images), for the target's visible keypoints (confidence ≥
``min_confidence``) after matching each target person to its nearest predicted person:

- ``ap``: distance-AP-style score, the fraction of keypoints whose distance, divided by the target
  person's box diagonal, is within a threshold, averaged over thresholds 0.05, 0.10, …, 0.50 (the area under
  the PCK curve; a keypoint the estimator misses counts as beyond every threshold). This is *not* COCO's
  OKS AP nor HumanSD's exact metric; it is the same idea without per-joint σ.
- ``mean_distance``: the mean normalised distance over detected keypoints (``mean_distance_px`` in pixels).
- ``detected``: the fraction of target keypoints the estimator found.

CLI::

    python -m vitruvian.core.pose_adapter.evaluate --model pose.onnx --pose target.json image.png [...]
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError, PoseFormatError
from ..pose import BODY_FORMATS, PoseBatch

__all__ = ["THRESHOLDS", "PoseError", "OnnxHeatmapEstimator", "keypoint_error", "pose_error", "main"]

#: Normalised distance thresholds averaged by ``ap``.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 11))
Estimator = Callable[[torch.Tensor], Sequence[Sequence[torch.Tensor]]]


@dataclass(frozen=True)
class PoseError:
    """Keypoint error of a batch (means over images) and per image (lists)."""

    ap: float
    mean_distance: float
    mean_distance_px: float
    detected: float
    per_image_ap: list[float] = field(default_factory=list)
    per_image_mean_distance: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (f"AP {self.ap:.3f} (PCK averaged over {THRESHOLDS[0]}…{THRESHOLDS[-1]} of the box diagonal), "
                f"mean distance {self.mean_distance:.3f} of the diagonal ({self.mean_distance_px:.1f} px), "
                f"{self.detected:.0%} of target keypoints detected, {len(self.per_image_ap)} image(s)")

    def to_dict(self) -> dict:
        return asdict(self)


class OnnxHeatmapEstimator:
    """A single-person heatmap model in ONNX (run with onnxruntime on the CPU unless told otherwise).

    Args:
        path: the ``.onnx`` file. Input ``(B, 3, H, W)`` float32 RGB, output ``(B, K, h, w)`` heatmaps.
        keypoint_format: the body format of its K outputs (``coco17`` for COCO models).
        input_size: ``(H, W)`` when the model's input shape is dynamic.
        mean, std: input normalisation after scaling to [0, 1] (ImageNet's by default; (0, 1) for none).
        providers: onnxruntime execution providers.

    The whole image is resized to the input size (top-down models expect one person filling the frame);
    each keypoint is the arg-max of its heatmap, its confidence the heatmap's maximum clipped to [0, 1].
    """

    def __init__(self, path: str | os.PathLike, *, keypoint_format: str = "coco17", input_size=None,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), providers=("CPUExecutionProvider",)):
        import onnxruntime as ort

        if keypoint_format not in BODY_FORMATS:
            raise ConfigError(f"OnnxHeatmapEstimator: keypoint_format must be one of {', '.join(BODY_FORMATS)}, "
                              f"got {keypoint_format!r}")
        self.session = ort.InferenceSession(os.fspath(path), providers=list(providers))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if input_size is None:
            if not all(isinstance(d, int) for d in shape[2:]):
                raise ConfigError(f"OnnxHeatmapEstimator: {os.fspath(path)!r} has a dynamic input {shape}; "
                                  "pass input_size=(H, W)")
            input_size = (shape[2], shape[3])
        self.input_size = tuple(input_size)
        self.keypoint_format = keypoint_format
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> list[list[torch.Tensor]]:
        """``(B, 3, H, W)`` in [0, 1] → one ``(K, 3)`` person per image, in that image's pixels."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"OnnxHeatmapEstimator: images must be (B, 3, H, W), got {tuple(images.shape)}")
        b, _, H, W = images.shape
        x = F.interpolate(images.float().cpu(), size=self.input_size, mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).numpy()
        heat = torch.from_numpy(self.session.run(None, {self.input_name: x})[0]).float()  # (B, K, h, w)
        k, h, w = heat.shape[1:]
        peak, arg = heat.reshape(b, k, h * w).max(dim=-1)
        xs = ((arg % w).float() + 0.5) * W / w - 0.5
        ys = ((arg // w).float() + 0.5) * H / h - 0.5
        people = torch.stack([xs, ys, peak.clamp(0, 1)], dim=-1)  # (B, K, 3)
        return [[people[i]] for i in range(b)]


def _visible_box_diagonal(kp: torch.Tensor, visible: torch.Tensor) -> float:
    pts = kp[visible, :2]
    if pts.shape[0] < 2:
        return 1.0
    return float((pts.max(0).values - pts.min(0).values).norm().clamp_min(1.0))


def keypoint_error(predicted: Sequence[Sequence[torch.Tensor]], target: PoseBatch, *, image_size: tuple[int, int],
                   keypoint_format: str = "coco17", min_confidence: float = 0.3) -> PoseError:
    """Compare predicted people with the target pose (see the module docstring for the metrics).

    Args:
        predicted: per image, a list of ``(K, 3)`` people in ``keypoint_format``, pixels of the image.
        target: the poses the images should show (one frame per image, or one frame for all).
        image_size: ``(W, H)`` of the images (the target is scaled from its canvas to it).
        keypoint_format: the body format of the predictions; targets are converted to it by joint name.
        min_confidence: target keypoints below it are not scored; predictions below it count as missed.

    Example:
        >>> from vitruvian.core.pose import Part, Person, PoseFrame
        >>> kp = torch.tensor([[10.0, 10, 1], [50, 10, 1], [30, 60, 1]] + [[0.0, 0, 0]] * 14)
        >>> target = PoseBatch((PoseFrame((Person(body=Part("coco17", kp)),), 64, 64),))
        >>> keypoint_error([[kp]], target, image_size=(64, 64)).ap
        1.0
    """
    if keypoint_format not in BODY_FORMATS:
        raise ConfigError(f"keypoint_error: keypoint_format must be one of {', '.join(BODY_FORMATS)}, got {keypoint_format!r}")
    if not isinstance(target, PoseBatch) or len(target) == 0:
        raise PoseFormatError("keypoint_error: target must be a non-empty PoseBatch (the pose the images should show)")
    if len(target) not in (1, len(predicted)):
        raise PoseFormatError(f"keypoint_error: target must have 1 frame or one per image ({len(predicted)}), "
                              f"got {len(target)}")
    W, H = image_size
    per_ap, per_dist, all_px, all_norm, found, total = [], [], [], [], 0, 0
    for i, people in enumerate(predicted):
        frame = target[min(i, len(target) - 1)].resized(W, H).to_pixels()
        hits = torch.zeros(len(THRESHOLDS))
        n_img, dists = 0, []
        used: set[int] = set()
        for person in frame.people:
            t = person.body_as(keypoint_format)
            if t is None:
                continue
            vis = t[:, 2] >= min_confidence
            n = int(vis.sum())
            if n == 0:
                continue
            diag = _visible_box_diagonal(t, vis)
            best, best_d = None, None
            for j, p in enumerate(people):
                if j in used:
                    continue
                ok = vis & (p[:, 2] >= min_confidence)
                d = ((p[:, :2] - t[:, :2]).norm(dim=1) / diag)
                score = float(d[ok].mean()) if ok.any() else float("inf")
                if best is None or score < best[1]:
                    best, best_d = (j, score), d
            n_img += n
            if best is None or best[1] == float("inf"):
                continue
            used.add(best[0])
            ok = vis & (people[best[0]][:, 2] >= min_confidence)
            d = best_d[ok]
            dists.append(d)
            all_px.append(d * diag)
            found += int(ok.sum())
            hits += torch.tensor([float((d <= th).sum()) for th in THRESHOLDS])
        total += n_img
        if n_img == 0:
            raise PoseFormatError(f"keypoint_error: target image {i} must have visible {keypoint_format} keypoints "
                                  f"(confidence >= {min_confidence}), got none")
        per_ap.append(float((hits / n_img).mean()))
        d = torch.cat(dists) if dists else torch.zeros(0)
        per_dist.append(float(d.mean()) if d.numel() else float("nan"))
        all_norm.append(d)
    norm = torch.cat(all_norm) if all_norm else torch.zeros(0)
    px = torch.cat(all_px) if all_px else torch.zeros(0)
    nan = float("nan")
    return PoseError(ap=sum(per_ap) / len(per_ap), mean_distance=float(norm.mean()) if norm.numel() else nan,
                     mean_distance_px=float(px.mean()) if px.numel() else nan, detected=found / max(total, 1),
                     per_image_ap=per_ap, per_image_mean_distance=per_dist)


def pose_error(images: torch.Tensor, target: PoseBatch, estimator: Estimator, *, keypoint_format: str | None = None,
               min_confidence: float = 0.3) -> PoseError:
    """Run ``estimator`` on ``images (B, 3, H, W)`` in [0, 1] and score against ``target``."""
    fmt = keypoint_format or getattr(estimator, "keypoint_format", "coco17")
    with torch.no_grad():
        predicted = estimator(images)
    return keypoint_error(predicted, target, image_size=(images.shape[-1], images.shape[-2]), keypoint_format=fmt,
                          min_confidence=min_confidence)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from PIL import Image

    from ..pose import load_pose

    parser = argparse.ArgumentParser(prog="python -m vitruvian.core.pose_adapter.evaluate",
                                     description="Keypoint error of images against a target pose (JSON).")
    parser.add_argument("images", nargs="+", help="Image files (one per pose frame, or any number for one frame).")
    parser.add_argument("--pose", required=True, help="Target pose JSON (any format load_pose reads).")
    parser.add_argument("--model", required=True, help="Heatmap pose estimator (.onnx).")
    parser.add_argument("--keypoint-format", default="coco17", choices=BODY_FORMATS)
    parser.add_argument("--min-confidence", type=float, default=0.3)
    args = parser.parse_args(argv)
    with open(args.pose, encoding="utf-8") as f:
        target = load_pose(f.read()).pose
    imgs = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in args.images]
    sizes = {im.shape[:2] for im in imgs}
    if len(sizes) != 1:
        raise ConfigError(f"evaluate: images must share one size, got {sorted(sizes)}")
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    estimator = OnnxHeatmapEstimator(args.model, keypoint_format=args.keypoint_format)
    report = pose_error(images, target, estimator, min_confidence=args.min_confidence)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
