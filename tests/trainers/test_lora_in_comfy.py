"""A LoRA trained on our diffusers side loads in the real ComfyUI through LoraLoader, every key applied."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _with_lora(prompt: dict, lora_name: str) -> dict:
    """Insert CheckpointLoaderSimple → LoraLoader (model and clip) before the text encoders and KSampler."""
    prompt = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in prompt.items()}
    prompt["8"] = {
        "class_type": "LoraLoader",
        "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora_name, "strength_model": 1.0, "strength_clip": 1.0},
    }
    prompt["2"]["inputs"]["clip"] = ["8", 1]
    prompt["3"]["inputs"]["clip"] = ["8", 1]
    prompt["5"]["inputs"]["model"] = ["8", 0]
    return prompt


def _image(host, outputs) -> np.ndarray:
    from PIL import Image

    (path,) = host.output_files(outputs)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.comfy
@pytest.mark.slow
def test_lora_loads_in_comfyui(comfy_host, tiny_checkpoint, comfy_prefix, tmp_path):
    from vitruvian.trainers.models import add_lora, load_base, save_lora

    from ..tiny_checkpoint import txt2img_prompt

    base = load_base(tiny_checkpoint)  # the shallow SD1.5 UNet is sized from its weights
    add_lora(base.unet, rank=4, alpha=4.0, targets=TARGETS)
    add_lora(base.text_encoders[0], rank=4, alpha=4.0, targets=TE_TARGETS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a "trained" LoRA: non-zero B everywhere
        for model in (base.unet, base.text_encoders[0]):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    name = f"vitruvian_test_{uuid.uuid4().hex[:8]}.safetensors"
    path = save_lora(tmp_path / name, base.unet, text_encoder=base.text_encoders[0], base_kind="sd15", step=1)
    lora_name = comfy_host.place(path, "loras")

    plain = txt2img_prompt(tiny_checkpoint.name, seed=7, prefix=comfy_prefix + "_plain")
    with_lora = _with_lora(txt2img_prompt(tiny_checkpoint.name, seed=7, prefix=comfy_prefix + "_lora"), lora_name)
    log_start = len(comfy_host.log_text())
    image_plain = _image(comfy_host, comfy_host.run_workflow(plain))
    image_lora = _image(comfy_host, comfy_host.run_workflow(with_lora))
    log = comfy_host.log_text()[log_start:]

    not_loaded = [line for line in log.splitlines() if "lora key not loaded" in line]
    assert not_loaded == [], f"ComfyUI skipped {len(not_loaded)} LoRA keys, e.g. {not_loaded[:3]}"
    assert image_plain.shape == image_lora.shape == (64, 64, 3)
    assert np.abs(image_plain - image_lora).max() > 0, "the LoRA did not change ComfyUI's output"
