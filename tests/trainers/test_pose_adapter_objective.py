"""The pose-adapter objective on the tiny diffusers model: 2 steps, finite loss, a real perception gradient."""
from __future__ import annotations

import copy

import pytest
import torch

from vitruvian.core.errors import ConfigError
from vitruvian.core.pose import Part, Person, PoseFrame
from vitruvian.trainers.objectives.base import ObjectiveContext
from vitruvian.trainers.objectives.pose_adapter import PoseAdapterObjective

from ..core.pose_adapter.conftest import hand
from ..tiny import tiny_scheduler, tiny_unet, tiny_vae


class TinyPoseNet(torch.nn.Module):
    """A random two-layer conv net standing in for a pose backbone φ (the point is the gradient)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 17, 3, 2, 1))

    def forward(self, x):
        return self.net(x)


def _poses() -> list[PoseFrame]:
    g = torch.Generator().manual_seed(0)
    body = torch.rand(17, 3, generator=g)
    body[:, 2] = 1.0
    return [PoseFrame((Person(body=Part("coco17", body)),), 1, 1, "normalized"),
            PoseFrame((Person(left_hand=hand(0), right_hand=hand(1, center=(0.3, 0.6))),), 1, 1, "normalized")]


def _setup(perception_weight=0.0, seed=0):
    unet = tiny_unet(0, "sd15").requires_grad_(False)
    vae = tiny_vae(0).requires_grad_(False)
    objective = PoseAdapterObjective(
        perception_weight=perception_weight, pose_net=TinyPoseNet(),
        decode=lambda z: vae.decode(z / vae.config.scaling_factor).sample,
        pose_options={"skeleton_dim": 4, "pose_channels": (32, 64), "graph_reduction": 2})
    torch.manual_seed(seed)
    params = objective.setup(unet)
    g = torch.Generator().manual_seed(seed)
    batch = {"latents": torch.randn(2, 1, 4, 8, 8, generator=g),
             "cond": {"encoder_hidden_states": torch.randn(2, 77, 32, generator=g)}, "pose": _poses()}
    ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(seed),
                           empty_cond={"encoder_hidden_states": torch.zeros(1, 77, 32)})
    return objective, params, batch, ctx, unet


@pytest.mark.slow
def test_value_two_training_steps():
    objective, params, batch, ctx, unet = _setup(perception_weight=0.5)
    unet_before = copy.deepcopy(unet.state_dict())
    adapter_before = {k: v.clone() for k, v in objective.adapter.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=1e-3)
    for step in range(2):
        ctx.step = step
        out = objective(batch, ctx)
        assert torch.isfinite(out.loss) and out.per_sample.shape == (2,)
        assert {"mse_masked", "mask_fraction", "pose_perception"} <= set(out.metrics)
        assert 0 < out.metrics["mask_fraction"] < 1 and out.metrics["pose_perception"] > 0
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = objective.adapter.state_dict()
    assert not torch.equal(adapter_before["controlnet_mid_block.weight"], after["controlnet_mid_block.weight"])
    assert all(torch.equal(unet_before[k], v) for k, v in unet.state_dict().items())  # the UNet is frozen


@pytest.mark.slow
def test_value_perception_term_has_a_gradient():
    """Same (t, ε, dropped prompts): the gradient with λ_p > 0 minus the one with λ_p = 0 is the perception
    term's own gradient, and it is not zero (GRPose's released term is zero: numpy/uint8 round trip)."""
    grads = []
    for weight in (0.0, 0.5):
        objective, params, batch, ctx, _ = _setup(perception_weight=weight)
        objective(batch, ctx).loss.backward()
        grads.append(objective.adapter.controlnet_mid_block.weight.grad.clone())
    percept_grad = grads[1] - grads[0]
    assert percept_grad.abs().max() > 0
    assert torch.isfinite(percept_grad).all()


@pytest.mark.slow
def test_value_mask_weights_the_skeleton():
    objective, params, batch, ctx, _ = _setup()
    out = objective(batch, ctx)
    plain = PoseAdapterObjective(alpha=1.0, pose_options=objective.pose_options)
    plain.adapter = objective.adapter
    _, _, _, ctx2, _ = _setup()
    unweighted = plain(batch, ctx2)
    assert (out.per_sample > unweighted.per_sample).all()  # α = 5 on the skeleton cells only adds


def test_exception():
    with pytest.raises(ConfigError, match="perception_weight > 0 needs pose_net"):
        PoseAdapterObjective(perception_weight=0.5)
    with pytest.raises(ConfigError, match="alpha must be >= 1"):
        PoseAdapterObjective(alpha=0.5)
    objective, params, batch, ctx, _ = _setup()
    with pytest.raises(ConfigError, match="call objective.setup"):
        PoseAdapterObjective()(batch, ctx)
    with pytest.raises(ConfigError, match="batch must carry 'pose'"):
        objective({k: v for k, v in batch.items() if k != "pose"}, ctx)
    with pytest.raises(ConfigError, match=r"one pose per sample \(2\), got 1"):
        objective({**batch, "pose": _poses()[:1]}, ctx)
    nobody = [PoseFrame((), 1, 1, "normalized")] * 2
    with pytest.raises(Exception, match="pose image 0 must have at least one person"):
        objective({**batch, "pose": nobody}, ctx)
