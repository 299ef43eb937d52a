"""A pose adapter trained by ``vitruvian-train pose-adapter`` on the tiny checkpoint loads in the real ComfyUI
(``VitruvianLoadPoseAdapter`` → ``VitruvianApplyPoseGraph``) and changes what KSampler samples."""
from __future__ import annotations

import uuid

import pytest


@pytest.mark.comfy
@pytest.mark.slow
def test_trained_adapter_samples_in_comfyui(comfy_host, tiny_checkpoint, comfy_prefix, tmp_path):
    from PIL import Image

    from vitruvian.core.pose_adapter.io import load_pose_adapter
    from vitruvian.trainers import train
    from vitruvian.trainers.config import load_config

    from ..trainers.test_pose_adapter_train import make_pose_folder
    from .test_pose_adapter_nodes import _latent, _prompt

    tag = f"trained_{uuid.uuid4().hex[:8]}"
    data = make_pose_folder(tmp_path / "data", 2)
    result = train(load_config("pose-adapter", None, [
        f"base={tiny_checkpoint}", f"data={data}", f"out={tmp_path / 'out'}", f"name=tiny_pose_adapter_{tag}",
        "steps=2", "resolution=64", "batch_size=1", "learning_rate=1e-2", "proportion_empty_prompts=0.5",
        "mixed_precision=no", "log_every=1"]))
    assert result.output_kind == "pose adapter" and result.final_loss == result.final_loss  # finite, not NaN
    assert load_pose_adapter(result.lora_path).controlnet_mid_block.weight.abs().max() > 0
    comfy_host.place(result.lora_path, "vitruvian_pose_adapters")

    base = _latent(comfy_host, comfy_host.run_workflow(_prompt(adapters=(), prefix=comfy_prefix + "_base"),
                                                       timeout=300))
    outputs = comfy_host.run_workflow(_prompt(adapters=(tag,), prefix=comfy_prefix + "_pose"), timeout=300)
    posed = _latent(comfy_host, outputs)
    assert posed.shape == base.shape and (posed - base).abs().max() > 1e-4  # the trained residuals act
    (png,) = [f for f in comfy_host.output_files(outputs) if f.suffix == ".png"]
    with Image.open(png) as image:
        assert image.size == (64, 64)
