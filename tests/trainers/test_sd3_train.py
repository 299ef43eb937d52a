"""Every objective trains SD3.5 from the files ComfyUI users keep; the LoRA is the one diffusers and ComfyUI load.

The tiny SD3.5 of ``tests/tiny_sd3.py`` (MMDiT-layout diffusion model, clip_l, clip_g and t5xxl files, a VAE) at
64 px: the MMDiT names are exactly the inverse of diffusers' converter; 3 steps of each objective give finite
losses (dpo starts at ln 2); the conditioning equals ``StableDiffusion3Pipeline.encode_prompt``; the LoRA file
holds only ``transformer.…`` keys that diffusers' ``load_lora_adapter`` applies to give the trained model's
output; a missing or wrong companion file is refused naming the file; ComfyUI detects the tiny file as SD3.
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
from ..tiny import tiny_tokenizer
from ..tiny_sd3 import sd3_to_mmdit, tiny_sd3_diffusers_folder, tiny_sd3_files, tiny_sd3_inputs, tiny_sd3_transformer
from .objective_kit import region_pairs, region_singles

PAIRS = {"dpo", "patch-dpo", "face-guidance", "hg-dpo"}


def _tok(tmp: Path) -> str:
    return str(Path(tiny_tokenizer(tmp / "tok").name_or_path))  # the tiny CLIP's vocabulary


def sd3_config(tmp: Path, objective: str, *, medium: bool = False, **overrides):
    from vitruvian.trainers.config import TrainConfig

    files = tiny_sd3_files(medium=medium)
    maker = region_pairs if objective in PAIRS and objective != "hg-dpo" else region_singles
    values = dict(objective=objective, base=str(files["diffusion_model"]),
                  text_encoders=(str(files["clip_l"]), str(files["clip_g"]), str(files["t5xxl"])),
                  vae=str(files["vae"]), tokenizer=_tok(tmp), data=str(maker(tmp / "data", n=4)),
                  out=str(tmp / "out"), steps=3, batch_size=2, resolution=64, learning_rate=1e-3, rank=4, alpha=4,
                  checkpoint_every=100, log_every=1, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "progress.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ files and keys


@pytest.mark.parametrize("medium", [False, True])
def test_mmdit_names_are_the_exact_inverse_of_diffusers_converter(medium):
    from vitruvian.trainers.families.sd3_files import mmdit_to_diffusers, sd3_config as config_of, sd3_kind

    model = tiny_sd3_transformer(0, medium=medium)
    state = model.state_dict()
    mmdit = sd3_to_mmdit(state, model.config)
    assert "joint_blocks.1.context_block.attn.qkv.weight" in mmdit and "joint_blocks.1.context_block.mlp.fc1.weight" not in mmdit
    assert ("joint_blocks.0.x_block.attn2.qkv.weight" in mmdit) == medium
    back = mmdit_to_diffusers(mmdit)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    shapes = {k: tuple(v.shape) for k, v in mmdit.items()}
    assert sd3_kind(shapes) == ("sd35-medium" if medium else "sd35-large")
    assert sd3_kind({"model.diffusion_model." + k: s for k, s in shapes.items()}) == sd3_kind(shapes)
    ours = config_of(shapes)
    assert {k: ours[k] for k in ours} == {k: (tuple(v) if isinstance(v, list) else v)
                                          for k, v in model.config.items() if k in ours}


def test_unknown_tensors_and_sd3_medium_are_refused():
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.families.sd3_files import mmdit_to_diffusers, sd3_kind

    model = tiny_sd3_transformer(0)
    mmdit = sd3_to_mmdit(model.state_dict(), model.config)
    with pytest.raises(ConfigError, match=r"only MMDiT tensors, got 1 others \(e.g. \['joint_blocks.0.x_block.attn.extra"):
        mmdit_to_diffusers({**mmdit, "joint_blocks.0.x_block.attn.extra.weight": torch.zeros(1)})
    no_norm = {k: tuple(v.shape) for k, v in mmdit.items() if ".ln_" not in k}
    with pytest.raises(ConfigError, match=r"SD3.0 Medium"):
        sd3_kind(no_norm)


def test_clip_files_are_told_apart():
    from vitruvian.trainers.families.component_files import text_encoder_kind
    from vitruvian.trainers.model_detect import read_shapes

    files = tiny_sd3_files()
    assert [text_encoder_kind(read_shapes(files[n])) for n in ("clip_l", "clip_g", "t5xxl", "vae")] == [
        "clip_l", "clip_g", "t5", None]
    full_l = {"text_model.embeddings.token_embedding.weight": (49408, 768), "text_projection.weight": (768, 768)}
    full_g = {"text_model.embeddings.token_embedding.weight": (49408, 1280), "text_model.encoder.layers.30.mlp.fc1.weight": ()}
    clip_h = {"text_model.embeddings.token_embedding.weight": (49408, 1024), "text_model.encoder.layers.22.mlp.fc1.weight": ()}
    assert [text_encoder_kind(s) for s in (full_l, full_g, clip_h)] == ["clip_l", "clip_g", None]


def test_conditioning_is_the_pipelines(tmp_path):
    """Our prompt encoding = StableDiffusion3Pipeline.encode_prompt on the same modules (folder base: fp32)."""
    from vitruvian.trainers.models import encode_prompt, load_base

    base = load_base(tiny_sd3_diffusers_folder(), tokenizer=_tok(tmp_path))
    assert base.kind == "sd35-large" and base.family.name == "sd3"
    prompts = ["a photo of a cat", "a dog on a sofa, oil painting"]
    t2i, _ = base.family.pipelines(base)
    with torch.no_grad():
        ours = encode_prompt(base, prompts)
        embeds, _, pooled, _ = t2i.encode_prompt(prompts, prompts, prompts, do_classifier_free_guidance=False)
    assert ours["encoder_hidden_states"].shape == (2, 77 + 256, 64) and ours["pooled_projections"].shape == (2, 64)
    torch.testing.assert_close(ours["encoder_hidden_states"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(ours["pooled_projections"], pooled, rtol=0, atol=0)
    process = base.family.process(base.scheduler, None)
    assert (process.shift, process.timestep_scale, process.patch) == (3.0, 1000.0, 2)


def test_files_load_to_the_folders_model(tmp_path):
    """The MMDiT file (bf16) and the checkpoint with its own VAE load to the folder's modules."""
    from vitruvian.trainers.models import load_base

    files, tok = tiny_sd3_files(), _tok(tmp_path)
    folder = load_base(tiny_sd3_diffusers_folder(), tokenizer=tok)
    encoders = [files["t5xxl"], files["clip_g"], files["clip_l"]]  # any order
    ckpt = load_base(files["checkpoint"], tokenizer=tok, text_encoders=encoders)  # VAE from first_stage_model.*
    assert ckpt.kind == "sd35-large" and ckpt.vae.config.shift_factor == pytest.approx(0.0609)
    inputs = tiny_sd3_inputs(0, batch=2)
    with torch.no_grad():
        a, b = (m.unet(**inputs).sample for m in (ckpt, folder))
        for m in (ckpt, folder):
            m.vae.to(torch.float32)
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        za, zb = (m.family.encode_images(m, x) for m in (ckpt, folder))
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)  # bf16 file weights
    torch.testing.assert_close(za, zb)


