"""core.objectives.losses: values, normalisation, the DPO sign and β conventions, gradcheck."""
import doctest
import math

import pytest
import torch

from vitruvian.core.objectives import losses
from vitruvian.core.objectives.losses import denoise_error, dpo_loss, weighted_mse


def test_doctests():
    assert doctest.testmod(losses).failed == 0


class TestDenoiseError:
    def test_shape(self):
        pred, target = torch.rand(3, 4, 8, 8), torch.rand(3, 4, 8, 8)
        err = denoise_error(pred, target)
        assert err.shape == (3,) and err.dtype == torch.float32

    def test_value(self):
        pred = torch.zeros(2, 4, 2, 2)
        target = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1).expand(2, 4, 2, 2)
        torch.testing.assert_close(denoise_error(pred, target), torch.tensor([1.0, 4.0]))
        assert weighted_mse is denoise_error

    def test_norm_all_vs_mask(self):
        torch.manual_seed(0)
        pred, target = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
        sq = (pred - target).square()
        w = torch.zeros(2, 1, 8, 8)
        w[0, :, :2] = 1.0  # a quarter of the pixels
        w[1, :, :, :4] = 3.0  # half the pixels, weight 3
        m = w.expand_as(sq)
        expected_all = (m * sq).flatten(1).sum(1) / (4 * 8 * 8)
        expected_mask = (m * sq).flatten(1).sum(1) / m.flatten(1).sum(1)
        torch.testing.assert_close(denoise_error(pred, target, w, norm="all"), expected_all)
        torch.testing.assert_close(denoise_error(pred, target, w, norm="mask"), expected_mask)
        # "mask" is a weighted mean: invariant to scaling the weights; "all" scales with them
        torch.testing.assert_close(denoise_error(pred, target, 5 * w, norm="mask"), expected_mask)
        torch.testing.assert_close(denoise_error(pred, target, 5 * w, norm="all"), 5 * expected_all)

    def test_uniform_weights_equal_plain_mean(self):
        pred, target = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
        ones = torch.ones(2, 1, 8, 8)
        plain = denoise_error(pred, target)
        torch.testing.assert_close(denoise_error(pred, target, ones, norm="all"), plain)
        torch.testing.assert_close(denoise_error(pred, target, ones, norm="mask"), plain)

    def test_zero_weights_give_zero_not_nan(self):
        err = denoise_error(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), torch.zeros(1, 1, 2, 2), norm="mask")
        assert err.item() == 0.0

    def test_half_precision_inputs_reduce_in_fp32(self):
        pred, target = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
        err = denoise_error(pred.bfloat16(), target.bfloat16())
        assert err.dtype == torch.float32

    def test_exception(self):
        with pytest.raises(ValueError, match=r"denoise_error: pred and target must have the same"):
            denoise_error(torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 4))
        with pytest.raises(ValueError, match=r"norm must be one of \('all', 'mask'\), got 'sum'"):
            denoise_error(torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8), norm="sum")
        with pytest.raises(ValueError, match=r"weights must be \(B, 1, h, w\)"):
            denoise_error(torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8), torch.ones(8, 8))


class TestDPOLoss:
    @pytest.mark.parametrize("convention", ["official", "diffusers"])
    def test_ln2_when_policy_equals_reference(self, convention):
        e_w, e_l = torch.rand(5), torch.rand(5)
        loss, logit = dpo_loss(e_w, e_l, e_w, e_l, beta=5000.0, convention=convention)
        torch.testing.assert_close(loss, torch.full((5,), math.log(2.0)))
        assert (logit == 0).all()

    def test_value(self):
        # official: logit = -0.5 * beta * ((0.1 - 0.2) - (0.3 - 0.3)) = 0.05 * beta
        loss, logit = dpo_loss(torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([0.2]), torch.tensor([0.3]),
                               beta=10.0)
        torch.testing.assert_close(logit, torch.tensor([0.5]))
        torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-0.5))]))

    def test_gradient_sign(self):
        """Lowering the policy error on the winner lowers the loss; on the loser it raises it."""
        ref = torch.full((4,), 0.2)
        err_w = torch.full((4,), 0.2, requires_grad=True)
        err_l = torch.full((4,), 0.2, requires_grad=True)
        loss, _ = dpo_loss(err_w, err_l, ref, ref, beta=100.0)
        loss.sum().backward()
        assert (err_w.grad > 0).all()  # gradient descent lowers the winner's error
        assert (err_l.grad < 0).all()  # ... and raises the loser's
        better, _ = dpo_loss(ref - 0.01, ref, ref, ref, beta=100.0)
        worse, _ = dpo_loss(ref, ref - 0.01, ref, ref, beta=100.0)
        assert (better < math.log(2)).all() and (worse > math.log(2)).all()

    def test_beta_conventions_agree(self):
        torch.manual_seed(0)
        e = [torch.rand(6) * 0.01 for _ in range(4)]
        official, logit_o = dpo_loss(*e, beta=5000.0, convention="official")
        diffusers, logit_d = dpo_loss(*e, beta=2500.0, convention="diffusers")
        torch.testing.assert_close(official, diffusers)
        torch.testing.assert_close(logit_o, logit_d)
        assert not torch.allclose(official, dpo_loss(*e, beta=5000.0, convention="diffusers")[0])

    def test_gradcheck(self):
        torch.manual_seed(0)
        inputs = tuple(torch.rand(2, dtype=torch.float64, requires_grad=True) for _ in range(4))
        assert torch.autograd.gradcheck(lambda *e: dpo_loss(*e, beta=3.0)[0], inputs)
        assert torch.autograd.gradcheck(lambda *e: dpo_loss(*e, beta=3.0, convention="diffusers")[0], inputs)

    def test_large_logits_stay_finite(self):
        e = torch.tensor([0.0, 1.0])
        loss, _ = dpo_loss(e, e.flip(0), e.flip(0), e, beta=1e6)
        assert torch.isfinite(loss).all()

    def test_exception(self):
        e = torch.rand(3)
        with pytest.raises(ValueError, match=r"convention must be one of \('official', 'diffusers'\), got 'trl'"):
            dpo_loss(e, e, e, e, beta=1.0, convention="trl")
        with pytest.raises(ValueError, match=r"beta must be > 0, got 0"):
            dpo_loss(e, e, e, e, beta=0)
        with pytest.raises(ValueError, match=r"must all be \(B,\)"):
            dpo_loss(e, e, e, torch.rand(4), beta=1.0)
