"""Chroma trains from the files ComfyUI users keep; the LoRA is the one diffusers and ComfyUI load.

The tiny Chroma of ``tests/tiny_chroma.py`` (BFL-layout diffusion model with the distilled guidance
approximator, the t5xxl and ``ae`` files of ``tests/tiny_flux.py``) at 64 px: its file converts exactly (and as
diffusers' own converter does at Chroma's real width), the bool text mask gives what an unpadded prompt gives,
3 steps of each objective give finite losses (dpo starts at ln 2), the LoRA holds only ``transformer.…`` keys
that diffusers' Chroma LoRA loader applies to the trained output, a ChromaPipeline folder trains, missing or
wrong companions are named, and (with the ComfyUI host) ComfyUI detects the file as Chroma and maps every key
of our LoRA onto its own Chroma, changing its weights exactly as peft's merge does.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ..comfy_host import HostUnavailable, find_host
from ..tiny_chroma import (tiny_chroma_diffusers_folder, tiny_chroma_files, tiny_chroma_inputs,
                           tiny_chroma_transformer, write_chroma_files)
from ..tiny_flux import AXES_DIMS_ROPE, HEADS, tiny_flux_files, unpack_latents
from .objective_kit import region_pairs, region_singles

PAIRS = {"dpo", "patch-dpo", "face-guidance", "hg-dpo"}


def chroma_config(tmp: Path, objective: str, **overrides):
    from vitruvian.trainers.config import TrainConfig

    files = tiny_chroma_files()
    maker = region_pairs if objective in PAIRS and objective != "hg-dpo" else region_singles
    values = dict(objective=objective, base=str(files["diffusion_model"]), text_encoders=(str(files["t5xxl"]),),
                  vae=str(files["vae"]), data=str(maker(tmp / "data", n=4)), out=str(tmp / "out"), steps=3,
                  batch_size=2, resolution=64, learning_rate=1e-3, rank=4, alpha=4, checkpoint_every=100,
                  log_every=1, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "progress.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ files and keys


def test_file_layout_and_strict_round_trip(tmp_path):
    from vitruvian.trainers.families.chroma_files import load_transformer
    from vitruvian.trainers.model_detect import read_shapes

    prefixed = write_chroma_files(tmp_path, prefix="model.diffusion_model.")["diffusion_model"]
    keys = set(read_shapes(tiny_chroma_files()["diffusion_model"]))
    assert "distilled_guidance_layer.norms.0.scale" in keys and "single_blocks.0.linear1.weight" in keys
    assert not any(k.startswith(("time_in.", "vector_in.", "guidance_in.", "final_layer.adaLN")) or "_mod." in k
                   or ".modulation." in k for k in keys)
    ref = tiny_chroma_transformer(0).state_dict()
    for path in (tiny_chroma_files()["diffusion_model"], prefixed):
        state = load_transformer(path, read_shapes(path), torch.float32).state_dict()
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k].bfloat16().float()) for k in ref), path


def _chroma_shapes(hidden=3072, mlp=12288, text=4096, packed=64, approx=5120) -> dict[str, tuple]:
    """A 1 + 1 block Chroma file's names with the real leading sizes the conversion splits on, 2 elsewhere."""
    out = {}
    for k, o in (("img_in", hidden), ("txt_in", hidden), ("final_layer.linear", packed),
                 ("distilled_guidance_layer.in_proj", approx), ("distilled_guidance_layer.out_proj", hidden),
                 ("distilled_guidance_layer.layers.0.in_layer", approx),
                 ("distilled_guidance_layer.layers.0.out_layer", approx), ("single_blocks.0.linear2", hidden),
                 ("single_blocks.0.linear1", 3 * hidden + mlp)):
        out[k + ".weight"], out[k + ".bias"] = (o, 2), (o,)
    out["distilled_guidance_layer.norms.0.scale"] = (approx,)
    for side in ("img", "txt"):
        for k, o in ((f"{side}_attn.qkv", 3 * hidden), (f"{side}_attn.proj", hidden), (f"{side}_mlp.0", mlp),
                     (f"{side}_mlp.2", hidden)):
            out[f"double_blocks.0.{k}.weight"], out[f"double_blocks.0.{k}.bias"] = (o, 2), (o,)
        for n in ("query_norm", "key_norm"):
            out[f"double_blocks.0.{side}_attn.norm.{n}.scale"] = (128,)
    for n in ("query_norm", "key_norm"):
        out[f"single_blocks.0.norm.{n}.scale"] = (128,)
    return out


