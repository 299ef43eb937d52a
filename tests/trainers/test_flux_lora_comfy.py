"""A Flux.1 LoRA our trainer writes loads in the real ComfyUI host with every key used, and changes ComfyUI's
output exactly as it changes the trained model's.

ComfyUI hard-codes Flux's width (3072, 24 heads, context 4096, RoPE axes; ``comfy/model_detection.py``), so
UNETLoader cannot build the tiny Flux of ``tests/tiny_flux.py``. The probe below (run with the host's own
Python, no shell) does what ``comfy.sd.load_diffusion_model_state_dict`` does with the tiny sizes put into the
detected ``unet_config`` (``model_config_from_unet`` → ``get_model`` → ``load_model_weights``), then what
LoraLoader does (``comfy.sd.load_lora_for_models``: ``model_lora_keys_unet`` → ``convert_lora`` → ``load_lora``
→ ``ModelPatcher.add_patches``) and ``patch_model``, logging every warning. Our ``transformer.<diffusers
module>`` keys reach ComfyUI's fused weights as slices (``img_attn.qkv``, ``txt_attn.qkv``, single blocks'
``linear1``), so both target sets are run: the trainer's default (image attention) and the text stream too.

Reference: diffusers' ``FluxTransformer2DModel`` built from the same (bf16) file in fp32, with the LoRA applied
through peft, called through the trainer's own ``_call`` (pack / unpack).
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
from ..tiny_flux import AXES_DIMS_ROPE, HEADS
from .test_flux_train import flux_config

RANK, ALPHA = 4, 8  # alpha ≠ rank: the scale must travel in the file's .alpha tensors

_PROBE = r"""
import json, logging, sys
comfy_dir, model_path, lora_path, io_path, out_path, heads, axes = sys.argv[1:8]
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
model_config.unet_config.update(hidden_size=sd["img_in.weight"].shape[0], num_heads=int(heads),
                                context_in_dim=sd["txt_in.weight"].shape[1], axes_dim=json.loads(axes))
model_config.set_inference_dtype(torch.float32, None)
model = model_config.get_model(sd, "")
n_weights = len(sd)
model.load_model_weights(dict(sd), "")  # logs "unet missing/unexpected" as warnings if anything is off
cpu = torch.device("cpu")
patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)

io = load_file(io_path)
def run(m):
    with torch.no_grad():
        return m.diffusion_model(io["x"], io["sigma"], io["context"], y=io["y"], guidance=io["guidance"]).contiguous()

base = run(model)
lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
key_map = comfy.lora.model_lora_keys_unet(model, {})
loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map)
patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)  # LoraLoader's path; warns NOT LOADED
patched.patch_model()
after = run(patched.model)
save_file({"base": base, "after": after}, out_path)
report = {"warnings": warnings, "lora_keys": len(lora), "patches": len(loaded), "weights": n_weights,
          "patched_weights": sorted({k if isinstance(k, str) else k[0] for k in loaded}),
          "hidden_size": model_config.unet_config["hidden_size"], "model": type(model).__name__}
print("REPORT " + json.dumps(report))
"""


def _reference(model_path, lora_path, targets, io):
    """Our side: diffusers Flux from the same file, without and with the LoRA (peft), through ``_call``."""
    from vitruvian.core.lora_io import load_lora_state
    from vitruvian.trainers.families.flux import _call
    from vitruvian.trainers.families.flux_files import load_transformer
    from vitruvian.trainers.lora_layers import add_lora
    from vitruvian.trainers.model_detect import read_shapes
    from vitruvian.trainers.models import apply_lora_state

    shapes = read_shapes(model_path)
    plain = load_transformer(model_path, shapes, torch.float32).eval()
    ours = load_transformer(model_path, shapes, torch.float32).eval()
    add_lora(ours, rank=RANK, alpha=ALPHA, targets=targets)
    apply_lora_state(ours, load_lora_state(lora_path).unet)
    cond = {"encoder_hidden_states": io["context"], "pooled_projections": io["y"]}
    with torch.no_grad():
        return [_call(m, io["x"], io["sigma"], cond, guidance=float(io["guidance"][0])) for m in (plain, ours)]


@pytest.mark.slow
@pytest.mark.comfy
@pytest.mark.parametrize("targets", [("to_q", "to_k", "to_v", "to_out.0"),
                                     ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                      "to_add_out")], ids=["image-attention", "text-stream-too"])
def test_comfyui_loads_our_flux_lora_to_the_trained_change(tmp_path, targets):
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    from vitruvian.trainers import train

    config = flux_config(tmp_path, "sft", rank=RANK, alpha=ALPHA, lora_targets=targets)
    res = train(config)
    model_path = config.base
    with safe_open(str(res.lora_path), framework="pt") as f:
        file_keys = list(f.keys())
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in file_keys}
    assert any(".single_transformer_blocks." in m for m in modules)  # single blocks' q/k/v: linear1 slices
    if "add_q_proj" in targets:
        assert any(m.endswith(".attn.add_q_proj") for m in modules) and any(m.endswith(".to_add_out") for m in modules)

    g = torch.Generator().manual_seed(11)
    b = 2
    io = {"x": torch.randn(b, 16, 8, 8, generator=g), "sigma": torch.tensor([0.3, 0.8]),
          "context": torch.randn(b, 7, 32, generator=g), "y": torch.randn(b, 32, generator=g),
          "guidance": torch.full((b,), 3.5)}
    save_file(io, str(tmp_path / "io.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), "-c", _PROBE, str(comfy_dir), str(model_path), str(res.lora_path),
         str(tmp_path / "io.safetensors"), str(tmp_path / "comfy_out.safetensors"), str(HEADS),
         json.dumps(list(AXES_DIMS_ROPE))],
        cwd=str(comfy_dir), env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["model"] == "Flux" and report["hidden_size"] == 64
    # nothing left behind: no "lora key not loaded", "NOT LOADED", "unet missing/unexpected", shape mismatch
    assert report["warnings"] == [], report["warnings"]
    assert report["lora_keys"] == len(file_keys) and report["patches"] == len(modules)
    assert any(w.endswith("linear1.weight") for w in report["patched_weights"])
    assert any(w.endswith("img_attn.qkv.weight") for w in report["patched_weights"])
    if "add_q_proj" in targets:
        assert any(w.endswith("txt_attn.qkv.weight") for w in report["patched_weights"])
        assert any(w.endswith("txt_attn.proj.weight") for w in report["patched_weights"])

    comfy = load_file(str(tmp_path / "comfy_out.safetensors"))
    plain, ours = _reference(model_path, res.lora_path, targets, io)
    base_diff = float((comfy["base"] - plain).abs().max())
    change = ours - plain
    comfy_change = comfy["after"] - comfy["base"]
    delta_diff = float((comfy_change - change).abs().max())
    print(f"[flux-lora-comfy {'+'.join(targets)}] base max|Δ| {base_diff:.3g}, LoRA change max {float(change.abs().max()):.3g}, "
          f"change diff max {delta_diff:.3g}")
    assert base_diff < 1e-4  # the same weights give the same output on both sides
    assert float(change.abs().max()) > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(comfy_change, change, rtol=1e-3, atol=1e-4)
