"""peft LoRA layers: add, the exact reference (adapters off), merge, resume into a fresh model."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.errors import ConfigError

from ..tiny import tiny_text_encoder, tiny_unet

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _inputs(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 8, 8, generator=g),
        torch.tensor([10, 700])[:batch],
        torch.randn(batch, 77, 32, generator=g),
    )


def _run(unet, inputs):
    x, t, h = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=h).sample


def _randomise_b(model, seed: int = 1, std: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


class TestAddLora:
    def test_smoke(self):
        from vitruvian.trainers.models import add_lora

        unet = tiny_unet()
        base = _run(unet, _inputs())
        assert add_lora(unet, rank=4, alpha=4.0, targets=TARGETS) is unet
        trainable = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
        assert all(p.dtype == torch.float32 for p in trainable.values())
        # 4 targets x (attn1 + attn2) x 4 transformer blocks (1 down, 1 mid, 2 up) x (A, B)
        assert len(trainable) == 4 * 2 * 4 * 2
        assert torch.equal(_run(unet, _inputs()), base)  # B starts at zero: same output

    def test_lora_params_fp32_on_bf16_base(self):
        from vitruvian.trainers.models import add_lora

        unet = tiny_unet().to(torch.bfloat16)
        add_lora(unet, rank=2, alpha=2.0, targets=TARGETS)
        dtypes = {n.split(".lora_")[1].split(".")[0]: p.dtype for n, p in unet.named_parameters() if "lora_" in n}
        assert set(dtypes.values()) == {torch.float32}
        assert unet.conv_in.weight.dtype == torch.bfloat16

    def test_gradient_only_reaches_lora(self):
        from vitruvian.trainers.models import add_lora

        unet = add_lora(tiny_unet(), rank=2, alpha=2.0, targets=TARGETS, init=False)
        x, t, h = _inputs()
        unet(x, t, encoder_hidden_states=h).sample.square().mean().backward()
        grads = {n: p.grad for n, p in unet.named_parameters() if p.grad is not None}
        assert grads and all("lora_" in n for n in grads)
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())

    def test_text_encoder(self):
        from vitruvian.trainers.models import add_lora

        te = add_lora(tiny_text_encoder(), rank=2, alpha=1.0, targets=("q_proj", "k_proj", "v_proj", "out_proj"))
        assert sum("lora_A" in n for n, p in te.named_parameters() if p.requires_grad) == 4 * 2

    def test_exception(self):
        from vitruvian.trainers.models import add_lora

        with pytest.raises(ConfigError, match=r"targets must name modules of UNet2DConditionModel.*\['to_qq'\]"):
            add_lora(tiny_unet(), rank=4, alpha=4.0, targets=("to_qq",))
        with pytest.raises(ConfigError, match="rank must be an int ≥ 1, got 0"):
            add_lora(tiny_unet(), rank=0, alpha=4.0, targets=TARGETS)
        with pytest.raises(ConfigError, match="sequence of module-name suffixes"):
            add_lora(tiny_unet(), rank=4, alpha=4.0, targets="to_q")
        unet = add_lora(tiny_unet(), rank=4, alpha=4.0, targets=TARGETS)
        with pytest.raises(ConfigError, match="already has a LoRA adapter"):
            add_lora(unet, rank=4, alpha=4.0, targets=TARGETS)


class TestAdaptersDisabled:
    def test_exact_base_output(self):
        from vitruvian.trainers.models import adapters_disabled, add_lora

        unet = tiny_unet()
        base = _run(unet, _inputs())
        add_lora(unet, rank=4, alpha=8.0, targets=TARGETS)
        _randomise_b(unet)
        policy = _run(unet, _inputs())
        assert (policy - base).abs().max() > 1e-3  # non-zero B changes the output
        with adapters_disabled(unet):
            reference = _run(unet, _inputs())
        assert torch.equal(reference, base)  # bit for bit
        assert torch.equal(_run(unet, _inputs()), policy)  # switched back on

    def test_restores_state_and_grads(self):
        from vitruvian.trainers.lora_layers import lora_layers
        from vitruvian.trainers.models import adapters_disabled, add_lora

        unet = add_lora(tiny_unet(), rank=2, alpha=2.0, targets=TARGETS)
        frozen = next(p for n, p in unet.named_parameters() if "lora_A" in n)
        frozen.requires_grad_(False)  # peft's enable switch would turn this back on
        with adapters_disabled(unet):
            assert all(layer.disable_adapters for layer in lora_layers(unet))
        assert not any(layer.disable_adapters for layer in lora_layers(unet))
        assert frozen.requires_grad is False
        assert sum(p.requires_grad for n, p in unet.named_parameters() if "lora_" in n) == 64 - 1
        with pytest.raises(RuntimeError, match="boom"), adapters_disabled(unet):
            raise RuntimeError("boom")
        assert not any(layer.disable_adapters for layer in lora_layers(unet))

    def test_several_models_and_peft_model(self):
        from peft import LoraConfig, get_peft_model

        from vitruvian.trainers.models import adapters_disabled, add_lora

        te = add_lora(tiny_text_encoder(), rank=2, alpha=2.0, targets=("q_proj", "v_proj"), init=False)
        ids = torch.randint(0, 500, (1, 77))
        plain = tiny_text_encoder()
        unet = add_lora(tiny_unet(), rank=2, alpha=2.0, targets=TARGETS, init=False)
        with torch.no_grad():
            assert not torch.equal(te(ids).last_hidden_state, plain(ids).last_hidden_state)
            with adapters_disabled(unet, te):  # the reference switches the text encoder's LoRA off too
                assert torch.equal(te(ids).last_hidden_state, plain(ids).last_hidden_state)
        wrapped = get_peft_model(tiny_text_encoder(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        with torch.no_grad():
            assert not torch.equal(wrapped(input_ids=ids).last_hidden_state, plain(ids).last_hidden_state)
            with adapters_disabled(wrapped):
                assert torch.equal(wrapped(input_ids=ids).last_hidden_state, plain(ids).last_hidden_state)

    def test_ddp(self, tmp_path):
        import torch.distributed as dist

        from vitruvian.trainers.models import adapters_disabled, add_lora

        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
        try:
            unet = tiny_unet()
            base = _run(unet, _inputs())
            add_lora(unet, rank=2, alpha=2.0, targets=TARGETS)
            _randomise_b(unet)
            ddp = torch.nn.parallel.DistributedDataParallel(unet)
            x, t, h = _inputs()
            with torch.no_grad(), adapters_disabled(ddp):
                assert torch.equal(ddp(x, t, encoder_hidden_states=h).sample, base)
            with torch.no_grad():
                assert not torch.equal(ddp(x, t, encoder_hidden_states=h).sample, base)
        finally:
            dist.destroy_process_group()

    def test_exception(self):
        from vitruvian.trainers.models import adapters_disabled

        with pytest.raises(ConfigError, match="must contain LoRA layers, got none in \\['UNet2DConditionModel'\\]"):
            with adapters_disabled(tiny_unet()):
                pass


class TestMergeAndResume:
    def test_merge(self):
        from peft.tuners.tuners_utils import BaseTunerLayer

        from vitruvian.trainers.models import add_lora, merge_lora

        unet = add_lora(tiny_unet(), rank=4, alpha=4.0, targets=TARGETS)
        _randomise_b(unet)
        policy = _run(unet, _inputs())
        merge_lora(unet)
        assert not any(isinstance(m, BaseTunerLayer) for m in unet.modules())
        assert not any(p.requires_grad for p in unet.parameters())
        torch.testing.assert_close(_run(unet, _inputs()), policy, atol=1e-5, rtol=1e-5)
        add_lora(unet, rank=2, alpha=2.0, targets=TARGETS)  # a new stage starts from the merged weights
        torch.testing.assert_close(_run(unet, _inputs()), policy, atol=1e-5, rtol=1e-5)

    def test_apply_lora_state(self, tmp_path):
        from vitruvian.trainers.models import add_lora, apply_lora_state, load_lora_state, save_lora

        trained = add_lora(tiny_unet(), rank=4, alpha=2.0, targets=TARGETS)
        _randomise_b(trained)
        save_lora(tmp_path / "l.safetensors", trained, step=7)
        state = load_lora_state(tmp_path / "l.safetensors")
        fresh = add_lora(tiny_unet(), rank=4, alpha=2.0, targets=TARGETS)
        before = [p for n, p in fresh.named_parameters() if "lora_B" in n][0]
        apply_lora_state(fresh, state.unet)
        assert [p for n, p in fresh.named_parameters() if "lora_B" in n][0] is before  # in place
        assert torch.equal(_run(fresh, _inputs()), _run(trained, _inputs()))
        assert state.step == 7
        other = add_lora(tiny_unet(), rank=2, alpha=2.0, targets=TARGETS)
        with pytest.raises(ConfigError, match="other shapes"):
            apply_lora_state(other, state.unet)
        partial = add_lora(tiny_unet(), rank=4, alpha=2.0, targets=("to_q",))
        with pytest.raises(ConfigError, match="unexpected"):
            apply_lora_state(partial, state.unet)
