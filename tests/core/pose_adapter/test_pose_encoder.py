"""The pose condition (checks, rendering, tokens) and the pose encoder's per-level features."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import PoseBatch, PoseFrame
from vitruvian.core.pose_adapter import PoseEncoder, SkeletonEmbedding, bone_vocabulary, joint_vocabulary
from vitruvian.core.pose_adapter.pose_encoder import prepare_pose_condition

SKELETON = SkeletonEmbedding(joint_vocabulary(), bone_vocabulary(), dim=4)


def test_smoke_condition_of_the_astronaut(astronaut_pose):
    cond = prepare_pose_condition(astronaut_pose, (8, 8), SKELETON)
    assert cond.hint.shape == (1, 3, 64, 64) and cond.latent_size == (8, 8) and len(cond) == 1
    assert cond.hint.max() > 0.5 and cond.hint.min() == 0  # a skeleton on black
    assert cond.tokens[0].num_joints > 20


def test_value_canvas_any_size_with_the_latents_aspect(astronaut_pose):
    # 512x512 pose for a 64x64 latent and for an 8x8 latent: both fine (scaled), same skeleton tokens.
    a = prepare_pose_condition(astronaut_pose, (64, 64), SKELETON)
    b = prepare_pose_condition(astronaut_pose, (8, 8), SKELETON)
    torch.testing.assert_close(a.tokens[0].joint_xy, b.tokens[0].joint_xy)
    assert a.hint.shape[-1] == 512


def test_exception_wrong_canvas_and_no_people(astronaut_pose):
    with pytest.raises(PoseFormatError, match=r"pose image 0 canvas must have the latent's aspect ratio 768×512 "
                                              r"\(latent 96×64\), got a 512×512 canvas"):
        prepare_pose_condition(astronaut_pose, (64, 96), SKELETON, where="VitruvianApplyPoseGraph")
    empty = PoseBatch((astronaut_pose[0], PoseFrame((), 512, 512)))
    with pytest.raises(PoseFormatError, match="pose image 1 must have at least one person, got none"):
        prepare_pose_condition(empty, (64, 64), SKELETON)
    with pytest.raises(PoseFormatError, match="pose must hold at least one image"):
        prepare_pose_condition(PoseBatch(()), (64, 64), SKELETON)
    with pytest.raises(PoseFormatError, match="pose must be a PoseBatch, got Tensor"):
        prepare_pose_condition(torch.zeros(1), (64, 64), SKELETON)


@pytest.mark.parametrize("size", [(8, 8), (7, 5)])
def test_shape_encoder_levels(size):
    enc = PoseEncoder(3, 4, (16, 24, 32))
    h, w = size
    feats = enc(torch.rand(2, 3, 8 * h, 8 * w), torch.rand(2, 4, h, w))
    assert [tuple(f.shape) for f in feats] == [(2, 16, h, w), (2, 24, -(-h // 2), -(-w // 2)),
                                               (2, 32, -(-h // 4), -(-w // 4))]
    assert all(torch.count_nonzero(f) == 0 for f in feats)  # zero-initialised outputs
