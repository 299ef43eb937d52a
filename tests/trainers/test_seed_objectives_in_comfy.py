"""Each seed objective's LoRA (trained on the tiny checkpoint's UNet) loads in the real ComfyUI, every key applied.

The LoRAs are trained by the objectives directly (2 AdamW steps on synthetic latents of the checkpoint's
shape) rather than through ``train()``: the loop's latent cache cannot encode with the tiny
checkpoint's TAESD VAE yet (reported to the engine owner). hg-dpo's file is the combination of two
stage LoRAs (``combine_lora_files``), as its runner writes it.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest
import torch

from .objective_kit import FACE, HAND
from .test_lora_in_comfy import _image, _with_lora

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def train_lora(base, objective, path, seed=0):
    from vitruvian.core.lora_io import save_lora
    from vitruvian.trainers.lora_layers import add_lora, merge_lora
    from vitruvian.trainers.objectives import OBJECTIVES, ObjectiveContext

    from accelerate import Accelerator

    torch.manual_seed(seed)
    unet = add_lora(base.unet, rank=4, alpha=4.0, targets=TARGETS)
    obj = OBJECTIVES[objective](None)
    if objective in ("mpd", "face-guidance"):
        obj = dataclasses.replace(obj, resolution=64)
    pair = obj.images_per_sample == 2
    g = torch.Generator().manual_seed(seed)
    n = 2 if pair else 1
    batch = {"latents": torch.randn(1, n, 4, 8, 8, generator=g),
             "cond": {"encoder_hidden_states": torch.randn(1, 77, base.unet.config.cross_attention_dim, generator=g)},
             "face_boxes": [[torch.tensor([FACE])] * n], "hand_boxes": [[torch.tensor([HAND])] * n],
             "quality": torch.ones(1, n, 1, 64, 64)}
    batch["quality"][:, -1, :, 8:32, 8:32] = 0.0
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    ctx = ObjectiveContext(unet=unet, scheduler=base.scheduler, generator=torch.Generator().manual_seed(seed))
    for step in range(2):
        out = obj(batch, ctx)
        if hasattr(obj, "backward"):
            obj.backward(out, params, Accelerator(cpu=True), step=step)
        else:
            out.loss.backward()
        opt.step()
        opt.zero_grad()
    save_lora(path, unet, config={"lora_targets": list(TARGETS), "objective": objective}, base_kind="sd15")
    merge_lora(unet)  # leave base.unet plain for the next stage
    return path


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["patch-dpo", "mpd", "face-guidance", "hg-dpo"])
def test_lora_loads_in_comfyui(objective, comfy_host, tiny_checkpoint, comfy_prefix, tmp_path):
    from vitruvian.trainers.recipes.hg_dpo import combine_lora_files
    from vitruvian.trainers.models import load_base

    from ..tiny_checkpoint import txt2img_prompt

    base = load_base(tiny_checkpoint)
    name = f"vitruvian_{objective}_{uuid.uuid4().hex[:8]}.safetensors"
    if objective == "hg-dpo":
        stages = [train_lora(base, "hg-dpo-stage", tmp_path / f"s{i}.safetensors", seed=i) for i in range(2)]
        path = combine_lora_files(stages, tmp_path / name)
    else:
        path = train_lora(base, objective, tmp_path / name)
    lora_name = comfy_host.place(path, "loras")

    log_start = len(comfy_host.log_text())
    plain = _image(comfy_host, comfy_host.run_workflow(
        txt2img_prompt(tiny_checkpoint.name, seed=7, prefix=f"{comfy_prefix}_{objective}_plain")))
    with_lora = _image(comfy_host, comfy_host.run_workflow(_with_lora(
        txt2img_prompt(tiny_checkpoint.name, seed=7, prefix=f"{comfy_prefix}_{objective}_lora"), lora_name)))
    log = comfy_host.log_text()[log_start:]
    not_loaded = [line for line in log.splitlines() if "lora key not loaded" in line]
    assert not_loaded == [], f"ComfyUI skipped {len(not_loaded)} LoRA keys, e.g. {not_loaded[:3]}"
    assert plain.shape == with_lora.shape
    assert (plain != with_lora).any(), f"the {objective} LoRA did not change ComfyUI's output"
