"""The shipped scorer-pairs workflow in a real ComfyUI with the tiny checkpoint: two real photos → faces from
their keypoints → crops (good) → the same crops inpainted at low quality inside the face mask (bad) → Collect
Pairs with pairing ``same_index`` → a pair folder that the ``train-scorer`` objective trains on. It runs with
the harness's rewrites (``prepare_workflow``: tiny checkpoint, 2 sampler steps) and 192 px crops instead of 384.

The expected crops are computed here again with ``core`` (photos, keypoints and crop settings read from the
workflow), so "chosen = the original crop pixels" is checked against an independent computation, not against
the workflow's own output.
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
import torch

from ..comfy_host import REPO_ROOT, WorkflowError
from .test_host import prepare_workflow

API = REPO_ROOT / "workflows" / "scorer_pairs.api.json"


def _node(prompt: dict, kind: str) -> tuple[str, dict]:
    (found,) = [(k, v["inputs"]) for k, v in prompt.items() if v["class_type"] == kind]
    return found


def _png(path) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1] of a stored RGB PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255


def _expected_crops(prompt: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The workflow's crops and soft face masks, computed with core: ``(N, 3, S, S)``, ``(N, 1, S, S)``."""
    from vitruvian.core.pose import load_pose
    from vitruvian.core.refine import RefineSettings, make_crops
    from vitruvian.core.regions import detect_regions

    batch = _node(prompt, "ImageBatch")[1]
    photos = [prompt[batch[key][0]]["inputs"]["image"] for key in ("image1", "image2")]
    image = torch.stack([_png(REPO_ROOT / "tests" / "data" / name) for name in photos])
    pose = load_pose(_node(prompt, "VitruvianLoadPose")[1]["json_text"], format="pose_keypoint").pose
    d = _node(prompt, "VitruvianDetectRegions")[1]
    regions, _ = detect_regions(image, pose=pose, labels=d["labels"].split(","), threshold=d["threshold"], iou=d["iou"],
                                max_per_image=d["max_per_image"], keypoint_confidence=d["keypoint_confidence"])
    c = _node(prompt, "VitruvianCropRegions")[1]
    settings = RefineSettings(labels=tuple(c["labels"].split(",")), context_factor=c["context_factor"],
                              target_size=c["target_size"], max_size=c["max_size"], min_size=c["min_size"],
                              mask_dilation=c["mask_dilation"], mask_feather=c["mask_feather"])
    crops, masks, _ = make_crops(image, regions, settings)
    return crops, masks


@pytest.fixture(scope="module")
def scorer_pairs(comfy_host, _tiny_checkpoint_path):
    """The shipped workflow, run once into a fresh dataset: ``(outputs, dataset folder, prompt)``."""
    prompt = prepare_workflow(json.loads(API.read_text(encoding="utf-8")), comfy_host, _tiny_checkpoint_path)
    dataset = f"vitruvian/test_scorer_pairs_{uuid.uuid4().hex[:8]}"
    _node(prompt, "VitruvianCollectPairs")[1]["dataset"] = dataset
    # 192 px crops instead of 384 (the faces are about 105 px, so both are still cropped): half the CPU time
    _node(prompt, "VitruvianCropRegions")[1].update(target_size=128, max_size=192)
    outputs = comfy_host.run_workflow(prompt, timeout=600)
    return outputs, comfy_host.folders["output"] / dataset, prompt


@pytest.mark.comfy
@pytest.mark.slow
def test_workflow_writes_real_vs_inpainted_crop_pairs(scorer_pairs):
    from vitruvian.trainers.data import validate_dataset

    outputs, folder, prompt = scorer_pairs
    crops, masks = _expected_crops(prompt)
    assert crops.shape[0] == 2, "one face per photo"
    pairs_node = _node(prompt, "VitruvianCollectPairs")[0]
    report = outputs[pairs_node]["text"][0]
    assert report.startswith("2 pair(s) added, 0 duplicate(s) skipped; 2 in"), report
    assert report.splitlines()[1:] == ["real 0 > image 0", "real 1 > image 1"], report
    records = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["chosen_source"]) for r in records] == [("A face.", "real")] * 2
    assert len(validate_dataset(folder)) == 2
    inside = masks[:, 0] > 0.5
    outside = masks[:, 0] == 0
    for i, record in enumerate(records):
        chosen, rejected = _png(folder / record["chosen"]), _png(folder / record["rejected"])
        assert chosen.shape == rejected.shape == crops[i].shape
        # the good half is the original crop (8-bit; the host's torch may resample a hair differently)
        assert (chosen - crops[i]).abs().max() <= 1.5 / 255
        # the bad half: the face is re-generated, everything outside the soft face mask is the crop unchanged
        assert (rejected - chosen).abs()[:, inside[i]].mean() > 0.05
        assert (rejected - chosen).abs()[:, outside[i]].max() <= 1 / 255


@pytest.mark.comfy
@pytest.mark.slow
def test_train_scorer_trains_on_the_pairs(scorer_pairs, tmp_path, _tiny_checkpoint_path):
    """``vitruvian-train train-scorer`` (its Python API) on the workflow's folder: 2 steps of the tiny scorer."""
    from vitruvian.trainers import train
    from vitruvian.trainers.config import load_config

    _, folder, _ = scorer_pairs
    config = load_config("train-scorer", REPO_ROOT / "trainers" / "configs" / "train-scorer.toml", [
        f"base={_tiny_checkpoint_path}", f"data={folder}", f"out={tmp_path / 'out'}", "steps=2", "batch_size=2",
        "resolution=64", "learning_rate=1e-3", "log_every=1"])
    result = train(config)
    assert result.steps == 2 and math.isfinite(result.final_loss)
    assert 0.0 <= result.metrics["pair_acc"] <= 1.0
    assert result.lora_path.name == "vitruvian-scorer.safetensors" and result.lora_path.stat().st_size > 0


@pytest.mark.comfy
def test_collect_pairs_same_index_errors(comfy_host):
    for photo in ("astronaut.png", "camera.png"):
        comfy_host.place(REPO_ROOT / "tests" / "data" / photo, "input", photo)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "camera.png"}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "VitruvianCollectPairs", "inputs": {
            "image": ["3", 0], "score": "sharpness", "prompt": "A face.", "dataset": "vitruvian/test_never_written",
            "aggregate": "mean", "labels": "", "pairing": "same_index", "max_pairs": 0, "min_margin": 0.0,
            "higher_is_better": True}},
    }
    with pytest.raises(WorkflowError, match="pairing same_index pairs real image i with image i, got no real_images"):
        comfy_host.run_workflow(prompt)
    prompt["4"]["inputs"]["real_images"] = ["1", 0]
    with pytest.raises(WorkflowError, match=r"real_images must hold one image per image \(2\) for pairing same_index"):
        comfy_host.run_workflow(prompt)
    prompt["4"]["inputs"].update(real_images=["3", 0], pairing="extremes")
    with pytest.raises(WorkflowError, match="regions must be the scored regions of image .* for pairing 'extremes', "
                                            "got none; connect them, or use pairing same_index"):
        comfy_host.run_workflow(prompt)
    assert not (comfy_host.folders["output"] / "vitruvian" / "test_never_written").exists()
