"""trainers.objectives: registry, sft and dpo on the tiny UNet with real peft LoRA layers."""
from __future__ import annotations

import doctest
import math

import pytest
import torch

from vitruvian.core.errors import ConfigError
from vitruvian.trainers import objectives as objectives_module
from vitruvian.trainers.models import add_lora
from vitruvian.trainers.objectives import (
    DPO,
    SFT,
    Objective,
    ObjectiveContext,
    get_objective,
    objective_names,
)
from vitruvian.trainers.families.ddpm import DDPMProcess
from vitruvian.trainers.objectives.noising import drop_prompts, repeat_cond

from ..tiny import tiny_scheduler, tiny_unet


def lora_unet(kind: str = "sd15", *, random_b: bool = False):
    unet = add_lora(tiny_unet(0, kind), rank=4, alpha=4.0, targets=("to_q", "to_k", "to_v", "to_out.0"))
    if random_b:  # a LoRA that changes the output (as after some training)
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in unet.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    return unet


def make_batch(B: int = 2, kind: str = "sd15", *, same_pair: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, 2, 4, 8, 8, generator=g)
    if same_pair:
        latents[:, 1] = latents[:, 0]
    if kind == "sd15":
        cond = {"encoder_hidden_states": torch.randn(B, 77, 32, generator=g)}
    else:
        cond = {"encoder_hidden_states": torch.randn(B, 77, 64, generator=g),
                "added_cond_kwargs": {"text_embeds": torch.randn(B, 32, generator=g),
                                      "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]).repeat(B, 1)}}
    return {"latents": latents, "cond": cond}


def ctx_for(unet, seed: int = 0, scheduler=None, empty_cond=None):
    return ObjectiveContext(unet=unet, scheduler=scheduler or tiny_scheduler(),
                            generator=torch.Generator().manual_seed(seed), empty_cond=empty_cond)


class Recorder:
    """Forward hook: every UNet call's (grad enabled, x_t, t, output)."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output):
        x, t = args[0], args[1]
        self.calls.append((torch.is_grad_enabled(), x.detach().clone(), t.clone(), output[0].detach().clone()))


class TestRegistry:
    def test_names(self):
        names = objective_names()
        assert {"dpo", "sft"} <= set(names) and list(names) == sorted(names)
        assert doctest.testmod(objectives_module).failed == 0

    def test_protocol(self):
        for name in ("sft", "dpo"):
            obj = get_objective(name)
            assert isinstance(obj, Objective)
            assert obj.name == name
        assert (get_objective("sft").images_per_sample, get_objective("sft").needs_reference) == (1, False)
        assert (get_objective("dpo").images_per_sample, get_objective("dpo").needs_reference) == (2, True)

    def test_from_config(self, tmp_path):
        from vitruvian.trainers.config import TrainConfig

        cfg = TrainConfig(objective="dpo", base="/m", data="/d", out="/o", beta=2500, beta_convention="diffusers",
                          proportion_empty_prompts=0.2)
        assert get_objective("dpo", cfg) == DPO(beta=2500.0, convention="diffusers", proportion_empty_prompts=0.2)
        assert get_objective("sft", cfg) == SFT(proportion_empty_prompts=0.2)

    def test_exception(self):
        with pytest.raises(ConfigError, match=r"get_objective: objective must be one of .*, got 'ppo'") as info:
            get_objective("ppo")
        assert all(name in str(info.value) for name in objective_names())
        with pytest.raises(ValueError, match=r"DPO: convention must be one of"):
            DPO(convention="trl")


class TestDPO:
    def test_step0_logit_is_exactly_zero(self):
        """LoRA B = 0 at init: policy == reference bit for bit, so logit = 0 and loss = ln 2."""
        unet = lora_unet()
        out = DPO()(make_batch(3), ctx_for(unet))
        assert out.metrics["logit"].item() == 0.0
        assert out.metrics["implicit_acc"].item() == 0.0
        assert out.loss.item() == pytest.approx(math.log(2), abs=1e-7)
        assert out.per_sample.shape == (3,)

    def test_reference_first_no_grad_then_one_policy_call(self):
        unet = lora_unet(random_b=True)
        rec = Recorder(unet)
        B = 2
        DPO()(make_batch(B), ctx_for(unet))
        assert [(c[0], c[1].shape[0]) for c in rec.calls] == [(False, 2 * B), (True, 2 * B)]
        ref_x, policy_x = rec.calls[0][1], rec.calls[1][1]
        torch.testing.assert_close(ref_x, policy_x, rtol=0, atol=0)

    def test_reference_equals_base_exactly(self):
        unet = lora_unet(random_b=True)
        rec = Recorder(unet)
        batch = make_batch(2)
        DPO()(batch, ctx_for(unet))
        _, x, t, ref_out = rec.calls[0]
        base = tiny_unet(0)
        with torch.no_grad():
            expected = base(x, t, encoder_hidden_states=repeat_cond(batch["cond"], 2)["encoder_hidden_states"]).sample
        assert torch.equal(ref_out, expected)
        assert not torch.allclose(rec.calls[1][3], expected)  # the policy does differ
        assert all(p.requires_grad for n, p in unet.named_parameters() if "lora_" in n)  # restored

    def test_pair_shares_timestep_and_noise(self):
        unet = lora_unet()
        rec = Recorder(unet)
        batch = make_batch(3, same_pair=True)
        out = DPO()(batch, ctx_for(unet))
        _, x, t, _ = rec.calls[0]
        assert torch.equal(t[:3], t[3:])
        assert torch.equal(x[:3], x[3:])  # same x0 for winner and loser → same x_t only if ε is shared
        assert out.metrics["policy_err_w"].item() == pytest.approx(out.metrics["policy_err_l"].item(), rel=1e-6)

    def test_gradient_reaches_lora_only(self):
        unet = lora_unet(random_b=True)
        out = DPO()(make_batch(2), ctx_for(unet))
        out.loss.backward()
        grads = {n: p.grad for n, p in unet.named_parameters() if p.grad is not None}
        assert grads and all("lora_" in n for n in grads)
        assert any(g.abs().sum() > 0 for g in grads.values())
        assert out.loss.dtype == torch.float32

    def test_beta_conventions_agree(self):
        unet = lora_unet(random_b=True)
        batch = make_batch(2)
        official = DPO(beta=5000.0, convention="official")(batch, ctx_for(unet, seed=3))
        diffusers = DPO(beta=2500.0, convention="diffusers")(batch, ctx_for(unet, seed=3))
        torch.testing.assert_close(official.loss, diffusers.loss)

    def test_sdxl_conditioning(self):
        unet = lora_unet("sdxl", random_b=True)
        empty = {k: (v[:1] if torch.is_tensor(v) else {kk: vv[:1] for kk, vv in v.items()})
                 for k, v in make_batch(1, "sdxl", seed=5)["cond"].items()}
        out = DPO(proportion_empty_prompts=0.5)(make_batch(2, "sdxl"), ctx_for(unet, empty_cond=empty))
        assert torch.isfinite(out.loss) and out.per_sample.shape == (2,)

    def test_exception(self):
        unet = lora_unet()
        batch = make_batch(2)
        batch["latents"] = batch["latents"][:, :1]
        with pytest.raises(ValueError, match=r"DPO: batch latents must be \(B, 2, C, h, w\).*got \(2, 1, 4, 8, 8\)"):
            DPO()(batch, ctx_for(unet))
        with pytest.raises(ConfigError, match=r"adapters_disabled: models must contain LoRA layers"):
            DPO()(make_batch(2), ctx_for(tiny_unet(0)))


class TestSFT:
    @pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
    def test_value(self, prediction_type):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(tiny_scheduler().config, prediction_type=prediction_type)
        unet = lora_unet(random_b=True)
        rec = Recorder(unet)
        batch = make_batch(2)
        out = SFT()(batch, ctx_for(unet, scheduler=scheduler))
        (_, x, t, pred), = rec.calls
        x0 = batch["latents"][:, 0]
        ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        target = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        expected = (pred - target).square().mean(dim=(1, 2, 3))
        torch.testing.assert_close(out.per_sample, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-4, atol=1e-5)

    def test_unsupported_prediction_type(self):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(tiny_scheduler().config, prediction_type="sample")
        with pytest.raises(ValueError, match=r"prediction_type must be 'epsilon' or 'v_prediction', got 'sample'"):
            DDPMProcess(scheduler).add_noise(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), torch.zeros(1).long())

    def test_deterministic_given_generator(self):
        unet = lora_unet(random_b=True)
        batch = make_batch(2)
        a = SFT()(batch, ctx_for(unet, seed=7)).loss
        b = SFT()(batch, ctx_for(unet, seed=7)).loss
        c = SFT()(batch, ctx_for(unet, seed=8)).loss
        assert a.item() == b.item() and a.item() != c.item()


class TestDropPrompts:
    def test_value(self):
        cond = {"encoder_hidden_states": torch.ones(64, 3, 2),
                "added_cond_kwargs": {"text_embeds": torch.ones(64, 2), "time_ids": torch.ones(64, 6)}}
        empty = {"encoder_hidden_states": torch.zeros(1, 3, 2),
                 "added_cond_kwargs": {"text_embeds": torch.zeros(1, 2), "time_ids": torch.ones(1, 6)}}
        g = torch.Generator().manual_seed(0)
        assert drop_prompts(cond, empty, 0.0, g)["encoder_hidden_states"].eq(1).all()
        assert drop_prompts(cond, empty, 1.0, g)["encoder_hidden_states"].eq(0).all()
        half = drop_prompts(cond, empty, 0.5, torch.Generator().manual_seed(0))
        dropped = half["encoder_hidden_states"][:, 0, 0] == 0
        assert 16 < int(dropped.sum()) < 48  # about half of 64
        assert torch.equal(half["added_cond_kwargs"]["text_embeds"][:, 0] == 0, dropped)  # rows move together
        assert torch.equal(drop_prompts(cond, {**empty, "added_cond_kwargs": {"text_embeds": torch.zeros(1, 2),
                           "time_ids": torch.zeros(1, 6)}}, 1.0, g)["added_cond_kwargs"]["time_ids"],
                           cond["added_cond_kwargs"]["time_ids"])  # size/crop conditioning is kept
        again = drop_prompts(cond, empty, 0.5, torch.Generator().manual_seed(0))
        assert torch.equal(again["encoder_hidden_states"], half["encoder_hidden_states"])

    def test_exception(self):
        with pytest.raises(ValueError, match=r"drop_prompts: proportion > 0 needs the empty prompt"):
            drop_prompts({"encoder_hidden_states": torch.ones(2, 3, 2)}, None, 0.2, torch.Generator())
