"""Turn one record's bytes into a training item: decode, one shared geometric augmentation, tensors.

The augmentation (resize the shorter side to R with antialiased bicubic, crop R x R, optional
horizontal flip) is drawn once per record and applied identically to the image, its pair partner, its
boxes (transformed, clipped, empty ones dropped) and its quality maps (bilinear, antialiased). It is
summarised as ``aug = (flip, crop_x, crop_y)``: the crop's top-left corner in the first image after
resizing; a partner of another size gets the proportional offset, so ``aug`` (with the sizes)
determines every pixel and a latent cache may key on it.

Item layout (N = 2 for pairs, chosen first; N = 1 for single images)::

    key         str, sha256 (32 hex) of the record text and every image / map file's bytes
    prompt      str
    pixels      (N, 3, R, R) float32 in [-1, 1]
    source      str: "generated" | "real" | "reconstructed"
    face_boxes  list of N float32 tensors (k, 4): x0, y0, x1, y1 in pixels of the augmented R x R image
    hand_boxes  same
    quality     (N, 1, R, R) float32 in [0, 1], or None when the record has no map (a missing map of a
                pair whose other image has one is all ones: "no known defect")
    pose        only for records with a pose: PoseFrame on the R x R crop (pixels, flipped with its labels
                swapped; see ``poses``)
    aug         (flip: bool, crop_x: int, crop_y: int)
    decoded     bool: False when ``make_item(decode=False)`` left ``pixels`` as zeros (the trainer's latent cache
                holds the item)
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Geometry", "content_key", "read_quality_map", "plan_augmentation", "geometry_for", "make_item",
           "warp_image", "warp_boxes", "warp_map"]


@dataclass(frozen=True)
class Geometry:
    """How one source image of size ``size`` (W, H) maps onto the R x R training crop."""

    size: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int]
    flip: bool
    resolution: int


def content_key(text: str, blobs: list[bytes | None]) -> str:
    """Stable content hash: sha256 over the record text and each file's bytes (length-prefixed)."""
    h = hashlib.sha256(text.encode("utf-8"))
    for blob in blobs:
        blob = b"" if blob is None else blob
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.hexdigest()[:32]


def read_quality_map(data: bytes, name: str) -> np.ndarray:
    """A patch-quality map ``(H, W)`` float32 in [0, 1] from ``.npy`` or greyscale ``.png`` bytes.

    Raises ValueError (message without the key, the caller prefixes it) for anything else.
    """
    suffix = name.rsplit(".", 1)[-1].lower()
    if suffix == "npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:  # object arrays need pickle, which is refused
            raise ValueError(f"cannot read {name!r} as a numeric .npy array ({e})") from None
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{name!r} must be a numeric array of shape (H, W) or (1, H, W), "
                             f"got {arr.dtype} {tuple(arr.shape)}")
        arr = arr.astype(np.float32)
    elif suffix == "png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = im.mode
                arr = np.asarray(im).astype(np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read {name!r} as a PNG ({e})") from None
        scale = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}.get(mode)
        if scale is None:
            raise ValueError(f"{name!r} must be a greyscale PNG (mode L or I;16), got mode {mode}; "
                             "fix: save it with PIL .convert('L')")
        arr = arr / scale
    else:
        raise ValueError(f"{name!r} must be a .npy or .png quality map, got a .{suffix} file")
    if arr.size == 0 or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size else (None, None)
        raise ValueError(f"{name!r} must hold finite values in [0, 1], got range [{lo}, {hi}] "
                         f"shape {tuple(arr.shape)}")
    return arr


def plan_augmentation(size: tuple[int, int], resolution: int, rng: np.random.Generator, *,
                      random_flip: bool, random_crop: bool) -> tuple[bool, int, int]:
    """Draw ``aug = (flip, crop_x, crop_y)`` for a record whose first image is ``size`` (W, H).

    Always draws three uniforms (flip, x, y) so the stream of draws does not depend on the settings.
    """
    u_flip, u_x, u_y = rng.random(3)
    rw, rh = _resized(size, resolution)
    slack_x, slack_y = rw - resolution, rh - resolution
    if random_crop:
        crop_x, crop_y = min(int(u_x * (slack_x + 1)), slack_x), min(int(u_y * (slack_y + 1)), slack_y)
    else:
        crop_x, crop_y = slack_x // 2, slack_y // 2
    return (bool(random_flip and u_flip < 0.5), crop_x, crop_y)


def geometry_for(size: tuple[int, int], first_size: tuple[int, int], aug: tuple[bool, int, int],
                 resolution: int) -> Geometry:
    """The geometry of an image of ``size`` in a record whose first image is ``first_size``."""
    flip, crop_x, crop_y = aug
    resized = _resized(size, resolution)
    first = _resized(first_size, resolution)
    crop = tuple(_scale_offset(c, f - resolution, r - resolution)
                 for c, f, r in zip((crop_x, crop_y), first, resized))
    return Geometry(size=tuple(size), resized=resized, crop=crop, flip=flip, resolution=resolution)


