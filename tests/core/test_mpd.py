"""The α-fair (MPD) solver: fixed point, scale law, degenerate Gram matrices, errors."""
from __future__ import annotations

import doctest

import pytest
import torch

from vitruvian.core.objectives import mpd
from vitruvian.core.objectives.mpd import fair_weights, fixed_point_residual, gram


def test_doctests():
    assert doctest.testmod(mpd).failed == 0


class TestFairWeights:
    @pytest.mark.parametrize("K", [1, 2, 3, 5])
    def test_fixed_point(self, K):
        g = torch.Generator().manual_seed(K)
        scales = torch.tensor([1e-3, 1.0, 1e3, 5.0, 0.1])[:K, None]  # gradient norms 10^6 apart
        A = gram(torch.randn(K, 200, generator=g) * scales)
        w = fair_weights(A)
        assert (w > 0).all()
        assert fixed_point_residual(A, w) < 1e-8

    @pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
    def test_alpha(self, alpha):
        A = gram(torch.randn(3, 20, generator=torch.Generator().manual_seed(0)))
        w = fair_weights(A, alpha)
        assert fixed_point_residual(A, w, alpha) < 1e-8

    def test_scale_law(self):
        """A → s·A gives w → s^(−α/(α+1))·w (so the official solve on loss-scaled gradients is off)."""
        A = gram(torch.randn(3, 20, generator=torch.Generator().manual_seed(1)))
        s = 2.0**16
        assert torch.allclose(fair_weights(s * A), s ** (-2 / 3) * fair_weights(A), rtol=1e-6)

    def test_singular(self):
        """Duplicated, collinear and rank-deficient tasks still solve (A singular)."""
        g = torch.randn(2, 10, generator=torch.Generator().manual_seed(2))
        for G in (torch.cat([g, g[:1]]),                                      # a duplicated task
                  g[:1].repeat(3, 1) * torch.tensor([[1.0], [100.0], [0.01]]),  # collinear, different scales
                  torch.randn(3, 2, generator=torch.Generator().manual_seed(3))):  # K > P
            A = gram(G)
            w = fair_weights(A)
            assert torch.isfinite(w).all() and (w > 0).all()
            assert fixed_point_residual(A, w) < 1e-6

    def test_orthogonal_closed_form(self):
        A = torch.diag(torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64))
        assert torch.allclose(fair_weights(A), torch.diagonal(A).pow(-2 / 3))

    def test_exception(self):
        with pytest.raises(ValueError, match="positive diagonal"):
            fair_weights(gram(torch.stack([torch.ones(4), torch.zeros(4)])))  # a zero-gradient task
        with pytest.raises(ValueError, match=r"\(K, K\)"):
            fair_weights(torch.ones(2, 3))
        with pytest.raises(ValueError, match="alpha"):
            fair_weights(torch.eye(2), alpha=0.0)