# ------------------------------------------------------------------------------------------ training


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo", "mpd", "patch-dpo", "face-guidance"])
def test_every_objective_trains_sd3_from_comfyui_files(tmp_path, objective):
    from safetensors import safe_open

    from vitruvian.trainers import train

    res = train(sd3_config(tmp_path, objective, medium=objective == "mpd"))
    losses = _losses(tmp_path / "out")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    if objective == "dpo":
        assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 0
    with safe_open(str(res.lora_path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha"))
                        for k in keys)
    assert meta["vitruvian_lora_keys"] == "diffusers"
    assert meta["ss_base_model_version"] == ("sd35-medium" if objective == "mpd" else "sd35-large")
    if objective == "mpd":  # MMDiT-X: the image-only attention is trained too
        assert any(".attn2.to_q." in k for k in keys)


@pytest.mark.slow
def test_hg_dpo_curriculum_samples_sd3_pools(tmp_path):
    from vitruvian.trainers import train

    res = train(sd3_config(tmp_path, "hg-dpo", hg_pool_size=2, hg_sample_steps=2))
    assert res.steps == 9 and math.isfinite(res.final_loss) and res.lora_path.is_file()


@pytest.mark.slow
def test_diffusers_loads_the_lora_to_the_trained_output(tmp_path):
    """The final file through diffusers' own SD3 loading path (``lora_state_dict`` + ``load_lora_adapter``, what
    ``load_lora_weights`` does; alpha folded into B, no ``.alpha`` tensors it would refuse) = our peft model."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from vitruvian.trainers import train
    from vitruvian.trainers.families.sd3 import _call
    from vitruvian.trainers.lora_layers import add_lora
    from vitruvian.trainers.models import apply_lora_state, load_lora_state

    res = train(sd3_config(tmp_path, "sft", alpha=8))  # alpha ≠ rank: the scale must travel
    folder = tiny_sd3_diffusers_folder()
    ours = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer")
    add_lora(ours, rank=4, alpha=8, targets=("to_q", "to_k", "to_v", "to_out.0"))
    apply_lora_state(ours, load_lora_state(res.lora_path).unet)
    theirs = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer")
    state = StableDiffusion3Pipeline.lora_state_dict(str(res.lora_path))
    assert state and not [k for k in state if "lora" not in k]  # the check behind load_lora_weights' refusal
    theirs.load_lora_adapter(state, prefix="transformer", adapter_name="v")
    plain = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(1, 9, 64, generator=g), "pooled_projections": torch.randn(1, 64, generator=g)}
    t = torch.tensor([400.0])
    with torch.no_grad():
        a, b, base = (_call(m.eval(), x, t, cond) for m in (ours, theirs, plain))
    assert float((a - base).abs().max()) > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_medium_from_a_diffusers_folder(tmp_path):
    from vitruvian.trainers import train

    folder = tiny_sd3_diffusers_folder(medium=True)
    train(sd3_config(tmp_path, "dpo", base=str(folder), text_encoders=(), vae=""))
    assert _losses(tmp_path / "out")[0] == pytest.approx(math.log(2), abs=1e-6)


def test_missing_or_wrong_companions_are_named(tmp_path):
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.models import load_base

    files, tok = tiny_sd3_files(), _tok(tmp_path)
    encoders = [files["t5xxl"], files["clip_g"], files["clip_l"]]
    with pytest.raises(ConfigError, match=r"SD3.5 diffusion model without its text encoders, so it needs "
                                          r"text_encoders=<clip_l file>,<clip_g file>,<t5xxl file>.*models/vae/"):
        load_base(files["diffusion_model"], tokenizer=tok)
    with pytest.raises(ConfigError, match=r"needs text_encoders=<clip_l .*\(ComfyUI: models/text_encoders/\), got"):
        load_base(files["checkpoint"], tokenizer=tok)  # it has a VAE: only the text encoders are asked for
    with pytest.raises(ConfigError, match=r"got no clip_g in .*models/text_encoders/ \(clip_g.safetensors\)"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[files["clip_l"], files["t5xxl"]], vae=files["vae"])
    with pytest.raises(ConfigError, match=r"must hold one clip_l file"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[*encoders, files["clip_l"]], vae=files["vae"])
    with pytest.raises(ConfigError, match=r"vae must be an autoencoder file .*models/vae/"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=encoders, vae=files["t5xxl"])
    with pytest.raises(ConfigError, match=r"text_encoders must be clip_l and clip_g and t5 files"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[*encoders[:2], files["vae"]], vae=files["vae"])
    flux_t5 = Path(str(files["t5xxl"]).replace("tiny_sd3-v1", "tiny_flux-v1").replace("seed0-large", "seed0-dev"))
    if flux_t5.is_file():  # a T5 of the wrong width (Flux's tiny one) is named as not fitting
        with pytest.raises(ConfigError, match=r"must fit the SD3.5 model .*T5 width 32"):
            load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[*encoders[1:], flux_t5], vae=files["vae"])
    base = load_base(files["diffusion_model"], tokenizer=tok, text_encoders=encoders, vae=files["vae"])
    assert base.kind == "sd35-large" and not any(p.requires_grad for p in base.unet.parameters())


# ------------------------------------------------------------------------------------------ ComfyUI's view

_COMFY_SCRIPT = r"""
import json, sys
comfy_dir, io_path, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, comfy_dir)
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors.torch import load_file
import comfy.model_detection as md, comfy.utils

