"""Hand plausibility: a hand built from adult proportions ranks above hands with a missing finger,
an extra finger, a broken joint, a zig-zag finger or overlong fingers; each component reports the
defect it is about; invariance to rotation, mirroring and scale."""

from __future__ import annotations

import math

import pytest
import torch

from vitruvian.core.regions import Region, RegionBatch
from vitruvian.core.scoring import HAND_SCORE_NAMES, HandScorer, score_hand, score_regions
from vitruvian.core.scoring.hands import hand_graph

from .hand_kit import anatomical_hand, broken_joint, extra_finger, long_fingers, missing_finger, zigzag_finger


def _rotate(k: torch.Tensor, degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    out = k.clone()
    x, y = k[:, 0] - 200, k[:, 1] - 300
    out[:, 0], out[:, 1] = 200 + c * x - s * y, 300 + s * x + c * y
    return out


def test_smoke():
    scores = score_hand(anatomical_hand())
    assert set(scores) == set(HAND_SCORE_NAMES)
    assert all(0.0 <= scores[n] <= 1.0 for n in HAND_SCORE_NAMES if n != "hand.finger_count")


def test_value_graph():
    G = hand_graph(missing_finger())
    assert G.number_of_nodes() == 17 and G.number_of_edges() == 16  # the pinky chain is gone
    assert G.nodes[8]["name"] == "index_tip"


def test_value_plausible_hand():
    s = score_hand(anatomical_hand())
    assert s["hand.finger_count"] == 5 and s["hand.fingers"] == 1.0
    assert s["hand.bones"] == 1.0 and s["hand.angles"] == 1.0
    assert s["hand.confidence"] == pytest.approx(0.95)
    assert s["hand"] > 0.98


@pytest.mark.parametrize(
    "make, component, count",
    [
        (missing_finger, "hand.fingers", 4),
        (extra_finger, "hand.fingers", 4),  # two fingers on one knuckle: 4 distinct + 1 extra
        (broken_joint, "hand.angles", 5),
        (zigzag_finger, "hand.angles", 5),
        (long_fingers, "hand.bones", 5),
    ],
)
def test_value_defects_rank_below_the_plausible_hand(make, component, count):
    good, bad = score_hand(anatomical_hand()), score_hand(make())
    assert bad["hand"] < good["hand"] - 0.05
    assert bad[component] <= 0.75
    assert bad["hand.finger_count"] == count
    others = {"hand.fingers", "hand.bones", "hand.angles"} - {component}
    assert all(bad[n] == pytest.approx(1.0) for n in others), {n: bad[n] for n in others}


def test_value_extra_finger_scores_below_missing_finger():
    assert score_hand(extra_finger())["hand.fingers"] < score_hand(missing_finger())["hand.fingers"]


@pytest.mark.parametrize("transform", ["rotate", "mirror", "scale", "curl", "noise"])
def test_value_invariances(transform):
    k = anatomical_hand()
    if transform == "rotate":
        k = _rotate(k, 135)
    elif transform == "mirror":
        k[:, 0] = 400 - k[:, 0]
    elif transform == "scale":
        k = anatomical_hand(palm=12.0)
    elif transform == "curl":
        k = anatomical_hand(bend=45.0)  # a loosely curled hand seen from the side
    else:
        torch.manual_seed(0)
        k[:, :2] += torch.randn(21, 2) * 2.0
    s = score_hand(k)
    assert s["hand"] > 0.95 and s["hand.finger_count"] == 5


def test_value_low_confidence_joints_are_missing():
    k = anatomical_hand()
    k[5:9, 2] = 0.1  # the index finger is barely seen
    assert score_hand(k)["hand.finger_count"] == 4
    assert score_hand(k, min_confidence=0.05)["hand.finger_count"] == 5


def test_value_no_palm_scores_zero():
    k = anatomical_hand()
    k[0, 2] = 0.0  # no wrist: nothing to measure against
    assert score_hand(k)["hand"] == 0.0


def test_value_scorer_on_regions():
    """Hands with 21 keypoints are scored; a hand without keypoints and a face are left unscored."""
    hands = [Region("hand", (100, 100, 300, 320), 0.9, keypoints=k) for k in (anatomical_hand(), broken_joint())]
    batch = RegionBatch(
        ((hands[0], Region("face", (0, 0, 50, 50), 0.9)), (), (hands[1], Region("hand", (0, 0, 20, 20), 0.8))),
        ((400, 400),) * 3,
    )
    result = score_regions(torch.zeros(3, 3, 400, 400), batch, HandScorer())
    values = result.per_region["hand"]
    assert values[0][1] is None and values[2][1] is None and values[1] == []
    assert values[0][0] > values[2][0]
    assert result.per_region["hand.finger_count"] == [[5.0, None], [], [5.0, None]]
    assert result.per_image["hand.angles"].min == [1.0, None, 0.5]


def test_exception():
    with pytest.raises(ValueError, match=r"hand_graph: keypoints must be \(21, 3\)"):
        score_hand(torch.zeros(20, 3))
    with pytest.raises(ValueError, match=r"HandScorer: min_confidence must be in \[0, 1\]"):
        HandScorer(min_confidence=2.0)
