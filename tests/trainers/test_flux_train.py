"""Every objective trains Flux.1 from the files ComfyUI users keep; the LoRA is the one diffusers loads.

The tiny Flux.1 of ``tests/tiny_flux.py`` (BFL-layout diffusion model, clip_l and t5xxl files, ``ae``) at 64 px:
3 steps of each objective give finite losses (dpo starts at ln 2), HG-DPO's curriculum samples its pools with
FluxPipeline, a resumed run equals a straight one, the LoRA file holds only ``transformer.…`` keys that
diffusers' own Flux LoRA loader applies to give the trained model's output, and a missing or wrong companion
file is refused naming the file and where ComfyUI keeps the right one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ..tiny import tiny_tokenizer
from ..tiny_flux import tiny_flux_diffusers_folder, tiny_flux_files
from .objective_kit import region_pairs, region_singles

PAIRS = {"dpo", "patch-dpo", "face-guidance", "hg-dpo"}


def flux_config(tmp: Path, objective: str, *, guidance: bool = True, **overrides):
    from vitruvian.trainers.config import TrainConfig

    files = tiny_flux_files(guidance=guidance)
    tok = tiny_tokenizer(tmp / "tok")  # the tiny CLIP's vocabulary (the shipped one is CLIP-L's 49408)
    maker = region_pairs if objective in PAIRS and objective != "hg-dpo" else region_singles
    values = dict(objective=objective, base=str(files["diffusion_model"]), text_encoders=(str(files["clip_l"]), str(files["t5xxl"])),
                  vae=str(files["vae"]), tokenizer=str(Path(tok.name_or_path)), data=str(maker(tmp / "data", n=4)),
                  out=str(tmp / "out"), steps=3, batch_size=2, resolution=64, learning_rate=1e-3, rank=4, alpha=4,
                  checkpoint_every=100, log_every=1, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "progress.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo", "mpd", "patch-dpo", "face-guidance"])
def test_every_objective_trains_flux_from_comfyui_files(tmp_path, objective):
    from vitruvian.trainers import train

    res = train(flux_config(tmp_path, objective))
    losses = _losses(tmp_path / "out")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    if objective == "dpo":
        assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 0
    from safetensors import safe_open

    with safe_open(str(res.lora_path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha"))
                        for k in keys)
    assert meta["vitruvian_lora_keys"] == "diffusers" and meta["ss_base_model_version"] == "flux-dev"


@pytest.mark.slow
def test_hg_dpo_curriculum_samples_flux_pools(tmp_path):
    from vitruvian.trainers import train

    res = train(flux_config(tmp_path, "hg-dpo", hg_pool_size=2, hg_sample_steps=2))
    assert res.steps == 9 and math.isfinite(res.final_loss) and res.lora_path.is_file()
    from PIL import Image

    made = sorted((tmp_path / "out").rglob("pool/*/*.png"))  # generated, reconstructed (FluxImg2ImgPipeline)
    assert any(p.name == "recon.png" for p in made) and {Image.open(p).size for p in made} == {(64, 64)}


@pytest.mark.slow
def test_resume_equals_a_straight_run(tmp_path):
    from vitruvian.trainers import train

    train(flux_config(tmp_path / "a", "dpo", steps=4))
    train(flux_config(tmp_path / "b", "dpo", steps=2, checkpoint_every=2))
    train(flux_config(tmp_path / "b", "dpo", steps=4, checkpoint_every=2, resume="latest"))
    assert _losses(tmp_path / "b" / "out") == _losses(tmp_path / "a" / "out")


@pytest.mark.slow
def test_diffusers_loads_the_lora_to_the_trained_output(tmp_path):
    """The file through diffusers' Flux LoRA loader (alphas included) = our peft model, on the same input."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from vitruvian.trainers import train
    from vitruvian.trainers.families.flux import _call
    from vitruvian.trainers.models import apply_lora_state, load_lora_state
    from vitruvian.trainers.lora_layers import add_lora

    res = train(flux_config(tmp_path, "sft", alpha=8))  # alpha ≠ rank: the scale must travel
    folder = tiny_flux_diffusers_folder()
    ours = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    add_lora(ours, rank=4, alpha=8, targets=("to_q", "to_k", "to_v", "to_out.0"))
    apply_lora_state(ours, load_lora_state(res.lora_path).unet)
    theirs = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    state, alphas = FluxPipeline.lora_state_dict(str(res.lora_path), return_alphas=True)
    theirs.load_lora_adapter(state, network_alphas=alphas, prefix="transformer", adapter_name="v")
    plain = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(1, 7, 32, generator=g), "pooled_projections": torch.randn(1, 32, generator=g)}
    t = torch.tensor([0.4])
    with torch.no_grad():
        a, b, base = (_call(m.eval(), x, t, cond, guidance=1.0) for m in (ours, theirs, plain))
    assert float((a - base).abs().max()) > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_schnell_from_a_diffusers_folder(tmp_path):
    from vitruvian.trainers import train

    folder = tiny_flux_diffusers_folder(guidance=False)
    cfg = flux_config(tmp_path, "dpo", guidance=False, base=str(folder), text_encoders=(), vae="")
    train(cfg)
    assert _losses(tmp_path / "out")[0] == pytest.approx(math.log(2), abs=1e-6)


