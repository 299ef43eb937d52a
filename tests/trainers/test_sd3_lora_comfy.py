"""An SD3.5 LoRA our trainer writes loads in the real ComfyUI host with every key used, and changes ComfyUI's
MMDiT output exactly as it changes the trained model's.

ComfyUI hard-codes 64-wide heads (``depth`` = width / 64, ``comfy/model_detection.py``); the tiny SD3.5 of
``tests/tiny_sd3.py`` is 2 blocks × 2 heads × 64, so ComfyUI detects and builds it as it is. The probe below
(run with the host's own Python, no shell) does what ``comfy.sd.load_diffusion_model_state_dict`` does
(``model_config_from_unet`` → ``get_model`` → ``load_model_weights``), then what LoraLoader does
(``comfy.sd.load_lora_for_models``: ``model_lora_keys_unet`` → ``convert_lora`` → ``load_lora`` →
``ModelPatcher.add_patches``) and ``patch_model``, logging every warning. Our ``transformer.<diffusers module>``
keys reach ComfyUI's fused ``qkv`` weights as slices (both streams, and MMDiT-X's ``attn2``).

Both files of a run are loaded: the final LoRA (alpha folded into B, no ``.alpha`` tensors, metadata
``vitruvian_alpha_folded``) and the same step's checkpoint (``checkpoints/step-N/lora.safetensors``, which keeps
``.alpha``); with alpha ≠ rank the scale must arrive either way, so both give the same change.

Reference: diffusers' ``SD3Transformer2DModel`` built from the same (bf16) file in fp32, with the LoRA applied
through peft, called through the trainer's own ``_call`` (timestep σ·1000, which ComfyUI's SD3 model_sampling
also hands its MMDiT).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..comfy_host import HostUnavailable, find_host
from .test_sd3_train import sd3_config

RANK, ALPHA, STEPS = 4, 8, 3  # alpha ≠ rank: the scale must travel (folded into B, or in .alpha tensors)
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

_PROBE = r"""
import json, logging, sys
comfy_dir, model_path, io_path, out_path = sys.argv[1:5]
lora_paths = sys.argv[5:]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, comfy_dir)
import comfy.options
comfy.options.enable_args_parsing()
import torch

import comfy.lora, comfy.lora_convert, comfy.model_detection as md, comfy.model_patcher, comfy.sd, comfy.utils
from safetensors.torch import load_file, save_file

warnings = []  # from here on (importing warns about optional extras such as torchaudio)
class Catch(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger().addHandler(Catch())

sd = comfy.utils.load_torch_file(model_path)
model_config = md.model_config_from_unet(sd, "")
model_config.set_inference_dtype(torch.float32, None)
n_weights = len(sd)
io = load_file(io_path)
def run(m):
    with torch.no_grad():
        return m.diffusion_model(io["x"], io["timestep"], context=io["context"], y=io["y"]).contiguous()

cpu = torch.device("cpu")
outs, reports = {}, []
for i, lora_path in enumerate(lora_paths):
    model = model_config.get_model(dict(sd), "")  # a fresh model for each file
    model.load_model_weights(dict(sd), "")  # logs "unet missing/unexpected" as warnings if anything is off
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    outs[f"base{i}"] = run(model)
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map)
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)  # LoraLoader's path; warns NOT LOADED
    patched.patch_model()
    outs[f"after{i}"] = run(patched.model)
    reports.append({"lora_keys": len(lora), "patches": len(loaded),
                    "patched_weights": sorted({k if isinstance(k, str) else k[0] for k in loaded})})
save_file(outs, out_path)
unet = model_config.unet_config
report = {"warnings": warnings, "weights": n_weights, "files": reports, "model": type(model).__name__,
          "depth": unet["depth"], "x_block_self_attn_layers": list(unet.get("x_block_self_attn_layers", []))}
