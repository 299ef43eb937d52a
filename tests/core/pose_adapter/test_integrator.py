"""The Progressive Graph Integrator: identity at init, the cached pose branch, graph width."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.pose_adapter.integrator import ProgressiveGraphIntegrator


def _pgi(**kw):
    torch.manual_seed(0)
    return ProgressiveGraphIntegrator(16, 32, 12, 8, groups=8, k=4, **kw).eval()


@pytest.mark.parametrize("reduction", [1, 4])
def test_value_fresh_integrator_is_its_skip(reduction):
    pgi = _pgi(reduction=reduction)
    x, temb, pose = torch.randn(2, 16, 6, 5), torch.randn(2, 12), torch.randn(2, 8, 6, 5)
    out = pgi(x, temb, pgi.encode_pose(pose))
    torch.testing.assert_close(out, pgi.conv_shortcut(x))  # conv_out is zero-initialised
    assert (pgi.reduce is None) == (reduction == 1) and pgi.encode_pose(pose).shape == (2, 32 // reduction, 6, 5)


def test_value_pose_and_latent_both_matter():
    pgi = _pgi(reduction=2)
    torch.nn.init.normal_(pgi.conv_out.weight, std=0.1)
    x, temb, pose = torch.randn(1, 16, 6, 5), torch.randn(1, 12), torch.randn(1, 8, 6, 5)
    base = pgi(x, temb, pgi.encode_pose(pose))
    assert (pgi(x, temb, pgi.encode_pose(pose + 1)) - base).abs().max() > 1e-4
    assert (pgi(x, temb + 1, pgi.encode_pose(pose)) - base).abs().max() > 1e-4
    x.requires_grad_(True)
    p = pose.clone().requires_grad_(True)
    pgi(x, temb, pgi.encode_pose(p)).sum().backward()
    assert x.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_exception():
    with pytest.raises(ValueError, match="reduction must divide out_channels 32, got 5"):
        _pgi(reduction=5)
    pgi = _pgi()
    with pytest.raises(ValueError, match=r"pose_features must be \(B, 32, 6, 5\) from encode_pose"):
        pgi(torch.randn(1, 16, 6, 5), torch.randn(1, 12), torch.randn(1, 8, 6, 5))


def test_doctests():
    import doctest

    from vitruvian.core.pose_adapter import adapter, config, evaluate, graph_conv, losses, skeleton_embed

    for module in (adapter, config, evaluate, graph_conv, losses, skeleton_embed):
        assert doctest.testmod(module).failed == 0, module.__name__
