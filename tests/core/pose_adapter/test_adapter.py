"""PoseGraphAdapter: shapes for SD1.5/SDXL UNets, exact copy of the encoder, zero init, residual consumers."""
from __future__ import annotations

import json

import pytest
import torch

from vitruvian.core.errors import ConfigError
from vitruvian.core.pose_adapter import PoseAdapterConfig, PoseGraphAdapter, prepare_pose_condition
from vitruvian.core.pose_adapter.ldm import adapter_from_ldm

from ...comfy_host import REPO_ROOT
from ...tiny import tiny_unet
from ...tiny_ldm import unet_to_ldm

CONFIGS = REPO_ROOT / "trainers" / "model_configs"


def _unet_config(kind: str) -> dict:
    return json.loads((CONFIGS / kind / "unet" / "config.json").read_text())


def _inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = unet.config.sample_size
    x = torch.randn(batch, 4, h, h, generator=g)
    ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    kw = {}
    if unet.config.addition_embed_type == "text_time":
        kw = {"added_cond_kwargs": {"text_embeds": torch.randn(batch, 32, generator=g),
                                    "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch)}}
    return x, torch.tensor([10, 700][:batch]), ctx, kw


def _pose_features(adapter, pose, size):
    return adapter.encode_pose(prepare_pose_condition(pose, size, adapter.skeleton))


def _residuals(adapter, unet, pose, x, t, ctx, kw):
    add = adapter.added_embeds(**kw["added_cond_kwargs"]) if kw else None
    return adapter(x, t, ctx, _pose_features(adapter, pose, x.shape[-2:]), added_embeds=add)


@pytest.mark.slow
@pytest.mark.parametrize("kind, latent, graph_levels", [("sd15", 64, ()), ("sdxl", 128, ()), ("sdxl", 128, (1, 2))])
def test_shape_full_size_unets_on_meta(kind, latent, graph_levels, astronaut_pose):
    """The residuals of a full-size adapter fit the full-size UNet's skips: the UNet forward adds them."""
    from diffusers import UNet2DConditionModel

    cfg = _unet_config(kind)
    config = PoseAdapterConfig.from_unet_config(cfg, graph_levels=graph_levels)
    with torch.device("meta"):
        adapter = PoseGraphAdapter(config)
        unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    assert config.levels == len(cfg["block_out_channels"]) and config.num_residuals == len(adapter.controlnet_down_blocks)
    n = sum(p.numel() for p in adapter.parameters())
    # ControlNet sizes (SD1.5 361M, SDXL 1.25B) plus the pose encoder, skeleton tables and graph layers.
    assert (360e6 if kind == "sd15" else 1.2e9) < n < (400e6 if kind == "sd15" else 1.35e9)
    pose = astronaut_pose.to_normalized()
    pose = type(pose)(tuple(type(f)(f.people, 8 * latent, 8 * latent, "normalized") for f in pose))
    x = torch.empty(2, 4, latent, latent, device="meta")
    ctx = torch.empty(2, 77, cfg["cross_attention_dim"], device="meta")
    kw, add = {}, None
    if kind == "sdxl":
        kw = {"added_cond_kwargs": {"text_embeds": torch.empty(2, 1280, device="meta"),
                                    "time_ids": torch.empty(2, 6, device="meta")}}
        add = adapter.added_embeds(**kw["added_cond_kwargs"])
        assert add.shape == (2, 2816)
    feats = _pose_features(adapter, pose, (latent, latent))
    res = adapter(x, torch.tensor([1, 2]), ctx, feats, added_embeds=add)
    widths = [c for c in cfg["block_out_channels"] for _ in range(3)][: config.num_residuals - 1]
    assert [r.shape[1] for r in res.down] == [cfg["block_out_channels"][0], *widths]
    side = latent // 2 ** (config.levels - 1)
    assert res.mid.shape == (2, cfg["block_out_channels"][-1], side, side)
    out = unet(x, torch.tensor([1, 2], device="meta"), ctx, **kw, **res.to_diffusers()).sample  # shapes checked by the adds
    assert out.shape == x.shape
    comfy = res.to_comfy()
    assert comfy["input"] == [] and len(comfy["output"]) == config.num_residuals and comfy["middle"][0] is res.mid


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_value_zero_init_is_bit_identical_and_perturbed_changes(kind, astronaut_pose):
    unet = tiny_unet(0, kind)
    torch.manual_seed(0)
    adapter = PoseGraphAdapter.from_unet(unet, skeleton_dim=4, pose_channels=(32, 64))
    x, t, ctx, kw = _inputs(unet)
    pose = astronaut_pose.to_normalized()
    pose = type(pose)(tuple(type(f)(f.people, 64, 64, "normalized") for f in pose))
    with torch.no_grad():
        base = unet(x, t, ctx, **kw).sample
        res = _residuals(adapter, unet, pose, x, t, ctx, kw)
        assert all(torch.count_nonzero(r) == 0 for r in (*res.down, res.mid))
        assert torch.equal(unet(x, t, ctx, **kw, **res.to_diffusers()).sample, base)
        adapter.perturb_zero_init_(0.05)
        res = _residuals(adapter, unet, pose, x, t, ctx, kw)
        changed = unet(x, t, ctx, **kw, **res.to_diffusers()).sample
        assert (changed - base).abs().max() > 1e-3
        # The pose matters: another pose gives other residuals.
        other = type(pose)(tuple(type(f)(tuple(p.scaled(0.5, 0.5) for p in f.people), 64, 64, "normalized")
                                 for f in pose))
        res2 = _residuals(adapter, unet, other, x, t, ctx, kw)
        assert torch.equal(res2.down[0], res.down[0])  # conv_in: before any integrator
        assert (res2.down[1] - res.down[1]).abs().max() > 1e-4


def test_value_plain_adapter_copies_the_encoder_exactly(astronaut_pose):
    """graph=False with identity outputs: the residuals are the UNet's own skip activations."""
    unet = tiny_unet(0, "sd15")
    adapter = PoseGraphAdapter.from_unet(unet, graph=False, skeleton_dim=4, pose_channels=(32, 64))
    with torch.no_grad():
        for conv in (*adapter.controlnet_down_blocks, adapter.controlnet_mid_block):
            conv.weight.copy_(torch.eye(conv.weight.shape[0])[:, :, None, None])
        x, t, ctx, _ = _inputs(unet)
        pose = type(astronaut_pose)(tuple(type(f)(f.people, 512, 512) for f in astronaut_pose))
        res = adapter(x, t, ctx, _pose_features(adapter, pose.to_normalized(), (8, 8)))
        emb = unet.time_embedding(unet.time_proj(t))
        h = unet.conv_in(x)
        expected = [h]
        for block in unet.down_blocks:
            kw = {"encoder_hidden_states": ctx} if hasattr(block, "attentions") else {}
            h, states = block(h, emb, **kw) if kw else block(h, temb=emb)
            expected += list(states)
        mid = unet.mid_block(h, emb, encoder_hidden_states=ctx)
    assert len(res.down) == len(expected)
    for got, want in zip(res.down, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.mid, mid, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_value_ldm_init_equals_diffusers_init(kind):
    unet = tiny_unet(0, kind)
    from_diffusers = PoseGraphAdapter.from_unet(unet, skeleton_dim=4, pose_channels=(32, 64))
    ldm = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    from_ldm = adapter_from_ldm(ldm, skeleton_dim=4, pose_channels=(32, 64))
    fields = ("block_out_channels", "layers_per_block", "cross_attention", "transformer_layers",
              "cross_attention_dim", "use_linear_projection", "addition_embed_dim")
    for f in fields:
        assert getattr(from_ldm.config, f) == getattr(from_diffusers.config, f), f
    a, b = from_diffusers.state_dict(), from_ldm.state_dict()
    copied = [k for k in a if k.startswith(("conv_in.", "time_embedding.", "add_embedding.", "mid_block.",
                                            "down_blocks.0.attentions", "down_blocks.1.resnets.1"))]
    assert copied and all(torch.equal(a[k], b[k]) for k in copied)
    assert torch.equal(a["down_blocks.0.resnets.0.conv1.weight"], unet.state_dict()["down_blocks.0.resnets.0.conv1.weight"])


def test_value_training_step_moves_zero_convs(astronaut_pose):
    """ControlNet's zero convolutions get a gradient at step 0 (their input is not zero)."""
    unet = tiny_unet(0, "sd15").requires_grad_(False)
    adapter = PoseGraphAdapter.from_unet(unet, skeleton_dim=4, pose_channels=(32, 64)).train()
    opt = torch.optim.SGD(adapter.parameters(), lr=0.1)
    x, t, ctx, _ = _inputs(unet)
    pose = type(astronaut_pose)(tuple(type(f)(f.people, 512, 512) for f in astronaut_pose)).to_normalized()
    feats = _pose_features(adapter, pose, (8, 8))
    out = unet(x, t, ctx, **adapter(x, t, ctx, feats).to_diffusers()).sample
    out.square().mean().backward()
    assert adapter.controlnet_mid_block.weight.grad.abs().sum() > 0
    before = adapter.controlnet_mid_block.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, adapter.controlnet_mid_block.weight)


def test_value_batch_one_pose_broadcasts(astronaut_pose):
    unet = tiny_unet(0, "sd15")
    adapter = PoseGraphAdapter.from_unet(unet, skeleton_dim=4, pose_channels=(32, 64)).perturb_zero_init_(0.05)
    x, t, ctx, _ = _inputs(unet)
    pose = type(astronaut_pose)(tuple(type(f)(f.people, 64, 64) for f in astronaut_pose.to_normalized()))
    with torch.no_grad():
        feats = _pose_features(adapter, pose, (8, 8))
        both = adapter(x, t, ctx, feats)
        first = adapter(x[:1], t[:1], ctx[:1], feats)
    torch.testing.assert_close(both.down[-1][:1], first.down[-1], rtol=1e-4, atol=1e-5)


def test_exception(astronaut_pose):
    unet = tiny_unet(0, "sd15")
    adapter = PoseGraphAdapter.from_unet(unet, skeleton_dim=4, pose_channels=(32, 64))
    x, t, ctx, _ = _inputs(unet)
    pose = type(astronaut_pose)(tuple(type(f)(f.people, 64, 64) for f in astronaut_pose.to_normalized()))
    feats = _pose_features(adapter, pose, (8, 8))
    with pytest.raises(ValueError, match=r"encoder_hidden_states must be \(B = 2, L, 32\), got \(2, 77, 768\)"):
        adapter(x, t, torch.zeros(2, 77, 768), feats)
    with pytest.raises(ValueError, match=r"pose_features\[0\] must be \(1 or B = 2, C, 16, 16\)"):
        adapter(torch.zeros(2, 4, 16, 16), t, ctx, feats)
    with pytest.raises(ValueError, match="needs no added_embeds"):
        adapter(x, t, ctx, feats, added_embeds=torch.zeros(2, 8))
    other = tiny_unet(0, "sdxl")
    with pytest.raises(ConfigError, match="load_unet_weights: the UNet must match the adapter's config"):
        adapter.load_unet_weights(other.state_dict())
    with pytest.raises(ConfigError, match="class_embed_type must be None"):
        PoseAdapterConfig.from_unet_config({**unet.config, "class_embed_type": "timestep"})
    with pytest.raises(ConfigError, match=r"graph_levels must be level indices in \[0, 2\), got \(5,\)"):
        PoseAdapterConfig.from_unet_config(unet.config, graph_levels=(5,))