report = {"detected": []}
for path in paths:
    sd = load_file(path)
    sd = comfy.utils.state_dict_prefix_replace(sd, {md.unet_prefix_from_state_dict(sd): ""}, filter_keys=True) or sd
    config = md.detect_unet_config(sd, "")
    model_config = md.model_config_from_unet(sd, "")
    report["detected"].append({**{k: v for k, v in config.items() if not isinstance(v, torch.dtype)},
                               "model_config": type(model_config).__name__})
    model = model_config.get_model(sd, "")
    model.diffusion_model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model.diffusion_model.float()
io = load_file(io_path)
with torch.no_grad():  # ComfyUI's MMDiT at the depth it detected, on the tiny file's weights
    out = model.diffusion_model(io["hidden_states"], io["timestep"], context=io["encoder_hidden_states"],
                                y=io["pooled_projections"])
report["max_diff"] = float((out - io["expected"]).abs().max())
print("REPORT " + json.dumps(report))
"""


@pytest.mark.comfy
def test_comfyui_detects_sd3_and_its_mmdit_computes_ours(tmp_path):
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    from safetensors.torch import save_file

    files, medium = tiny_sd3_files(), tiny_sd3_files(medium=True)
    model = tiny_sd3_transformer(0, medium=True)
    with torch.no_grad():
        for param in [*model.parameters(), *model.buffers()]:  # the file is bf16, pos_embed (a buffer) included
            param.copy_(param.bfloat16().float())
        inputs = tiny_sd3_inputs(0, batch=2)
        io = {**inputs, "expected": model(**inputs).sample}
    save_file({k: v.contiguous() for k, v in io.items()}, str(tmp_path / "io.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), "-c", _COMFY_SCRIPT, str(comfy_dir), str(tmp_path / "io.safetensors"),
         str(files["checkpoint"]), str(medium["diffusion_model"])],
        cwd=str(comfy_dir), env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    large, med = report["detected"]
    for detected in (large, med):
        assert detected["model_config"] == "SD3"
        assert detected["depth"] == 2  # ComfyUI hard-codes 64-wide heads: depth = width / 64 = blocks = heads
        assert (detected["in_channels"], detected["patch_size"], detected["adm_in_channels"]) == (16, 2, 64)
        assert (detected["pos_embed_max_size"], detected["qk_norm"]) == (16, "rms")
    assert (large["x_block_self_attn_layers"], med["x_block_self_attn_layers"]) == ([], [0])
    assert report["max_diff"] < 1e-5  # ComfyUI's MMDiT-X computes what diffusers does