def test_conversion_matches_diffusers_at_full_width():
    from diffusers.loaders.single_file_utils import convert_chroma_transformer_checkpoint_to_diffusers

    from vitruvian.trainers.families.chroma_files import chroma_to_diffusers
    from vitruvian.trainers.families.flux_keys import strip_prefix

    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) for k, s in _chroma_shapes().items()}
    ours = chroma_to_diffusers(strip_prefix({"model.diffusion_model." + k: v for k, v in state.items()}))
    theirs = convert_chroma_transformer_checkpoint_to_diffusers(dict(state))
    assert sorted(ours) == sorted(theirs) and len(ours) == 55
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_detection_and_refusals():
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.families import FAMILIES
    from vitruvian.trainers.families.chroma_files import chroma_to_diffusers
    from vitruvian.trainers.families.flux_files import flux_kind

    shapes = _chroma_shapes(hidden=64, mlp=256, text=32, approx=32)
    assert FAMILIES["chroma"].shapes_kind(shapes) == "chroma" and flux_kind(shapes) is None
    with pytest.raises(ConfigError, match="Chroma Radiance"):
        FAMILIES["chroma"].shapes_kind({**shapes, "nerf_blocks.0.norm.scale": (64,)})
    early = {k.replace("distilled_guidance_layer.", "distilled_guidance_layer.0."): s for k, s in shapes.items()}
    with pytest.raises(ConfigError, match="early Chroma"):
        FAMILIES["chroma"].shapes_kind(early)
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    state["double_blocks.0.img_attn.lora_down.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"only Chroma tensors, got 1 others .*lora_down"):
        chroma_to_diffusers(state)


def test_bool_text_mask_equals_the_unpadded_prompt():
    """What ``_call`` passes: padded text + bool mask gives the image tokens an unpadded prompt gives."""
    from vitruvian.trainers.families.chroma import _call

    model = tiny_chroma_transformer(0)
    inputs = tiny_chroma_inputs(0, batch=2, text_len=9)
    x = unpack_latents(inputs["hidden_states"], 8, 8)
    text, t = inputs["encoder_hidden_states"], inputs["timestep"]
    mask = torch.arange(9)[None, :] <= torch.tensor([[3], [6]])  # rows keep 4 and 7 tokens
    with torch.no_grad():
        padded = _call(model, x, t, {"encoder_hidden_states": text, "attention_mask": mask})
        for row, n in enumerate((4, 7)):
            alone = _call(model, x[row:row + 1], t[row:row + 1],
                          {"encoder_hidden_states": text[row:row + 1, :n], "attention_mask": mask[row:row + 1, :n]})
            torch.testing.assert_close(padded[row:row + 1], alone, rtol=1e-5, atol=1e-5)


def test_prompt_encoding_keeps_the_prompt_and_one_pad():
    from vitruvian.trainers.models import encode_prompt, load_base

    files = tiny_chroma_files()
    base = load_base(files["diffusion_model"], text_encoders=[files["t5xxl"]], vae=files["vae"])
    with torch.no_grad():
        cond = encode_prompt(base, ["a photo of a cat", ""])
        alone = base.text_encoders[0](torch.tensor([[3, 9, 1202, 13, 3, 9, 1712, 1]])).last_hidden_state
    assert cond["encoder_hidden_states"].shape == (2, 512, 32) and cond["attention_mask"].dtype == torch.bool
    assert cond["attention_mask"].sum(dim=1).tolist() == [9, 2]  # 7 tokens + </s> + 1 pad; </s> + 1 pad
    torch.testing.assert_close(cond["encoder_hidden_states"][:1, :8], alone, rtol=1e-5, atol=1e-5)
    process = base.family.process(base.scheduler, None)
    assert process.patch == 2 and process.shift == pytest.approx(3.1582, abs=1e-4)  # Flux's shift at 1024²


def test_missing_or_wrong_companions_are_named():
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.models import load_base

    files = tiny_chroma_files()
    with pytest.raises(ConfigError, match=r"Chroma diffusion model alone, so it needs text_encoders=<t5xxl.*models/vae/"):
        load_base(files["diffusion_model"])
    with pytest.raises(ConfigError, match=r"text_encoders must be t5 files .*got '.*ae.safetensors'"):
        load_base(files["diffusion_model"], text_encoders=[files["vae"]], vae=files["vae"])
    with pytest.raises(ConfigError, match=r"vae must be an autoencoder file .*models/vae/"):
        load_base(files["diffusion_model"], text_encoders=[files["t5xxl"]], vae=files["t5xxl"])
    with pytest.raises(ConfigError, match=r"text_encoders must be t5 files .*clip_l"):  # Chroma has no CLIP
        load_base(files["diffusion_model"], text_encoders=[files["t5xxl"], tiny_flux_files()["clip_l"]], vae=files["vae"])
    base = load_base(files["diffusion_model"], text_encoders=[files["t5xxl"]], vae=files["vae"])
    assert base.kind == "chroma" and base.family.name == "chroma" and len(base.text_encoders) == 1
    assert not any(p.requires_grad for p in base.unet.parameters())


# ------------------------------------------------------------------------------------------ training


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo", "mpd", "patch-dpo", "face-guidance"])
def test_every_objective_trains_chroma_from_comfyui_files(tmp_path, objective):
    from safetensors import safe_open

    from vitruvian.trainers import train

    res = train(chroma_config(tmp_path, objective))
    losses = _losses(tmp_path / "out")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    if objective == "dpo":
        assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 0
    with safe_open(str(res.lora_path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha"))
                        for k in keys)
    assert any(".single_transformer_blocks." in k for k in keys)
    assert meta["vitruvian_lora_keys"] == "diffusers" and meta["ss_base_model_version"] == "chroma"


@pytest.mark.slow
def test_hg_dpo_pipelines_sample_chroma(tmp_path):
    """HG-DPO's pools come from the family's pipelines (the whole curriculum runs on Flux.1 in test_flux_train)."""
    from vitruvian.trainers.models import load_base

    cfg = chroma_config(tmp_path, "hg-dpo")
    base = load_base(cfg.base, text_encoders=cfg.text_encoders, vae=cfg.vae)
    t2i, i2i = base.family.pipelines(base)
    g = torch.Generator().manual_seed(0)
    image = t2i(prompt="a portrait", height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                max_sequence_length=16, generator=g).images[0]
    again = i2i(prompt="a portrait", image=image, strength=0.5, num_inference_steps=2, guidance_scale=1.0,
                max_sequence_length=16, generator=g, height=64, width=64).images[0]
    assert image.size == again.size == (64, 64)


def test_gradient_checkpointing_is_refused(tmp_path):
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers import train

    with pytest.raises(ConfigError, match="Chroma base must train without gradient_checkpointing and low_memory"):
        train(chroma_config(tmp_path, "sft", low_memory=True))


@pytest.mark.slow
def test_diffusers_loads_the_lora_to_the_trained_output(tmp_path):
    """The file through diffusers' Chroma LoRA loader (alphas included) = our peft model, on the same input."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    from vitruvian.trainers import train
    from vitruvian.trainers.families.chroma import _call
    from vitruvian.trainers.lora_layers import add_lora
    from vitruvian.trainers.models import apply_lora_state, load_lora_state

    res = train(chroma_config(tmp_path, "sft", alpha=8))  # alpha ≠ rank: the scale must travel
    folder = tiny_chroma_diffusers_folder()
    ours = ChromaTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    add_lora(ours, rank=4, alpha=8, targets=("to_q", "to_k", "to_v", "to_out.0"))
    apply_lora_state(ours, load_lora_state(res.lora_path).unet)
    theirs = ChromaTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    state, alphas = ChromaPipeline.lora_state_dict(str(res.lora_path), return_alphas=True)
    theirs.load_lora_adapter(state, network_alphas=alphas, prefix="transformer", adapter_name="v")
    plain = ChromaTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(1, 7, 32, generator=g), "attention_mask": torch.ones(1, 7, dtype=torch.bool)}
    t = torch.tensor([0.4])
    with torch.no_grad():
        a, b, base = (_call(m.eval(), x, t, cond) for m in (ours, theirs, plain))
    assert float((a - base).abs().max()) > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_diffusers_folder_trains(tmp_path):
    from vitruvian.trainers import train

    cfg = chroma_config(tmp_path, "dpo", base=str(tiny_chroma_diffusers_folder()), text_encoders=(), vae="")
    train(cfg)
    assert _losses(tmp_path / "out")[0] == pytest.approx(math.log(2), abs=1e-6)


# ------------------------------------------------------------------------------------------ ComfyUI

_PROBE = r"""
import json, logging, sys
comfy_dir, model_path, lora_path, out_path, heads, axes = sys.argv[1:7]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, comfy_dir)
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.lora, comfy.lora_convert, comfy.model_detection as md, comfy.model_patcher, comfy.sd, comfy.utils
from safetensors.torch import save_file

warnings = []
class Catch(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
logging.getLogger().addHandler(Catch())

sd = comfy.utils.load_torch_file(model_path)
model_config = md.model_config_from_unet(sd, "")
detected = {k: model_config.unet_config[k] for k in ("image_model", "depth", "depth_single_blocks", "hidden_size")}
approx = sd["distilled_guidance_layer.in_proj.weight"]
model_config.unet_config.update(hidden_size=sd["img_in.weight"].shape[0], num_heads=int(heads),
                                context_in_dim=sd["txt_in.weight"].shape[1], axes_dim=json.loads(axes),
                                out_dim=sd["img_in.weight"].shape[0], hidden_dim=approx.shape[0],
                                n_layers=len({k.split(".")[2] for k in sd if ".layers." in k}))
model_config.set_inference_dtype(torch.float32, None)
model = model_config.get_model(sd, "")
model.load_model_weights(dict(sd), "")
before = {k: v.clone() for k, v in model.diffusion_model.state_dict().items()}
cpu = torch.device("cpu")
patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
key_map = comfy.lora.model_lora_keys_unet(model, {})
loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map)
patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)
patched.patch_model()
after = patched.model.diffusion_model.state_dict()
save_file({k: (after[k] - before[k]).contiguous() for k in before}, out_path)
print("REPORT " + json.dumps({"warnings": warnings, "detected": detected, "model": type(model).__name__,
                              "lora_keys": len(lora), "patches": len(loaded)}))
