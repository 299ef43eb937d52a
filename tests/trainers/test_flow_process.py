"""The rectified-flow forward process and the Flux.1 key conversion, without a model.

- ``FlowMatchProcess``: x_t, v, x̂0 and v* agree with each other; the shifted logit-normal σ has the median the
  shift formula gives; Flux's resolution shift matches FluxPipeline's ``calculate_shift``.
- ``flux_keys.bfl_to_diffusers`` equals diffusers' own converter at Flux's real width (3072), where that one
  works (it hard-codes the width): every tensor, bit for bit.
"""
from __future__ import annotations

import math

import pytest
import torch

from vitruvian.trainers.families.flow import FlowMatchProcess, flux_shift


def _process(shift=1.0, **kw):
    return FlowMatchProcess(call=lambda m, x, s, c: m(x, s), shift=shift, **kw)


def test_noise_target_and_x0_are_consistent():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 16, 4, 4, generator=g), torch.randn(3, 16, 4, 4, generator=g)
    p = _process(3.0)
    s = p.sample_t(3, torch.Generator().manual_seed(1))
    assert s.dtype == torch.float32 and s.shape == (3,) and bool(((s > 0) & (s < 1)).all())
    x_t, v = p.add_noise(x0, eps, s)
    torch.testing.assert_close(p.predicted_x0(x_t, v, s), x0, rtol=0, atol=1e-5)  # the true velocity gives x0
    torch.testing.assert_close(p.target_towards(x_t, x0, s), v, rtol=1e-4, atol=1e-4)
    snr = (1 - s) ** 2 / s ** 2
    torch.testing.assert_close(p.signal_level(s), snr / (1 + snr))
    seen = []
    p.predict(lambda x, t: seen.append(t) or x, x_t, s, {})
    torch.testing.assert_close(seen[0], s)  # timestep_scale 1: Flux takes σ itself
    seen.clear()
    FlowMatchProcess(call=lambda m, x, t, c: m(x, t), shift=3.0, timestep_scale=1000).predict(
        lambda x, t: seen.append(t) or x, x_t, s, {})
    torch.testing.assert_close(seen[0], s * 1000)  # SD3 takes σ·1000


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_shifted_logit_normal_median(shift):
    s = _process(shift).sample_t(20000, torch.Generator().manual_seed(0))
    # median of sigmoid(N(0, 1)) is 0.5; the shift maps it to s·0.5 / (1 + (s − 1)·0.5) = s / (1 + s)
    assert float(s.median()) == pytest.approx(shift / (1 + shift), abs=0.01)
    assert float(_process(shift, logit_mean=1.0).sample_t(20000, torch.Generator().manual_seed(0)).median()) > float(s.median())


def test_flux_shift_is_flux_pipelines():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for tokens in (256, 1024, 4096, 16):
        assert flux_shift(tokens) == pytest.approx(math.exp(calculate_shift(tokens, 256, 4096, 0.5, 1.15)), rel=1e-12)


def test_bad_process_settings_are_refused():
    with pytest.raises(ValueError, match="shift must be a finite number > 0"):
        _process(0.0)
    with pytest.raises(ValueError, match="logit_std must be > 0"):
        _process(1.0, logit_std=0.0)


def _bfl_shapes(hidden=3072, mlp=12288, text=4096, pooled=768, packed=64) -> dict[str, tuple]:
    """The tensor names of a 1 + 1 block Flux.1-dev file with the real leading dimensions (the only ones the
    conversion splits on) and 2 on every other axis, to keep the test small."""
    shapes = {"img_in": (hidden, packed), "txt_in": (hidden, text), "time_in.in_layer": (hidden, 256),
              "time_in.out_layer": (hidden, hidden), "vector_in.in_layer": (hidden, pooled),
              "vector_in.out_layer": (hidden, hidden), "guidance_in.in_layer": (hidden, 256),
              "guidance_in.out_layer": (hidden, hidden), "final_layer.linear": (packed, hidden),
              "final_layer.adaLN_modulation.1": (2 * hidden, hidden)}
    out = {}
    for k, (o, i) in shapes.items():
        out[k + ".weight"], out[k + ".bias"] = (o, 2), (o,)
    d = "double_blocks.0."
    for side in ("img", "txt"):
        for k, o in ((f"{side}_mod.lin", 6 * hidden), (f"{side}_attn.qkv", 3 * hidden), (f"{side}_attn.proj", hidden),
                     (f"{side}_mlp.0", mlp), (f"{side}_mlp.2", hidden)):
            out[d + k + ".weight"], out[d + k + ".bias"] = (o, 2), (o,)
        for n in ("query_norm", "key_norm"):
            out[f"{d}{side}_attn.norm.{n}.scale"] = (128,)
    s = "single_blocks.0."
    for k, o in (("linear1", 3 * hidden + mlp), ("linear2", hidden), ("modulation.lin", 3 * hidden)):
        out[s + k + ".weight"], out[s + k + ".bias"] = (o, 2), (o,)
    for n in ("query_norm", "key_norm"):
        out[f"{s}norm.{n}.scale"] = (128,)
    return out


def test_bfl_conversion_matches_diffusers_at_full_width():
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from vitruvian.trainers.families.flux_keys import bfl_to_diffusers, strip_prefix

    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in _bfl_shapes().items()}
    ours = bfl_to_diffusers(strip_prefix({"model.diffusion_model." + k: v for k, v in state.items()}))
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    assert sorted(ours) == sorted(theirs) and len(ours) == 66
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_unknown_tensors_are_named():
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.families.flux_keys import bfl_to_diffusers

    state = {k: torch.zeros(s) for k, s in _bfl_shapes().items()}
    state["double_blocks.0.img_attn.lora_down.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"only Flux.1 tensors, got 1 others .*lora_down"):
        bfl_to_diffusers(state)
