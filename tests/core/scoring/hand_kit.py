"""Synthetic hands in the hand21 layout, built from adult hand proportions (palm = wrist → middle
knuckle = 100 px). Used by the hand-plausibility tests and the benchmark.

``anatomical_hand()`` is a relaxed open hand, fingers up, every joint bent 8° the same way; the
others break one thing each: a finger missing, a finger duplicated (an extra finger on the same
knuckle), a joint bent backwards, a zig-zag finger, fingers too long.
"""

from __future__ import annotations

import math

import torch

__all__ = ["anatomical_hand", "missing_finger", "extra_finger", "broken_joint", "zigzag_finger", "long_fingers"]

#: (knuckle x, knuckle y) from the wrist, in palm units (y up), index … pinky.
KNUCKLES = ((-0.30, 0.95), (-0.08, 1.00), (0.13, 0.95), (0.32, 0.85))
#: Spread of each finger from vertical, degrees (index … pinky).
SPREAD = (-8.0, 0.0, 6.0, 14.0)
#: Proximal, middle, distal (to the tip) lengths in palm units (index … pinky).
PHALANGES = ((0.50, 0.29, 0.25), (0.56, 0.35, 0.25), (0.52, 0.34, 0.24), (0.41, 0.24, 0.22))
THUMB_BASE, THUMB_DIRECTION, THUMB_BONES = (-0.25, 0.25), -50.0, (0.40, 0.32, 0.28)


def _walk(start, direction_deg, lengths, bend_deg):
    points, (x, y), d = [], start, direction_deg
    for length in lengths:
        x, y = x + length * math.sin(math.radians(d)), y + length * math.cos(math.radians(d))
        points.append((x, y))
        d += bend_deg
    return points


def anatomical_hand(*, palm: float = 100.0, origin=(200.0, 300.0), bend: float = 8.0, bends=None,
                    lengths=None, confidence: float = 0.95) -> torch.Tensor:
    """``(21, 3)`` hand21 keypoints in image pixels (y down). ``bends[f]`` overrides the per-joint
    bend of finger f (a pair: the turn at its PIP and at its DIP joint, degrees), ``lengths[f]`` its bones."""
    rows = [(0.0, 0.0)]
    thumb = [THUMB_BASE] + _walk(THUMB_BASE, THUMB_DIRECTION, THUMB_BONES, -bend)
    rows += thumb
    for f in range(4):
        b = (bends or {}).get(f + 1)
        bones = (lengths or {}).get(f + 1, PHALANGES[f])
        if b is None:
            pts = _walk(KNUCKLES[f], SPREAD[f], bones, bend)
        else:
            pts, (x, y), d = [], KNUCKLES[f], SPREAD[f]
            for length, turn in zip(bones, (*b, 0.0)):
                x, y = x + length * math.sin(math.radians(d)), y + length * math.cos(math.radians(d))
                pts.append((x, y))
                d += turn
        rows += [KNUCKLES[f]] + pts
    k = torch.tensor([[origin[0] + palm * x, origin[1] - palm * y, confidence] for x, y in rows], dtype=torch.float32)
    return k


def missing_finger() -> torch.Tensor:
    """The pinky was not found (its four joints at confidence 0), as on a four-fingered hand."""
    k = anatomical_hand()
    k[17:21] = 0.0
    return k


def extra_finger() -> torch.Tensor:
    """The ring finger grows from the middle finger's knuckle next to it: two fingers, one base."""
    k = anatomical_hand()
    k[13:17, :2] = k[9:13, :2] + torch.tensor([3.0, 2.0])
    return k


def broken_joint() -> torch.Tensor:
    """The index finger's top joint (DIP) bent 130° backwards."""
    return anatomical_hand(bends={1: (8.0, -130.0)})


def zigzag_finger() -> torch.Tensor:
    """The middle finger bends +70° at its PIP and −70° at its DIP."""
    return anatomical_hand(bends={2: (70.0, -70.0)})


def long_fingers() -> torch.Tensor:
    """Every finger's middle phalanx three times too long."""
    return anatomical_hand(lengths={f + 1: (p[0], p[1] * 3, p[2]) for f, p in enumerate(PHALANGES)})
