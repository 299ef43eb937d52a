"""Adapter files: round trip, metadata checks, the init CLI on an LDM checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vitruvian.core.errors import ConfigError, ModelNotFoundError
from vitruvian.core.pose_adapter import PoseGraphAdapter, prepare_pose_condition
from vitruvian.core.pose_adapter.io import load_pose_adapter, main, read_pose_adapter_metadata, save_pose_adapter

from ...tiny import tiny_unet
from ...tiny_ldm import unet_to_ldm


def _adapter(**kw):
    torch.manual_seed(0)
    return PoseGraphAdapter.from_unet(tiny_unet(0, "sd15"), skeleton_dim=4, pose_channels=(32, 64), **kw)


def test_value_round_trip(tmp_path, astronaut_pose):
    adapter = _adapter().perturb_zero_init_(0.05).eval()
    path = save_pose_adapter(tmp_path / "a.safetensors", adapter, source="tiny")
    meta = read_pose_adapter_metadata(path)
    assert meta["source"] == "tiny" and json.loads(meta["config"])["knn"] == 9
    loaded = load_pose_adapter(path)
    assert loaded.config == adapter.config and loaded.skeleton.joint_vocab == adapter.skeleton.joint_vocab
    a, b = adapter.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pose = type(astronaut_pose)(tuple(type(f)(f.people, 64, 64) for f in astronaut_pose.to_normalized()))
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        ra = adapter(x, 5, ctx, adapter.encode_pose(prepare_pose_condition(pose, (8, 8), adapter.skeleton)))
        rb = loaded(x, 5, ctx, loaded.encode_pose(prepare_pose_condition(pose, (8, 8), loaded.skeleton)))
    for p, q in zip((*ra.down, ra.mid), (*rb.down, rb.mid)):  # same weights; buffers at other addresses may
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # take other SIMD paths (1e-7 differences)
    half = load_pose_adapter(save_pose_adapter(tmp_path / "h.safetensors", adapter, dtype=torch.float16),
                             dtype=torch.float32)
    assert half.conv_in.weight.dtype == torch.float32


def test_value_stored_vocabulary_wins(tmp_path):
    adapter = PoseGraphAdapter(_adapter().config, joint_vocab=("<unknown>", "body:nose"), bone_vocab=("<unknown>",))
    loaded = load_pose_adapter(save_pose_adapter(tmp_path / "v.safetensors", adapter))
    assert loaded.skeleton.joint_vocab == ("<unknown>", "body:nose") and loaded.skeleton.joints.weight.shape[0] == 2


def test_exception(tmp_path):
    with pytest.raises(ModelNotFoundError, match="pose adapter"):
        load_pose_adapter(tmp_path / "missing.safetensors")
    other = tmp_path / "controlnet.safetensors"
    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(ConfigError, match="must be a Vitruvian pose adapter .* got format None"):
        load_pose_adapter(other)
    path = save_pose_adapter(tmp_path / "a.safetensors", _adapter())
    tensors, meta = load_file(str(path)), read_pose_adapter_metadata(path)
    del tensors["conv_in.weight"]
    save_file(tensors, str(tmp_path / "cut.safetensors"), metadata=meta)
    with pytest.raises(ConfigError, match=r"1 missing \['conv_in.weight'\]"):
        load_pose_adapter(tmp_path / "cut.safetensors")
    with pytest.raises(ConfigError, match="path must end in .safetensors"):
        save_pose_adapter(tmp_path / "a.pt", _adapter())


def test_smoke_cli_init_from_ldm_checkpoint(tmp_path, capsys):
    unet = tiny_unet(0, "sd15")
    ckpt = tmp_path / "tiny_ldm.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()},
              str(ckpt))
    out = tmp_path / "pa.safetensors"
    assert main(["init", "--unet", str(ckpt), "--out", str(out), "--skeleton-dim", "4", "--perturb", "0.01"]) == 0
    assert "pose-graph adapter" in capsys.readouterr().out
    loaded = load_pose_adapter(out)
    assert loaded.config.block_out_channels == (32, 64) and loaded.config.skeleton_dim == 4
    assert torch.equal(loaded.state_dict()["mid_block.resnets.0.conv1.weight"],
                       unet.state_dict()["mid_block.resnets.0.conv1.weight"])
    assert loaded.controlnet_mid_block.weight.abs().sum() > 0  # --perturb
    assert main(["init", "--unet", str(ckpt), "--out", str(tmp_path / "plain.safetensors"), "--plain"]) == 0
    assert load_pose_adapter(tmp_path / "plain.safetensors").config.graph is False
