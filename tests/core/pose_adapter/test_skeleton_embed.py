"""Skeleton-graph embedding: vocabularies, tokens from the networkx graph, rasterisation."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.pose import Part, Person, PoseFrame
from vitruvian.core.pose_adapter.skeleton_embed import (
    UNKNOWN, SkeletonEmbedding, SkeletonTokens, bone_vocabulary, joint_vocabulary, rasterize_skeleton,
    skeleton_tokens,
)

from .conftest import hand


def _frame(*people) -> PoseFrame:
    return PoseFrame(tuple(people), 1, 1, "normalized")


def test_value_vocabularies_tell_sides_and_hand_joints_apart():
    joints, bones = joint_vocabulary(), bone_vocabulary()
    assert joints[0] == bones[0] == UNKNOWN
    assert len(set(joints)) == len(joints) and len(set(bones)) == len(bones)
    for key in ("left_hand:thumb_tip", "right_hand:thumb_tip", "left_hand:pinky_tip", "body:left_wrist",
                "body:right_wrist", "face:nose_bridge_3"):
        assert key in joints, key
    assert "body:left_elbow-left_wrist" in bones and "body:right_elbow-right_wrist" in bones
    assert "link:body.left_wrist-left_hand.wrist" in bones
    # Shared joint names across body formats map to one row (coco17's and mediapipe33's left wrist).
    assert sum(k == "body:left_wrist" for k in joints) == 1


def test_value_tokens_of_the_astronaut(astronaut_pose):
    frame = astronaut_pose[0]
    tokens = skeleton_tokens(frame, joint_vocabulary(), bone_vocabulary())
    body = frame.people[0].body.keypoints
    present = int((body[:, 2] >= 1e-3).sum())
    assert tokens.num_joints == present
    assert tokens.bone_ids.shape[0] == tokens.bone_xy.shape[0] == tokens.bone_conf.shape[0] > 0
    assert (tokens.joint_ids > 0).all() and (tokens.bone_ids > 0).all()  # every name known
    # Fractions of the 512² canvas; MediaPipe places the unseen legs below the frame (y up to ~1.9).
    assert tokens.joint_xy[:, 0].max() <= 1 and tokens.joint_xy[:, 1].max() > 1
    vocab = joint_vocabulary()
    nose = vocab.index("body:nose")
    row = (tokens.joint_ids == nose).nonzero()[0, 0]
    torch.testing.assert_close(tokens.joint_xy[row] * 512, body[0, :2])


def test_value_rasterize_peak_and_confidence_weighting():
    tokens = SkeletonTokens(torch.tensor([[0.375, 0.625]]), torch.tensor([0.5]), torch.tensor([1]),
                            torch.zeros(0, 2, 2), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    table = torch.eye(3)
    m = rasterize_skeleton(tokens, table, table, (8, 8), sigma=1.0)
    assert m.shape == (3, 8, 8)
    # The joint sits on a cell corner (x = 3.0, y = 5.0 cells): the four cells around it share the peak.
    corner = m[1][4:6, 2:4]
    torch.testing.assert_close(corner, torch.full((2, 2), 0.5 * torch.exp(torch.tensor(-0.25)).item()))
    assert m[0].abs().max() == 0 and m[2].abs().max() == 0
    full = rasterize_skeleton(SkeletonTokens(tokens.joint_xy, torch.ones(1), tokens.joint_ids, tokens.bone_xy,
                                             tokens.bone_conf, tokens.bone_ids), table, table, (8, 8))
    torch.testing.assert_close(full, 2 * m)


def test_value_bone_is_a_segment():
    tokens = SkeletonTokens(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                            torch.tensor([[[0.0625, 0.5625], [0.9375, 0.5625]]]), torch.ones(1), torch.tensor([2]))
    m = rasterize_skeleton(tokens, torch.eye(3), torch.eye(3), (8, 8), sigma=0.5)[2]
    torch.testing.assert_close(m[4], torch.ones(8))  # every cell centre on row 4 lies on the bone
    assert m[0].max() < 1e-6


def test_value_left_and_right_hands_differ_at_the_same_place():
    """The stick figure of a left hand and a right hand at the same pixels is the same; the embedding is not."""
    torch.manual_seed(0)
    emb = SkeletonEmbedding(joint_vocabulary(), bone_vocabulary(), dim=8)
    left = emb([emb.tokens(_frame(Person(left_hand=hand())))], (16, 16))
    right = emb([emb.tokens(_frame(Person(right_hand=hand())))], (16, 16))
    assert left.shape == (1, 8, 16, 16)
    assert (left - right).abs().max() > 0.1
    # ...and swapping which joint is which (same point set, other labels) changes the map too.
    k = hand().keypoints.clone()
    k[[4, 20]] = k[[20, 4]]  # thumb tip <-> pinky tip
    swapped = emb([emb.tokens(_frame(Person(left_hand=Part("hand21", k))))], (16, 16))
    assert (left - swapped).abs().max() > 0.1


def test_gradcheck_tables_get_gradients(astronaut_pose):
    emb = SkeletonEmbedding(joint_vocabulary(), bone_vocabulary(), dim=4)
    out = emb([emb.tokens(astronaut_pose[0])], (8, 8))
    out.square().sum().backward()
    assert emb.joints.weight.grad.abs().sum() > 0 and emb.bones.weight.grad.abs().sum() > 0
    assert emb.joints.weight.grad[0].abs().sum() == 0  # <unknown> unused


def test_value_unknown_names_map_to_row_zero(astronaut_pose):
    tokens = skeleton_tokens(astronaut_pose[0], (UNKNOWN, "body:nose"), (UNKNOWN,))
    assert set(tokens.joint_ids.tolist()) == {0, 1} and set(tokens.bone_ids.tolist()) == {0}


def test_value_missing_points_dropped():
    k = torch.zeros(17, 3)
    k[0] = torch.tensor([0.5, 0.5, 0.9])
    tokens = skeleton_tokens(_frame(Person(body=Part("coco17", k))), joint_vocabulary(), bone_vocabulary())
    assert tokens.num_joints == 1 and tokens.bone_ids.numel() == 0


@pytest.mark.parametrize("people", [0, 3])
def test_smoke_people_counts(people):
    frame = _frame(*[Person(left_hand=hand(i)) for i in range(people)])
    tokens = skeleton_tokens(frame, joint_vocabulary(), bone_vocabulary())
    assert tokens.num_joints == 21 * people
    emb = SkeletonEmbedding(joint_vocabulary(), bone_vocabulary(), dim=2)
    assert emb([tokens], (4, 5)).shape == (1, 2, 4, 5)