print("REPORT " + json.dumps(report))
"""


def _reference(model_path, lora_path, io):
    """Our side: diffusers SD3 from the same file, without and with the LoRA (peft), through ``_call``."""
    from vitruvian.core.lora_io import load_lora_state
    from vitruvian.trainers.families.sd3 import _call
    from vitruvian.trainers.families.sd3_files import load_transformer
    from vitruvian.trainers.lora_layers import add_lora
    from vitruvian.trainers.model_detect import read_shapes
    from vitruvian.trainers.models import apply_lora_state

    shapes = read_shapes(model_path)
    plain = load_transformer(model_path, shapes, torch.float32).eval()
    ours = load_transformer(model_path, shapes, torch.float32).eval()
    add_lora(ours, rank=RANK, alpha=ALPHA, targets=TARGETS)
    apply_lora_state(ours, load_lora_state(lora_path).unet)
    cond = {"encoder_hidden_states": io["context"], "pooled_projections": io["y"]}
    with torch.no_grad():
        return [_call(m, io["x"], io["timestep"], cond) for m in (plain, ours)]


def _modules(keys):
    return {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}


@pytest.mark.slow
@pytest.mark.comfy
@pytest.mark.parametrize("medium", [False, True], ids=["large", "medium-mmdit-x"])
def test_comfyui_loads_our_sd3_lora_to_the_trained_change(tmp_path, medium):
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    from vitruvian.trainers import train

    config = sd3_config(tmp_path, "sft", medium=medium, rank=RANK, alpha=ALPHA, lora_targets=TARGETS, steps=STEPS,
                        checkpoint_every=STEPS)
    res = train(config)
    model_path = config.base
    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{STEPS}" / "lora.safetensors"
    assert checkpoint.is_file(), sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    paths = [res.lora_path, checkpoint]
    keys, metas = [], []
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            keys.append(list(f.keys()))
            metas.append(f.metadata() or {})
    final_keys, ckpt_keys = keys
    assert not [k for k in final_keys if k.endswith(".alpha")] and metas[0].get("vitruvian_alpha_folded") == "true"
    assert [k for k in ckpt_keys if k.endswith(".alpha")] and metas[1].get("vitruvian_alpha_folded") != "true"
    modules = [_modules(k) for k in keys]
    assert len(modules[0]) == len(modules[1])
    final_modules = modules[0]
    assert any(m.endswith(".attn.add_q_proj") for m in final_modules) and any(m.endswith(".to_add_out") for m in final_modules)
    assert any(".attn2." in m for m in final_modules) == medium

    g = torch.Generator().manual_seed(11)
    b = 2
    sigma = torch.tensor([0.3, 0.8])
    io = {"x": torch.randn(b, 16, 8, 8, generator=g), "timestep": sigma * 1000,
          "context": torch.randn(b, 7, 64, generator=g), "y": torch.randn(b, 64, generator=g)}
    save_file(io, str(tmp_path / "io.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), "-c", _PROBE, str(comfy_dir), str(model_path), str(tmp_path / "io.safetensors"),
         str(tmp_path / "comfy_out.safetensors"), *map(str, paths)],
        cwd=str(comfy_dir), env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["model"] == "SD3" and report["depth"] == 2
    assert report["x_block_self_attn_layers"] == ([0] if medium else [])
    # nothing left behind: no "lora key not loaded", "NOT LOADED", "unet missing/unexpected", shape mismatch
    assert report["warnings"] == [], report["warnings"]
    for file_report, file_keys, file_modules in zip(report["files"], keys, modules):
        assert file_report["lora_keys"] == len(file_keys) and file_report["patches"] == len(file_modules)
        patched = file_report["patched_weights"]
        for suffix in ("x_block.attn.qkv.weight", "x_block.attn.proj.weight", "context_block.attn.qkv.weight",
                       "context_block.attn.proj.weight"):
            assert any(w.endswith(suffix) for w in patched), (suffix, patched)
        assert any(w.endswith("x_block.attn2.qkv.weight") for w in patched) == medium

    comfy = load_file(str(tmp_path / "comfy_out.safetensors"))
    changes = []
    for i, (path, name) in enumerate(zip(paths, ("final", "checkpoint"))):
        plain, ours = _reference(model_path, path, io)
        base_diff = float((comfy[f"base{i}"] - plain).abs().max())
        change = ours - plain
        comfy_change = comfy[f"after{i}"] - comfy[f"base{i}"]
        delta_diff = float((comfy_change - change).abs().max())
        print(f"[sd3-lora-comfy {'medium' if medium else 'large'} {name}] base max|Δ| {base_diff:.3g}, "
              f"LoRA change max {float(change.abs().max()):.3g}, change diff max {delta_diff:.3g}")
        assert base_diff < 1e-4  # the same weights give the same output on both sides
        assert float(change.abs().max()) > 1e-4  # the LoRA changes the output
        torch.testing.assert_close(comfy_change, change, rtol=1e-3, atol=1e-4)
        changes.append(comfy_change)
    # the folded final file and the checkpoint with .alpha are the same step's LoRA: the same change in ComfyUI
    torch.testing.assert_close(changes[0], changes[1], rtol=1e-3, atol=1e-4)
