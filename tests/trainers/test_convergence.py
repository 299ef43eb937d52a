"""Toy convergence: DPO learns a visible preference and generalises it to pairs it never saw.

Winners are bright red above / dark below; losers dark blue above / bright below (same prompts, random
blobs on every image). The tiny model is the seeded random one, with one change: its VAE scaling
factor is set from the data so latents have unit variance, as SD's 0.18215 was chosen (the random
VAE's latents are ~0.2 wide, which would drown every image in the noise at all but the smallest t).

Held-out metric: the implicit reward of a pair is the DPO logit averaged over 16 (t, ε) draws; the
accuracy is the fraction of the 32 held-out pairs with a positive reward (0.5 at the start).
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from ..tiny import tiny_diffusers_folder
from .engine_kit import tiny_config


def write_pairs(root, n: int, start: int):
    """Pairs with a visible preference (see the module docstring)."""
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:64, 0:64] / 64

    def image(win: bool) -> np.ndarray:
        colour = np.array([0.85, 0.25, 0.2]) if win else np.array([0.1, 0.15, 0.45])
        bright = (yy < 0.5) if win else (yy >= 0.5)
        img = colour * np.where(bright, 1.0, 0.3)[..., None] + rng.normal(0, 0.03, (64, 64, 3))
        for _ in range(3):
            cx, cy, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.08, 0.2)]
            img += 0.25 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(-1, 1, 3)
        return (np.clip(img, 0, 1) * 255).astype(np.uint8)

    lines = []
    for i in range(start, start + n):
        Image.fromarray(image(True)).save(root / f"{i}_w.png")
        Image.fromarray(image(False)).save(root / f"{i}_l.png")
        lines.append(json.dumps({"prompt": "a photo of a person", "chosen": f"{i}_w.png", "rejected": f"{i}_l.png"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def unit_variance_base(tmp_path, data):
    """A copy of the tiny sd15 folder whose VAE scaling factor gives unit-variance latents on ``data``."""
    from vitruvian.trainers.data import collate, open_dataset
    from vitruvian.trainers.models import load_base

    folder = tmp_path / "base"
    shutil.copytree(tiny_diffusers_folder(), folder)
    base = load_base(folder)
    ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
    pixels = collate([ds[i] for i in range(8)])["pixels"].flatten(0, 1)
    with torch.no_grad():
        std = base.vae.encode(pixels).latent_dist.mean.std().item()
    cfg_path = folder / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["scaling_factor"] = 1.0 / std
    cfg_path.write_text(json.dumps(cfg))
    return folder


def heldout_accuracy(config, lora_path, data, draws: int = 16) -> float:
    from vitruvian.trainers.data import collate, open_dataset
    from vitruvian.trainers.latent_cache import BatchEncoder
    from vitruvian.trainers.models import add_lora, apply_lora_state, load_base, load_lora_state
    from vitruvian.trainers.objectives import DPO, ObjectiveContext

    base = load_base(config.base, tokenizer=config.tokenizer, text_encoders=config.text_encoders, vae=config.vae)
    if config.text_tokens and "t5_tokens" in base.configs:
        base.configs["t5_tokens"] = config.text_tokens  # as the run encoded its prompts
    unet = add_lora(base.unet, rank=config.rank, alpha=config.alpha, targets=config.lora_targets)
    if lora_path is not None:
        apply_lora_state(unet, load_lora_state(lora_path).unet)
    ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
    batch = BatchEncoder(base, device="cpu", cache=None)(collate([ds[i] for i in range(len(ds))]))
    ctx = ObjectiveContext(unet=unet, scheduler=base.scheduler, generator=torch.Generator().manual_seed(123),
                           process=base.family.process(base.scheduler, config))
    objective = DPO(beta=config.beta, convention=config.beta_convention)
    logits = []
    with torch.no_grad():
        for _ in range(draws):
            loss = objective(batch, ctx).per_sample.double()  # loss = softplus(-logit)
            logits.append(-torch.log(torch.expm1(loss)))
    reward = torch.stack(logits).mean(0)
    return (reward > 0).float().mean().item()


@pytest.mark.slow
def test_dpo_learns_a_visible_preference(tmp_path):
    from vitruvian.trainers import train

    data = write_pairs(tmp_path / "train", 32, start=0)
    held_out = write_pairs(tmp_path / "held_out", 32, start=1000)
    base = unit_variance_base(tmp_path, data)
    cfg = tiny_config(tmp_path, data, "dpo", base=str(base), steps=100, batch_size=8, learning_rate=1e-3,
                      checkpoint_every=1000, log_every=25, seed=0)
    before = heldout_accuracy(cfg, None, held_out)
    res = train(cfg)
    after = heldout_accuracy(cfg, res.lora_path, held_out)
    print(f"held-out implicit accuracy: {before:.3f} -> {after:.3f}; final train loss {res.final_loss:.3f}")
    assert before == 0.0  # LoRA B = 0: every logit is exactly 0, no pair is "won"
    assert after >= 0.8
    assert math.isfinite(res.final_loss)


def unit_variance_flux(tmp_path, data, tokenizer: str):
    """A copy of the tiny Flux.1 folder whose VAE shift and scale give zero-mean, unit-variance latents on ``data``."""
    from vitruvian.trainers.data import collate, open_dataset
    from vitruvian.trainers.models import load_base

    from ..tiny_flux import tiny_flux_diffusers_folder

    folder = tmp_path / "flux"
    shutil.copytree(tiny_flux_diffusers_folder(), folder)
    base = load_base(folder, tokenizer=tokenizer)
    ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
    pixels = collate([ds[i] for i in range(8)])["pixels"].flatten(0, 1)
    with torch.no_grad():
        z = base.vae.encode(pixels).latent_dist.mean
    cfg_path = folder / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["scaling_factor"], cfg["shift_factor"] = 1.0 / z.std().item(), z.mean().item()
    cfg_path.write_text(json.dumps(cfg))
    return folder


@pytest.mark.slow
def test_dpo_learns_a_visible_preference_on_flux(tmp_path):
    """The same toy on a flow-matching family (tiny Flux.1): rectified-flow errors, σ shared per pair, β = 5000
    in the official convention (docs/methods.md, "beta for flow models": the error is mean-reduced as in the
    UNet path, and this β is stable here)."""
    from pathlib import Path

    from vitruvian.trainers import train

    from ..tiny import tiny_tokenizer

    tok = str(Path(tiny_tokenizer(tmp_path / "tok").name_or_path))
    data = write_pairs(tmp_path / "train", 32, start=0)
    held_out = write_pairs(tmp_path / "held_out", 32, start=1000)
    base = unit_variance_flux(tmp_path, data, tok)
    cfg = tiny_config(tmp_path, data, "dpo", base=str(base), tokenizer=tok, steps=100, batch_size=8, text_tokens=16,
                      learning_rate=1e-3, checkpoint_every=1000, log_every=25, seed=0)
    before = heldout_accuracy(cfg, None, held_out)
    res = train(cfg)
    after = heldout_accuracy(cfg, res.lora_path, held_out)
    print(f"flux held-out implicit accuracy: {before:.3f} -> {after:.3f}; final train loss {res.final_loss:.3f}")
    assert before == 0.0 and after >= 0.8 and math.isfinite(res.final_loss)
