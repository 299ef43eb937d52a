"""Preview rendering in OpenPose's colours (the look pose ControlNets were trained on).

Bodies are drawn as COCO-18 (any body format is converted by joint name): limbs in OpenPose's
17 limb colours at 60 % and joints as full-colour dots; feet (from a feet part or a body25 /
mediapipe33 body) as extra limbs; hands as rainbow bones with blue joints; faces as white dots.
Points below ``min_confidence`` are not drawn, nor the bones that touch them.

Drawing uses PIL ``ImageDraw`` per frame (a few ms at 512²): it is a preview, not a training
path, so nothing here needs gradients.

Shape:
    - output: ``(B, 3, H, W)`` float32 in [0, 1]
    - image (overlay): ``(B, 3, H, W)`` float32 in [0, 1]
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import PoseFormatError
from .formats import get_format
from .keypoints import PoseBatch, PoseFrame, check_canvas

__all__ = ["render_pose", "overlay_pose", "BODY_COLORS"]

#: OpenPose's COCO-18 colours, one per joint; limb i uses colour i.
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
#: BODY-25 foot limbs (ankle → toes, heel) and their colours: left foot blue, right foot cyan.
_FOOT_BONES = ((14, 19), (19, 20), (14, 21), (11, 22), (22, 23), (11, 24))
_FOOT_COLORS = ((0, 0, 255), (0, 0, 255), (0, 0, 255), (0, 255, 255), (0, 255, 255), (0, 255, 255))
_HAND_BONES = get_format("hand21").bones
_HAND_COLORS = tuple(
    tuple(int(255 * v) for v in colorsys.hsv_to_rgb(i / len(_HAND_BONES), 1.0, 1.0)) for i in range(len(_HAND_BONES))
)
_COCO18_BONES = get_format("coco18").bones


def _xy(point, limit: float) -> tuple[float, float]:
    # PIL takes coordinates as C ints; clamp far-off points so they still clip correctly.
    return (min(max(point[0], -limit), limit), min(max(point[1], -limit), limit))


def _draw_frame(frame: PoseFrame, size: tuple[int, int], *, min_confidence: float, thickness: int, parts: set[str]):
    """Draw one frame; returns (RGB image, L mask of drawn pixels)."""
    w, h = size
    frame = frame.resized(w, h).to_pixels()
    rgb, mask = Image.new("RGB", (w, h)), Image.new("L", (w, h))
    draws = (ImageDraw.Draw(rgb), ImageDraw.Draw(mask))
    limit = 4.0 * max(w, h)

    def line(a, b, color, width):
        for d, fill in zip(draws, (color, 255)):
            d.line([_xy(a, limit), _xy(b, limit)], fill=fill, width=width)

    def dot(p, color, r):
        x, y = _xy(p, limit)
        for d, fill in zip(draws, (color, 255)):
            d.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    def shown(p) -> bool:  # a missing point is 0, 0, 0: never drawn, even at min_confidence 0
        return p[2] > 0 and p[2] >= min_confidence

    def limbs(k, bones, colors, width, scale=1.0):
        for (i, j), color in zip(bones, colors):
            if shown(k[i]) and shown(k[j]):
                line(k[i], k[j], tuple(int(c * scale) for c in color), width)

    for person in frame.people:
        if "body" in parts and person.body is not None:
            k = person.body_as("coco18").tolist()
            limbs(k, _COCO18_BONES, BODY_COLORS, 2 * thickness, scale=0.6)
            feet = person.body_as("body25").tolist()
            limbs(feet, _FOOT_BONES, _FOOT_COLORS, 2 * thickness, scale=0.6)
            for p, color in list(zip(k, BODY_COLORS)) + [(feet[j], c) for (_, j), c in zip(_FOOT_BONES, _FOOT_COLORS)]:
                if shown(p):
                    dot(p, color, thickness)
        if "hands" in parts:
            for hand in (person.left_hand, person.right_hand):
                if hand is not None:
                    k = hand.keypoints.tolist()
                    limbs(k, _HAND_BONES, _HAND_COLORS, max(1, thickness // 2))
                    for p in k:
                        if shown(p):
                            dot(p, (0, 0, 255), thickness)
        if "face" in parts and person.face is not None:
            for p in person.face.keypoints.tolist():
                if shown(p):
                    dot(p, (255, 255, 255), max(1, thickness - 1))
    return rgb, mask


def _to_tensor(img: Image.Image) -> torch.Tensor:
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return (a.permute(2, 0, 1) if a.ndim == 3 else a[None]).float() / 255


def _check(batch: PoseBatch, min_confidence: float, thickness: int, parts, fn: str) -> set[str]:
    if not isinstance(batch, PoseBatch):
        raise PoseFormatError(f"{fn}: pose must be a PoseBatch, got {type(batch).__name__}")
    if not 0 <= min_confidence <= 1:
        raise PoseFormatError(f"{fn}: min_confidence must be in [0, 1], got {min_confidence}")
    if not isinstance(thickness, int) or thickness < 1:
        raise PoseFormatError(f"{fn}: thickness must be a positive int (pixels), got {thickness!r}")
    parts = set(parts)
    unknown = parts - {"body", "hands", "face"}
    if unknown:
        raise PoseFormatError(f"{fn}: parts must be among body, hands, face, got {sorted(unknown)}")
    return parts


def render_pose(
    batch: PoseBatch,
    *,
    size: tuple[int, int] | None = None,
    min_confidence: float = 0.3,
    thickness: int = 4,
    parts=("body", "hands", "face"),
) -> torch.Tensor:
    """Draw each frame on a black canvas.

    Args:
        batch: B frames (any coordinate space).
        size: ``(width, height)`` of the canvas; default each frame's own canvas (then all
            frames must share one size). Poses are scaled to fit.
        min_confidence: points below it are not drawn (DWPose uses 0.3).
        thickness: body limb half-width and joint radius in pixels (OpenPose's 4).
        parts: which of ``"body"``, ``"hands"``, ``"face"`` to draw.

    Returns:
        ``(B, 3, H, W)`` float32 in [0, 1].

    Example:
        >>> from vitruvian.core.pose import Part, Person, PoseFrame
        >>> frame = PoseFrame((Person(body=Part("coco17", torch.rand(17, 3))),), 64, 48, "normalized")
        >>> render_pose(PoseBatch((frame,))).shape
        torch.Size([1, 3, 48, 64])
    """
    parts = _check(batch, min_confidence, thickness, parts, "render_pose")
    if size is None:
        sizes = sorted({(f.canvas_width, f.canvas_height) for f in batch})
        if len(sizes) != 1:
            got = " and ".join(f"{w}×{h}" for w, h in sizes) if sizes else "no frames"
            raise PoseFormatError(
                f"render_pose: frames must share one canvas size to stack, got {got}; pass size=(width, height)"
            )
        size = sizes[0]
    check_canvas(size[0], size[1], where="render_pose: size")
    out = [_to_tensor(_draw_frame(f, size, min_confidence=min_confidence, thickness=thickness, parts=parts)[0]) for f in batch]
    if not out:
        return torch.zeros(0, 3, size[1], size[0])
    return torch.stack(out)


def overlay_pose(
    image: torch.Tensor,
    batch: PoseBatch,
    *,
    opacity: float = 1.0,
    min_confidence: float = 0.3,
    thickness: int = 4,
    parts=("body", "hands", "face"),
) -> torch.Tensor:
    """Draw the poses over images, each pose scaled from its canvas to the image size.

    Args:
        image: ``(B, 3, H, W)`` float32 in [0, 1]. A single image is reused for every frame and a
            single frame for every image; otherwise the batch sizes must match.
        batch: the poses.
        opacity: 1 paints the skeleton over the image; lower values blend it in.

    Returns:
        ``(max(B, len(batch)), 3, H, W)`` float32 in [0, 1].
    """
    parts = _check(batch, min_confidence, thickness, parts, "overlay_pose")
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        hint = "; ComfyUI IMAGE is (B, H, W, C), use image.movedim(-1, 1)" if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] == 3 else ""
        raise PoseFormatError(f"overlay_pose: image must be (B, 3, H, W), got {got}{hint}")
    if not 0 <= opacity <= 1:
        raise PoseFormatError(f"overlay_pose: opacity must be in [0, 1], got {opacity}")
    b_img, b_pose = image.shape[0], len(batch)
    if b_pose == 0 or (b_img != b_pose and 1 not in (b_img, b_pose)):
        raise PoseFormatError(f"overlay_pose: image batch {b_img} and pose batch {b_pose} must match (or one be 1)")
    h, w = image.shape[-2:]
    out = []
    for i in range(max(b_img, b_pose)):
        rgb, mask = _draw_frame(batch[min(i, b_pose - 1)], (w, h), min_confidence=min_confidence, thickness=thickness, parts=parts)
        alpha = _to_tensor(mask).to(image.device) * opacity
        base = image[min(i, b_img - 1)].float()
        out.append(base * (1 - alpha) + _to_tensor(rgb).to(image.device) * alpha)
    return torch.stack(out).clamp(0, 1)