"""


@pytest.mark.slow
@pytest.mark.comfy
def test_comfyui_detects_chroma_and_applies_every_lora_key(tmp_path):
    """ComfyUI (its Chroma built at the tiny sizes, as UNETLoader would at the real ones) maps every key of our
    LoRA, and its patched weights move by exactly peft's merged update, converted back to diffusers names."""
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    from safetensors import safe_open
    from safetensors.torch import load_file

    from vitruvian.trainers import train
    from vitruvian.trainers.families.chroma_files import chroma_to_diffusers

    targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    config = chroma_config(tmp_path, "sft", rank=4, alpha=8, lora_targets=targets)
    res = train(config)
    with safe_open(str(res.lora_path), framework="pt") as f:
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in f.keys()}
        n_keys = len(list(f.keys()))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), "-c", _PROBE, str(comfy_dir), config.base, str(res.lora_path), str(tmp_path / "delta.safetensors"),
         str(HEADS), json.dumps(list(AXES_DIMS_ROPE))],
        cwd=str(comfy_dir), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["detected"] == {"image_model": "chroma", "depth": 1, "depth_single_blocks": 1, "hidden_size": 3072}
    assert report["model"] == "Chroma"
    assert report["warnings"] == [], report["warnings"]  # no "lora key not loaded", no unet missing/unexpected
    assert report["lora_keys"] == n_keys and report["patches"] == len(modules)

    lora = load_file(str(res.lora_path))
    theirs = chroma_to_diffusers(load_file(str(tmp_path / "delta.safetensors")))
    expected = {k: torch.zeros_like(v) for k, v in theirs.items()}
    for m in modules:  # peft's update: B @ A · alpha / rank, on the diffusers module's weight
        name = m.removeprefix("transformer.")
        up, down = lora[f"{m}.lora_B.weight"], lora[f"{m}.lora_A.weight"]
        expected[name + ".weight"] = up @ down * float(lora[f"{m}.alpha"]) / down.shape[0]
    assert theirs.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(theirs[k], expected[k], rtol=1e-4, atol=1e-6, msg=k)