def test_missing_or_wrong_companions_are_named(tmp_path):
    from vitruvian.core.errors import ConfigError
    from vitruvian.trainers.models import load_base

    files = tiny_flux_files()
    tok = str(Path(tiny_tokenizer(tmp_path / "tok").name_or_path))
    with pytest.raises(ConfigError, match=r"Flux.1 diffusion model alone, so it needs text_encoders=.*models/vae/"):
        load_base(files["diffusion_model"], tokenizer=tok)
    with pytest.raises(ConfigError, match=r"got no t5 in .*models/text_encoders/ \(t5xxl_fp16.safetensors\)"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[files["clip_l"]], vae=files["vae"])
    with pytest.raises(ConfigError, match=r"vae must be an autoencoder file .*models/vae/"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[files["t5xxl"], files["clip_l"]],
                  vae=files["t5xxl"])
    with pytest.raises(ConfigError, match=r"text_encoders must be clip_l and t5 files .*got '.*ae.safetensors'"):
        load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[files["vae"]], vae=files["vae"])
    base = load_base(files["diffusion_model"], tokenizer=tok, text_encoders=[files["t5xxl"], files["clip_l"]],
                     vae=files["vae"])  # any order
    assert base.kind == "flux-dev" and base.family.name == "flux"
    assert not any(p.requires_grad for p in base.unet.parameters())


@pytest.mark.slow
def test_low_memory_stores_the_base_in_fp8(tmp_path):
    """low_memory: base weights float8 (up-cast per layer), gradient checkpointing on, LoRA fp32; it trains."""
    from vitruvian.trainers.loop import _step
    from vitruvian.trainers.objectives import get_objective
    from vitruvian.trainers.run import open_run

    cfg = flux_config(tmp_path, "dpo", low_memory=True)
    run = open_run(cfg, get_objective(cfg.objective, cfg))
    params = dict(run.raw_unet.named_parameters())
    frozen = {p.dtype for p in params.values() if not p.requires_grad}
    assert torch.float8_e4m3fn in frozen and {p.dtype for p in params.values() if p.requires_grad} == {torch.float32}
    big = [n for n, p in params.items() if not p.requires_grad and p.ndim == 2 and p.dtype == torch.float8_e4m3fn]
    assert any("to_q" in n for n in big) and run.raw_unet.is_gradient_checkpointing
    losses = []
    while run.step < 2:
        _step(run)
        losses.append(run.loss)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and all(math.isfinite(x) for x in losses)
