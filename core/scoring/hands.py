"""Hand plausibility from 21 hand keypoints, training-free, every component reported.

The hand becomes a networkx skeleton (:func:`vitruvian.core.pose.build_pose_graph` on a
``hand21`` part: wrist, then four joints per finger, thumb to pinky) keeping only joints whose
confidence is at least ``min_confidence``. Four components, each in [0, 1]:

- ``hand.fingers``: fingers that are there (≥ 3 of 4 confident joints, tip or DIP among them,
  not collapsed to a point) and distinct: two fingers whose joints lie on top of each other, or
  that grow from the same knuckle, are one finger plus an extra (a graph of duplicates; its
  connected components are the fingers). ``1 − 0.25 · (missing + extra)``;
  ``hand.finger_count`` is the count itself.
- ``hand.bones``: phalange ratios (middle/proximal, distal/middle) against anatomical priors,
  metacarpal lengths against the middle one, finger length against palm length. 2-D projection
  shortens bones, so shortening is tolerated far more than lengthening.
- ``hand.angles``: bend at every joint (signed 2-D angle between successive bones) within its
  flexion limit; the PIP and DIP hinges of one finger bending the same way (no zig-zag); no joint
  bending hard against the way the other fingers bend (hyper-extension); when the palm is seen
  open, knuckles in index-to-pinky order along the palm and neighbouring proximal phalanges not
  crossing.
- ``hand.confidence``: mean keypoint confidence (missing joints count as 0).

``hand`` combines them as a weighted geometric mean (fingers 0.35, bones 0.25, angles 0.25,
confidence 0.15), so one bad component sinks the score. Within bones and angles, a single broken
check costs up to half the component (the pooled value is ``min(mean, 0.5 + 0.5 · worst)``).

Anatomical priors are lengths as fractions of the palm (wrist to middle knuckle), from adult
hand proportions; they are deliberately loose. Units never matter: everything is a ratio.

Shape:
    - keypoints: ``(21, 3)`` float ``x, y, confidence`` in pixels (any consistent unit)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from ..pose import Part, Person, build_pose_graph, part_subgraph
from ..regions import Region

if TYPE_CHECKING:  # networkx costs ~0.2 s to import; ComfyUI imports every pack at start
    import networkx as nx

__all__ = ["HAND_SCORE_NAMES", "HandPriors", "hand_graph", "score_hand", "HandScorer"]

HAND_SCORE_NAMES = ("hand", "hand.fingers", "hand.bones", "hand.angles", "hand.confidence", "hand.finger_count")
_FINGERS = ("thumb", "index", "middle", "ring", "pinky")
_WEIGHTS = {"hand.fingers": 0.35, "hand.bones": 0.25, "hand.angles": 0.25, "hand.confidence": 0.15}


def _chain(f: int) -> tuple[int, int, int, int, int]:
    """Keypoint indices wrist → tip of finger ``f`` (0 = thumb … 4 = pinky) in hand21."""
    return (0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f)


@dataclass(frozen=True)
class HandPriors:
    """Anatomical priors and tolerances (lengths as fractions of the palm: wrist → middle MCP).

    ``phalanx_ratios[f] = (middle/proximal, distal/middle)`` for index … pinky;
    ``finger_lengths[f]`` MCP → tip along the finger, thumb … pinky; ``metacarpals[f]`` wrist → MCP
    relative to the middle finger's, index … pinky. ``joint_limits`` in degrees: (MCP, PIP, DIP)
    for fingers, (MCP, IP) for the thumb.
    """

    phalanx_ratios: tuple[tuple[float, float], ...] = ((0.58, 0.86), (0.63, 0.71), (0.65, 0.70), (0.60, 0.92))
    finger_lengths: tuple[float, ...] = (0.72, 1.04, 1.16, 1.10, 0.87)
    metacarpals: tuple[float, ...] = (1.0, 1.0, 0.96, 0.87)
    ratio_tolerance: float = math.log(1.7)   # |log(r / prior)| allowed before any penalty
    ratio_span: float = math.log(2.5)        # … and the extra log-distance at which the check reaches 0
    shorten_allowance: float = 4.0           # foreshortening: lengths may be this many times shorter
    joint_limits: tuple[float, float, float] = (100.0, 115.0, 95.0)
    thumb_limits: tuple[float, float] = (75.0, 95.0)
    limit_span: float = 45.0                 # degrees past a limit at which the check reaches 0
    reverse_tolerance: float = 30.0          # degrees a joint may bend against the others (hyper-extension)
    zigzag_tolerance: float = 20.0           # degrees PIP and DIP may bend opposite ways
    min_finger_length: float = 0.15          # a finger shorter than this (× palm) has collapsed
    duplicate_distance: float = 0.12         # mean joint distance (× palm) below which two fingers coincide
    same_base_distance: float = 0.06         # knuckle distance (× palm) below which two fingers share a base
    open_palm_spread: float = 0.35           # index-to-pinky knuckle distance (× palm) to check order/crossing
    order_margin: float = 0.1                # knuckles out of order by this much (× palm) fail the check


def hand_graph(keypoints: torch.Tensor, *, min_confidence: float = 0.3) -> nx.Graph:
    """The hand skeleton as a networkx graph with nodes ``0 … 20`` (hand21 order) for the joints
    at or above ``min_confidence``; node attributes ``x``, ``y``, ``confidence``, ``name``.

    Example:
        >>> hand_graph(torch.ones(21, 3)).number_of_edges()
        20
    """
    k = torch.as_tensor(keypoints, dtype=torch.float32)
    if k.shape != (21, 3):
        raise ValueError(f"hand_graph: keypoints must be (21, 3) x, y, confidence (hand21), got {tuple(k.shape)}")
    import networkx as nx

    G = part_subgraph(build_pose_graph(Person(left_hand=Part("hand21", k)), min_confidence=min_confidence), "left_hand")
    return nx.relabel_nodes(G, {node: node[1] for node in G.nodes})


def _point(G: nx.Graph, j: int) -> tuple[float, float] | None:
    return (G.nodes[j]["x"], G.nodes[j]["y"]) if j in G else None


def _dist(a, b) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _turn(a, b, c) -> float:
    """Signed angle in degrees from bone a→b to bone b→c (0 = straight)."""
    u, v = (b[0] - a[0], b[1] - a[1]), (c[0] - b[0], c[1] - b[1])
    return math.degrees(math.atan2(u[0] * v[1] - u[1] * v[0], u[0] * v[0] + u[1] * v[1]))


def _ratio_check(ratio: float, prior: float, p: HandPriors, *, shorten_ok: bool = False) -> float:
    if ratio <= 0:
        return 0.0
    d = math.log(ratio / prior)
    low = p.ratio_tolerance + (math.log(p.shorten_allowance) if shorten_ok else 0.0)
    excess = max(0.0, d - p.ratio_tolerance, -d - low)
    return max(0.0, 1.0 - excess / p.ratio_span)


def _limit_check(excess: float, span: float) -> float:
    return max(0.0, 1.0 - max(0.0, excess) / span)


def _pool(items: list[float]) -> float:
    """Mean of the checks, but a single failed check costs at least half."""
    if not items:
        return 0.0
    return min(sum(items) / len(items), 0.5 + 0.5 * min(items))


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return orient(p1, p2, q1) * orient(p1, p2, q2) < 0 and orient(q1, q2, p1) * orient(q1, q2, p2) < 0


def score_hand(keypoints: torch.Tensor, *, min_confidence: float = 0.3, priors: HandPriors = HandPriors()) -> dict[str, float]:
    """Plausibility of one hand from its 21 keypoints.

    Args:
        keypoints: ``(21, 3)`` ``x, y, confidence`` (hand21 order: wrist, thumb CMC … pinky tip).
        min_confidence: joints below this are treated as missing.
        priors: anatomical priors and tolerances.

    Returns:
        :data:`HAND_SCORE_NAMES` → float; every component in [0, 1] except ``hand.finger_count`` (0–5+).
        A hand without a confident wrist or middle knuckle (no palm to measure against) scores 0.
    """
    G = hand_graph(keypoints, min_confidence=min_confidence)
    conf = float(torch.as_tensor(keypoints, dtype=torch.float32)[:, 2].mean())
    wrist, knuckle = _point(G, 0), _point(G, 9)
    palm = _dist(wrist, knuckle) if wrist and knuckle else 0.0
    if palm <= 1e-6:
        return {"hand": 0.0, "hand.fingers": 0.0, "hand.bones": 0.0, "hand.angles": 0.0,
                "hand.confidence": conf, "hand.finger_count": 0.0}
    p = priors
    pts = {j: _point(G, j) for j in range(21)}

    # ---- fingers: present, then merged when they coincide or share a base.
    present = []
    for f in range(5):
        joints = [j for j in _chain(f)[1:] if pts[j]]
        tip_side = pts[_chain(f)[4]] or pts[_chain(f)[3]]
        length = sum(_dist(pts[a], pts[b]) for a, b in zip(joints, joints[1:]))
        if len(joints) >= 3 and tip_side and length >= p.min_finger_length * palm:
            present.append(f)
    import networkx as nx

    same = nx.Graph()
    same.add_nodes_from(present)
    for a in present:
        for b in present:
            if a < b:
                pairs = [(pts[i], pts[j]) for i, j in zip(_chain(a)[1:], _chain(b)[1:]) if pts[i] and pts[j]]
                mean_gap = sum(_dist(u, v) for u, v in pairs) / max(1, len(pairs))
                base_a, base_b = pts[_chain(a)[1]], pts[_chain(b)[1]]  # knuckles (the thumb's CMC is no knuckle)
                same_base = a > 0 and base_a and base_b and _dist(base_a, base_b) < p.same_base_distance * palm
                if (pairs and mean_gap < p.duplicate_distance * palm) or same_base:
                    same.add_edge(a, b)
    count = nx.number_connected_components(same)
    extra = len(present) - count
    fingers = max(0.0, 1.0 - 0.25 * ((5 - count) + extra))

    # ---- bones: phalange ratios, metacarpals, finger lengths.
    bone_items = []
    for f in range(1, 5):
        mcp, pip, dip, tip = (pts[j] for j in _chain(f)[1:])
        if mcp and pip and dip:
            bone_items.append(_ratio_check(_dist(pip, dip) / max(_dist(mcp, pip), 1e-6), p.phalanx_ratios[f - 1][0], p))
        if pip and dip and tip:
            bone_items.append(_ratio_check(_dist(dip, tip) / max(_dist(pip, dip), 1e-6), p.phalanx_ratios[f - 1][1], p))
        if mcp and f != 2:
            bone_items.append(_ratio_check(_dist(wrist, mcp) / palm, p.metacarpals[f - 1], p))
    for f in present:
        chain = [pts[j] for j in _chain(f)[(1 if f else 2):] if pts[j]]
        length = sum(_dist(a, b) for a, b in zip(chain, chain[1:]))
        bone_items.append(_ratio_check(length / palm, p.finger_lengths[f], p, shorten_ok=True))
    bones = _pool(bone_items)

    # ---- angles: limits, hinge agreement, bending direction, knuckle order, crossings.
    turns = {}  # (finger, joint position 1..3 along the chain) -> signed degrees
    for f in range(5):
        chain = _chain(f) if f else (1, 2, 3, 4)
        for k in range(1, len(chain) - 1):
            a, b, c = (pts[j] for j in chain[k - 1 : k + 2])
            if a and b and c and _dist(a, b) > 1e-6 and _dist(b, c) > 1e-6:
                turns[f, k] = _turn(a, b, c)
    angle_items = []
    for (f, k), t in turns.items():
        limit = p.thumb_limits[k - 1] if f == 0 else p.joint_limits[k - 1]
        angle_items.append(_limit_check(abs(t) - limit, p.limit_span))
    for f in range(1, 5):
        if (f, 2) in turns and (f, 3) in turns and turns[f, 2] * turns[f, 3] < 0:
            angle_items.append(_limit_check(min(abs(turns[f, 2]), abs(turns[f, 3])) - p.zigzag_tolerance, p.limit_span))
    for (f, k), t in turns.items():
        if f == 0 or k == 1:
            continue  # thumb and knuckles: their own limits only (knuckles also spread sideways)
        others = sum(v for (g, m), v in turns.items() if g not in (0, f) and m > 1)
        if abs(others) > p.reverse_tolerance and t * others < 0:
            angle_items.append(_limit_check(abs(t) - p.reverse_tolerance, p.limit_span))
    # Knuckle order and crossing only mean something when the palm is seen open (knuckles spread);
    # seen from the side, fingers overlap in 2-D and their order is noise.
    bases = [pts[_chain(f)[1]] for f in range(1, 5)]
    if bases[0] and bases[3] and _dist(bases[0], bases[3]) >= p.open_palm_spread * palm:
        span = _dist(bases[0], bases[3])
        axis = ((bases[3][0] - bases[0][0]) / span, (bases[3][1] - bases[0][1]) / span)
        along = [None if q is None else (q[0] - bases[0][0]) * axis[0] + (q[1] - bases[0][1]) * axis[1] for q in bases]
        for u, v in zip(along, along[1:]):
            if u is not None and v is not None:
                angle_items.append(_limit_check((u - v) / palm, p.order_margin) if v <= u else 1.0)
        for f in range(1, 4):  # proximal phalanges of neighbouring fingers must not cross
            a, b = (pts[_chain(f)[1]], pts[_chain(f)[2]]), (pts[_chain(f + 1)[1]], pts[_chain(f + 1)[2]])
            if all(a) and all(b):
                angle_items.append(0.0 if _segments_cross(*a, *b) else 1.0)
    angles = _pool(angle_items)

    parts = {"hand.fingers": fingers, "hand.bones": bones, "hand.angles": angles, "hand.confidence": conf}
    combined = math.exp(sum(w * math.log(max(parts[n], 1e-3)) for n, w in _WEIGHTS.items()))
    return {"hand": combined, **parts, "hand.finger_count": float(count)}


class HandScorer:
    """:func:`score_hand` for every hand region with 21 keypoints (others: not scored).

    Args:
        min_confidence: joints below this count as missing (default 0.3).
        priors: :class:`HandPriors`.
    """

    names = HAND_SCORE_NAMES
    labels = ("hand",)

    def __init__(self, min_confidence: float = 0.3, priors: HandPriors = HandPriors()):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"HandScorer: min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence, self.priors = min_confidence, priors

    def score(self, image, regions: Sequence[Region], image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {n: torch.full((len(regions),), float("nan"), dtype=torch.float64) for n in self.names}
        for p, r in enumerate(regions):
            if r.keypoints is None or tuple(r.keypoints.shape) != (21, 3):
                continue
            for name, value in score_hand(r.keypoints, min_confidence=self.min_confidence, priors=self.priors).items():
                out[name][p] = value
        return out