def warp_image(image: Any, g: Geometry):
    """PIL image (any mode) -> ``(3, R, R)`` float32 in [-1, 1]: RGB, resized, cropped, flipped."""
    import torch
    from PIL import Image

    image = image.convert("RGB")
    if image.size != g.resized:
        image = image.resize(g.resized, Image.Resampling.BICUBIC)  # PIL antialiases when shrinking
    x, y, r = *g.crop, g.resolution
    image = image.crop((x, y, x + r, y + r))
    if g.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.array(image, dtype=np.uint8)  # (R, R, 3), a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def warp_map(quality: np.ndarray, g: Geometry):
    """Quality map ``(h, w)`` in [0, 1], covering the whole image -> ``(1, R, R)`` float32 in [0, 1]."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(quality, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=(g.resized[1], g.resized[0]), mode="bilinear", align_corners=False, antialias=True)
    x, y, r = *g.crop, g.resolution
    t = t[0, :, y:y + r, x:x + r]
    return (t.flip(-1) if g.flip else t).clamp_(0.0, 1.0).contiguous()


def warp_boxes(boxes: tuple, g: Geometry):
    """Boxes ``(k, 4)`` x0, y0, x1, y1 in source pixels -> ``(k', 4)`` float32 in the R x R crop.

    Scaled, shifted by the crop, mirrored when flipped, clipped to [0, R]; boxes left with no area
    (entirely outside the crop) are dropped, so k' <= k.
    """
    import torch

    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    sx, sy = g.resized[0] / g.size[0], g.resized[1] / g.size[1]
    x, y, r = *g.crop, g.resolution
    b = b * torch.tensor([sx, sy, sx, sy]) - torch.tensor([x, y, x, y], dtype=torch.float32)
    if g.flip:
        b = torch.stack([r - b[:, 2], b[:, 1], r - b[:, 0], b[:, 3]], dim=1)
    b = b.clamp(0.0, float(r))
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])].contiguous()


def make_item(*, text: str, prompt: str, source: str, images: list[bytes], boxes: dict[str, tuple],
              quality: list[tuple[bytes, str] | None], resolution: int, rng: np.random.Generator,
              random_flip: bool, random_crop: bool, pose: bytes | str | None = None,
              decode: bool = True) -> dict[str, Any]:
    """Decode and augment one record. ``images`` are file bytes, chosen first; ``boxes[kind][i]`` the
    boxes of image i; ``quality[i]`` is ``(bytes, file name)`` or None; ``pose`` the keypoint JSON of the
    first image (file bytes or inline text) or None. Layout: see the module docstring.

    ``decode=False`` (the trainer, once the latent cache holds every item): the images' pixels are not decoded
    (only their headers are read, for the sizes the geometry needs); ``pixels`` is a zero tensor of the same
    shape that owns no memory, and ``decoded`` is False, so an encoder that would need the pixels can refuse.
    """
    import torch
    from PIL import Image

    from .poses import read_record_pose, warp_pose

    blobs = [*images, *(q[0] if q else None for q in quality)]
    if pose is not None:  # records without a pose keep their keys (and latent-cache entries)
        blobs.append(pose.encode("utf-8") if isinstance(pose, str) else pose)
    key = content_key(text, blobs)
    pil = [Image.open(io.BytesIO(blob)) for blob in images]
    sizes = [im.size for im in pil]
    aug = plan_augmentation(sizes[0], resolution, rng, random_flip=random_flip, random_crop=random_crop)
    geoms = [geometry_for(s, sizes[0], aug, resolution) for s in sizes]
    if decode:
        pixels = torch.stack([warp_image(im, g) for im, g in zip(pil, geoms)])
    else:
        pixels = torch.zeros(()).expand(len(pil), 3, resolution, resolution)
    maps = None
    if any(q is not None for q in quality):
        ones = torch.ones(1, resolution, resolution)
        maps = torch.stack([warp_map(read_quality_map(*q), g) if q is not None else ones
                            for q, g in zip(quality, geoms)])
    item = {"key": key, "prompt": prompt, "pixels": pixels, "source": source}
    for kind in ("face_boxes", "hand_boxes"):
        per_image = boxes.get(kind) or ((),) * len(images)
        item[kind] = [warp_boxes(b, g) for b, g in zip(per_image, geoms)]
    item["quality"] = maps
    if pose is not None:
        item["pose"] = warp_pose(read_record_pose(pose, sizes[0]), geoms[0])
    item["aug"] = aug
    item["decoded"] = decode
    return item


def _resized(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(W, H) after scaling the shorter side to ``resolution`` (the longer side rounds, never below R)."""
    w, h = size
    s = resolution / min(w, h)
    return max(resolution, round(w * s)), max(resolution, round(h * s))


def _scale_offset(offset: int, slack_first: int, slack: int) -> int:
    if slack_first == slack:
        return offset
    if slack_first == 0:
        return slack // 2
    return min(slack, round(offset * slack / slack_first))
