"""Face, hand and person regions from keypoints (no model needed).

What each region is made of, per person:

- **face**: the ``face`` part (face-68/70) when at least :data:`MIN_HULL_POINTS` of its points are
  confident → box = the points' bounds, grown; mask = their convex hull grown by a few pixels;
  ``source = "keypoints:face68:hull"``. Otherwise an estimate from the body's nose, eyes, ears and
  mouth (a square box of about 1.35 × the spread of those points, centred a little below the eyes;
  an upright elliptical mask, 0.85 as wide as tall); ``source = "keypoints:<body format>:estimate"``.
- **hand**: each ``left_hand`` / ``right_hand`` part (hand-21) the same way (hull mask,
  ``handedness`` from the part). Otherwise an estimate from the body: MediaPipe's wrist with its
  index and pinky knuckles (hand ≈ 2.4 × wrist-to-knuckles long), or, for COCO / BODY-25 bodies,
  the wrist and the forearm direction (hand ≈ 0.75 × the forearm, beyond the wrist); elliptical
  mask; handedness from the body side.
- **person**: the bounds of every confident keypoint of the person, grown by 10 %; no mask.

``score`` is the mean confidence of the keypoints used; a keypoint is used when its confidence
is at least ``min_confidence``. Regions are clipped to the image; one wholly outside is dropped.

Keypoints come in the pose's canvas; :func:`regions_from_pose` takes the image sizes and rescales
the pose to them when the aspect ratio matches (within :data:`ASPECT_TOLERANCE`): a pose estimated at
another resolution of the same picture. Refused (:func:`pose_fit_problem`): another aspect ratio (the
pose belongs to another image or crop), an image with a side under :data:`MIN_IMAGE_SIDE` pixels (no
face or hand can be found on it), and a rescale by more than :data:`MAX_RESCALE` × either way (a 512²
pose on a 1×1 image is not the same picture).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from ..errors import PoseFormatError
from ..pose import Person, PoseBatch, PoseFrame, get_format
from .shapes import convex_hull, ellipse_mask, hull_mask
from .types import LABELS, Region, RegionBatch, pixel_box

__all__ = ["regions_from_pose", "regions_from_person", "pose_fit_problem", "MIN_HULL_POINTS", "ASPECT_TOLERANCE",
           "MIN_IMAGE_SIDE", "MAX_RESCALE"]

#: A hull needs this many confident points, else the part is treated as missing.
MIN_HULL_POINTS = 3
#: Relative aspect-ratio difference under which a pose canvas is rescaled to the image size.
ASPECT_TOLERANCE = 0.01
#: Keypoint regions need an image at least this many pixels on each side.
MIN_IMAGE_SIDE = 16
#: A pose canvas is rescaled to its image by at most this factor, up or down.
MAX_RESCALE = 32
_FACE_JOINTS = ("nose", "left_eye", "right_eye", "left_eye_inner", "right_eye_inner", "left_eye_outer",
                "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right")
_FACE_BOX_SCALE = 1.35  # box side / spread of the face points (MediaPipe's detector boxes on frontal faces)
_FACE_OVAL = 0.85  # face width / height of the estimated face ellipse
_PERSON_PAD = 0.10


def _used(keypoints: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """The rows of ``keypoints`` ``(K, 3)`` confident enough to use. ``-> (N, 3)``."""
    return keypoints[keypoints[:, 2] >= min_confidence]


def _hull_region(label: str, points: torch.Tensor, keypoints: torch.Tensor, source: str, *,
                 grow: float, handedness: str | None = None) -> Region | None:
    """Region over the convex hull of ``points`` ``(N, 3)`` grown by ``grow`` × its size (≥ 2 px)."""
    hull = convex_hull(points[:, :2])
    if hull.shape[0] < 3:
        return None  # collinear or repeated points: no area
    lo, hi = points[:, :2].min(0).values, points[:, :2].max(0).values
    margin = max(2.0, grow * float((hi - lo).max()))
    box = (float(lo[0]) - margin, float(lo[1]) - margin, float(hi[0]) + margin, float(hi[1]) + margin)
    return Region(label, box, float(points[:, 2].mean()), mask=hull_mask(hull, pixel_box(box), margin),
                  keypoints=keypoints, handedness=handedness, source=source)


def _ellipse_region(label: str, centre: tuple[float, float], width: float, height: float, score: float,
                    keypoints: torch.Tensor, source: str, handedness: str | None = None,
                    scale_x: float = 1.0) -> Region | None:
    if not (width > 1 and height > 1 and all(math.isfinite(v) for v in (*centre, width, height))):
        return None
    cx, cy = centre
    box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
    return Region(label, box, score, mask=ellipse_mask(box, pixel_box(box), scale_x=scale_x), keypoints=keypoints,
                  handedness=handedness, source=source)


def _joints(person: Person, min_confidence: float) -> dict[str, torch.Tensor]:
    """Confident body joints by canonical name: name → ``(3,)``."""
    if person.body is None:
        return {}
    fmt = get_format(person.body.format)
    return {name: row for name, row in zip(fmt.joints, person.body.keypoints) if float(row[2]) >= min_confidence}


def _face_estimate(person: Person, joints: dict[str, torch.Tensor]) -> Region | None:
    named = {n: joints[n] for n in _FACE_JOINTS if n in joints}
    if len(named) < 2 or "nose" not in named and len(named) < 3:
        return None
    pts = torch.stack(list(named.values()))
    spread = pts[:, :2].max(0).values - pts[:, :2].min(0).values
    size = float(spread.max())
    if "nose" in named:  # a profile shows one ear: nose-to-ear is then the best measure of scale
        for ear in ("left_ear", "right_ear"):
            if ear in named:
                size = max(size, 1.5 * float(torch.dist(named["nose"][:2], named[ear][:2])))
    side = _FACE_BOX_SCALE * size
    eyes = [named[n] for n in ("left_eye", "right_eye") if n in named]
    cx = float(pts[:, 0].mean())
    if eyes:
        cy = float(torch.stack(eyes)[:, 1].mean()) + 0.1 * side  # the face centre is below the eyes
    else:
        cy = float(pts[:, 1].mean())
    source = f"keypoints:{person.body.format}:estimate"
    # The box is square (as face detectors' are); the face inside it is an upright oval.
    return _ellipse_region("face", (cx, cy), side, side, float(pts[:, 2].mean()), pts, source, scale_x=_FACE_OVAL)


def _hand_estimate(person: Person, joints: dict[str, torch.Tensor], side: str) -> Region | None:
    wrist = joints.get(f"{side}_wrist")
    if wrist is None:
        return None
    source = f"keypoints:{person.body.format}:estimate"
    knuckles = [joints[f"{side}_{n}"] for n in ("index", "pinky") if f"{side}_{n}" in joints]
    if knuckles:  # MediaPipe: the index and pinky points sit on the knuckles
        used = torch.stack([wrist, *knuckles])
        k = torch.stack(knuckles)[:, :2].mean(0)
        reach = float(torch.dist(k, wrist[:2]))
        centre = wrist[:2] + 1.1 * (k - wrist[:2])
        length = 2.4 * reach
    else:
        elbow = joints.get(f"{side}_elbow")
        if elbow is None:
            return None
        used = torch.stack([wrist, elbow])
        forearm = wrist[:2] - elbow[:2]
        length = 0.75 * float(forearm.norm())
        centre = wrist[:2] + 0.5 * length * forearm / max(float(forearm.norm()), 1e-6)
    return _ellipse_region("hand", (float(centre[0]), float(centre[1])), length, length,
                           float(used[:, 2].mean()), used, source, handedness=side)


def _person_region(person: Person, min_confidence: float) -> Region | None:
    parts = [_used(p.keypoints, min_confidence) for _, p in person.parts()]
    pts = torch.cat(parts) if parts else torch.zeros(0, 3)
    if pts.shape[0] < 2:
        return None
    lo, hi = pts[:, :2].min(0).values, pts[:, :2].max(0).values
    pad = _PERSON_PAD * (hi - lo)
    if float((hi - lo).min()) <= 0:
        return None
    box = (float(lo[0] - pad[0]), float(lo[1] - pad[1]), float(hi[0] + pad[0]), float(hi[1] + pad[1]))
    body = person.body.keypoints if person.body is not None else None
    fmt = person.body.format if person.body is not None else "parts"
    return Region("person", box, float(pts[:, 2].mean()), keypoints=body, source=f"keypoints:{fmt}")


def regions_from_person(person: Person, *, labels: Iterable[str] = LABELS, min_confidence: float = 0.3) -> list[Region]:
    """The face, hand and person regions of one person (pixel coordinates), unclipped.

    Returns a list of :class:`Region` in the order face, left hand, right hand, person (absent
    ones skipped).
    """
    labels = set(labels)
    joints = _joints(person, min_confidence)
    out: list[Region | None] = []
    if "face" in labels:
        face = None
        if person.face is not None:
            pts = _used(person.face.keypoints, min_confidence)
            if pts.shape[0] >= MIN_HULL_POINTS:
                face = _hull_region("face", pts, person.face.keypoints, f"keypoints:{person.face.format}:hull", grow=0.06)
        out.append(face if face is not None else _face_estimate(person, joints))
    if "hand" in labels:
        for side in ("left", "right"):
            part, hand = getattr(person, f"{side}_hand"), None
            if part is not None:
                pts = _used(part.keypoints, min_confidence)
                if pts.shape[0] >= MIN_HULL_POINTS:
                    hand = _hull_region("hand", pts, part.keypoints, f"keypoints:{part.format}:hull", grow=0.08,
                                        handedness=side)
            out.append(hand if hand is not None else _hand_estimate(person, joints, side))
    if "person" in labels:
        out.append(_person_region(person, min_confidence))
    return [r for r in out if r is not None]


def pose_fit_problem(canvas: tuple[int, int], image: tuple[int, int], index: int = 0) -> str:
    """Why a pose frame with a ``canvas`` of ``(width, height)`` cannot give regions of an ``image`` of
    ``(width, height)``, or ``""`` when it can (the same size, or the same aspect ratio at a scale of at
    most :data:`MAX_RESCALE` × either way, on an image of at least :data:`MIN_IMAGE_SIDE` pixels a side).

    >>> pose_fit_problem((512, 512), (1024, 1024)), pose_fit_problem((512, 768), (64, 96))
    ('', '')
    >>> pose_fit_problem((512, 512), (1, 1))[:71]
    'pose 0 has a 512×512 canvas but image 0 is 1×1: an image of at least 16'
    """
    (cw, ch), (width, height) = canvas, image
    head = f"pose {index} has a {cw}×{ch} canvas but image {index} is {width}×{height}"
    if min(width, height) < MIN_IMAGE_SIDE:
        return (f"{head}: an image of at least {MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE} pixels is expected for keypoints (no "
                "face or hand fits in less); use the full-size image")
    if (cw, ch) == (width, height):
        return ""
    if abs((cw / ch) / (width / height) - 1) > ASPECT_TOLERANCE:
        return (f"{head}; the aspect ratios differ, so the keypoints belong to another image or crop. Detect the "
                "pose on this image, or resize the image to the pose canvas")
    scale = max(cw / width, width / cw)
    if scale > MAX_RESCALE:
        return (f"{head}; rescaling the pose {scale:.3g}× (more than {MAX_RESCALE}× either way) would not be the "
                "same picture at another resolution. Detect the pose on this image, or resize the image to the "
                "pose canvas")
    return ""


def _frame_for_image(frame: PoseFrame, height: int, width: int, index: int) -> PoseFrame:
    """``frame`` in pixels of a ``width`` × ``height`` image: rescaled when only the scale differs."""
    cw, ch = frame.canvas_width, frame.canvas_height
    problem = pose_fit_problem((cw, ch), (width, height), index)
    if problem:
        raise PoseFormatError(f"regions_from_pose: {problem}")
    if (cw, ch) != (width, height):
        frame = frame.resized(width, height)
    return frame.to_pixels()


def regions_from_pose(pose: PoseBatch, image_sizes: Iterable[tuple[int, int]] | None = None, *,
                      labels: Iterable[str] = LABELS, min_confidence: float = 0.3) -> RegionBatch:
    """Regions of every person of every frame.

    Args:
        pose: B frames.
        image_sizes: ``(H, W)`` per image (B of them); None = each frame's canvas. A canvas with the
            image's aspect ratio but another size is rescaled to it; another aspect ratio, an image under
            :data:`MIN_IMAGE_SIDE` pixels or a rescale beyond :data:`MAX_RESCALE` × is an error
            (:func:`pose_fit_problem`).
        labels: which of ``"face"``, ``"hand"``, ``"person"`` to make.
        min_confidence: keypoints below it are not used.

    Returns:
        :class:`RegionBatch` of B images, regions clipped to each image.

    Example:
        >>> from vitruvian.core.pose import Part, Person, PoseFrame, PoseBatch
        >>> hand = torch.tensor([[10. + i % 5 * 4, 10. + i // 5 * 5, 0.9] for i in range(21)])
        >>> pose = PoseBatch((PoseFrame((Person(left_hand=Part("hand21", hand)),), 64, 64),))
        >>> [(r.label, r.handedness, round(r.score, 2)) for r in regions_from_pose(pose)[0]]
        [('hand', 'left', 0.9), ('person', None, 0.9)]
    """
    if not isinstance(pose, PoseBatch):
        raise TypeError(f"regions_from_pose: pose must be a PoseBatch, got {type(pose).__name__}")
    labels = tuple(labels)
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise ValueError(f"regions_from_pose: labels must be among {', '.join(LABELS)}, got {unknown}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"regions_from_pose: min_confidence must be in [0, 1], got {min_confidence}")
    if image_sizes is None:
        sizes = [(f.canvas_height, f.canvas_width) for f in pose]
    else:
        sizes = [tuple(int(v) for v in s) for s in image_sizes]
        if len(sizes) != len(pose):
            raise ValueError(
                f"regions_from_pose: pose has {len(pose)} frames but there are {len(sizes)} images; "
                "give one pose frame per image (batch sizes must match)"
            )
    per_image = []
    for b, (frame, (h, w)) in enumerate(zip(pose, sizes)):
        frame = _frame_for_image(frame, h, w, b)
        found = []
        for person in frame.people:
            for region in regions_from_person(person, labels=labels, min_confidence=min_confidence):
                clipped = region.clipped(h, w)
                if clipped is not None and (clipped.mask is None or bool(clipped.mask.any())):
                    found.append(clipped)
        per_image.append(tuple(found))
    return RegionBatch(tuple(per_image), tuple(sizes))
