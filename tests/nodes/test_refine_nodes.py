"""The refinement nodes in a real ComfyUI with the tiny SD1.5 checkpoint, plus checks on the shipped workflow.

A batch of three real photos at 128 × 128 (astronaut, camera, the astronaut flipped) with faces and hands from
their MediaPipe keypoints (VitruvianLoadPose → VitruvianDetectRegions). Pixels outside the changed-pixels mask
must come out bit-identical: both the input batch and the result go through the same SaveImage, and the mask
goes through ThresholdMask(0) so that any non-zero weight shows. Host tests are marked ``comfy`` (skip without a
host) and ``slow`` (each prompt samples several crops on the CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ..comfy_host import REPO_ROOT, WorkflowError

API = REPO_ROOT / "workflows" / "refine_regions.api.json"
UI = REPO_ROOT / "example_workflows" / "refine_regions.json"
DATA = REPO_ROOT / "tests" / "data"
SIZE = 128
PHOTOS = (("vitruvian_refine_astronaut.png", "astronaut.png", False),
          ("vitruvian_refine_camera.png", "camera.png", False),
          ("vitruvian_refine_flipped.png", "astronaut.png", True))

#: Small, fast settings for the CPU: 96 × 96 crops, 2 steps.
FAST = {"seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6,
        "labels": "face,hand", "context_factor": 1.5, "target_size": 64, "max_size": 128, "min_size": 8,
        "mask_dilation": 2, "mask_feather": 3, "score_name": "", "refine_if_score_below": 0.0,
        "differential_diffusion": True, "variants": 1, "pick": "sharpness", "region_prompt": ""}


def _api() -> dict:
    return json.loads(API.read_text(encoding="utf-8"))


def _pose_frames() -> str:
    det = json.loads((DATA / "detections.json").read_text())["images"]
    astronaut, camera = det["astronaut.png"]["pose_33"], det["camera.png"]["pose_33"]
    return json.dumps([{"pose_33": astronaut, "size": [512, 512]}, {"pose_33": camera, "size": [512, 512]},
                       {"pose_33": [[512 - x, y, v] for x, y, v in astronaut], "size": [512, 512]}])


@pytest.fixture(scope="module")
def photos(comfy_host, tmp_path_factory) -> list[str]:
    """The three 128 × 128 photos in the host's input folder; their names."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("refine_inputs")
    names = []
    for name, source, flip in PHOTOS:
        with Image.open(DATA / source) as image:
            image = image.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
            if flip:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            image.save(folder / name)
        names.append(comfy_host.place(folder / name, "input"))
    return names


def _graph(ckpt: str, photos: list[str], prefix: str, *, refine: dict | None = None, regions=True, mask=None) -> dict:
    """Checkpoint + prompts + the photo batch + keypoint regions + Refine Regions + outputs to compare."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a detailed face, sharp"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "10": {"class_type": "LoadImage", "inputs": {"image": photos[0]}},
        "11": {"class_type": "LoadImage", "inputs": {"image": photos[1]}},
        "12": {"class_type": "LoadImage", "inputs": {"image": photos[2]}},
        "13": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "14": {"class_type": "ImageBatch", "inputs": {"image1": ["13", 0], "image2": ["12", 0]}},
        "20": {"class_type": "VitruvianLoadPose", "inputs": {"json_text": _pose_frames(), "file": "none",
                                                             "format": "mediapipe33", "canvas_width": SIZE,
                                                             "canvas_height": SIZE}},
        "21": {"class_type": "VitruvianDetectRegions", "inputs": {
            "image": ["14", 0], "pose": ["20", 0], "detector": "none", "labels": "face,hand,person", "threshold": 0.5,
            "iou": 0.45, "max_per_image": 20, "keypoint_confidence": 0.3}},
        "30": {"class_type": "VitruvianRefineRegions", "inputs": {
            "image": ["14", 0], "model": ["1", 0], "vae": ["1", 2], "positive": ["2", 0], "negative": ["3", 0],
            **FAST, **(refine or {})}},
        "40": {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": f"{prefix}_out"}},
        "41": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": f"{prefix}_in"}},
        "42": {"class_type": "ThresholdMask", "inputs": {"mask": ["30", 3], "value": 0.0}},
        "43": {"class_type": "MaskToImage", "inputs": {"mask": ["42", 0]}},
        "44": {"class_type": "SaveImage", "inputs": {"images": ["43", 0], "filename_prefix": f"{prefix}_mask"}},
        "45": {"class_type": "PreviewAny", "inputs": {"source": ["30", 2]}},
    }
    if regions:
        prompt["30"]["inputs"]["regions"] = ["21", 0]
    if mask is not None:
        prompt["30"]["inputs"]["mask"] = mask
    return prompt


def _arrays(host, outputs: dict, node: str) -> list[np.ndarray]:
    from PIL import Image

    arrays = []
    for path in host.output_files({node: outputs[node]}):
        with Image.open(path) as image:
            arrays.append(np.array(image.convert("RGB")))
    return arrays


def _check_outside_unchanged(host, outputs: dict) -> tuple[list, list, list]:
    out, original, masks = _arrays(host, outputs, "40"), _arrays(host, outputs, "41"), _arrays(host, outputs, "44")
    assert len(out) == len(original) == len(masks) == 3
    for b, (o, i, m) in enumerate(zip(out, original, masks)):
        outside = m[..., 0] == 0
        assert outside.any(), f"image {b}: the mask covers everything"
        assert np.array_equal(o[outside], i[outside]), f"image {b}: pixels outside the mask changed"
    return out, original, masks


@pytest.fixture(scope="module")
def batch_run(comfy_host, _tiny_checkpoint_path, photos):
    """One prompt on the batch of three, two variants per region picked by sharpness."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    prompt = _graph(ckpt, photos, "refine_batch/img", refine={"variants": 2, "pick": "sharpness"})
    outputs = comfy_host.run_workflow(prompt, timeout=900)
    return outputs, json.loads(outputs["45"]["text"][0])


# ------------------------------------------------------------------------------ the batch, in ComfyUI


@pytest.mark.comfy
@pytest.mark.slow
def test_smoke_batch_every_region(batch_run):
    outputs, report = batch_run
    assert report["images"] == 3 and report["counts"] == {"refined": 5, "skipped": 3, "failed": 0}
    regions = report["regions"]
    # Detect Regions orders each image's regions by score; every one of them is in the report, in that order.
    assert sorted((r["image"], r["label"], r["status"]) for r in regions) == [
        (0, "face", "refined"), (0, "person", "skipped"),
        (1, "face", "refined"), (1, "hand", "refined"), (1, "hand", "refined"), (1, "person", "skipped"),
        (2, "face", "refined"), (2, "person", "skipped"),
    ]
    assert [r["index"] for r in regions] == list(range(8)) and [r["image"] for r in regions] == sorted(r["image"] for r in regions)
    assert all(r.get("seed") == 7 + r["index"] for r in regions if r["status"] == "refined")  # seed + global index
    for r in regions:
        if r["status"] == "skipped":
            assert r["reason"] == "label 'person' is not in labels (face, hand)"
        else:
            assert {"encode", "sample", "decode", "crop", "paste", "seam"} <= set(r["seconds"])
            assert set(r["seam"]) == {"colour_before", "colour_after", "gradient_before", "gradient_after"}
    text = outputs["30"]["text"][0]
    assert text.startswith("3 images, 8 regions: 5 refined, 3 skipped, 0 failed")
    assert "image 0 person #" in text and "skipped (label 'person' is not in labels (face, hand))" in text


@pytest.mark.comfy
@pytest.mark.slow
def test_value_outside_mask_bit_identical(comfy_host, batch_run):
    outputs, _ = batch_run
    out, original, masks = _check_outside_unchanged(comfy_host, outputs)
    for o, i, m in zip(out, original, masks):
        inside = m[..., 0] > 0
        assert inside.any() and not np.array_equal(o[inside], i[inside])


@pytest.mark.comfy
@pytest.mark.slow
def test_value_variants_pick_best(batch_run):
    _, report = batch_run
    refined = [r for r in report["regions"] if r["status"] == "refined"]
    for r in refined:
        assert r["variants"] == 2 and r["pick"] == "sharpness" and len(r["variant_scores"]) == 2
        assert r["chosen"] == int(np.argmax(r["variant_scores"]))
    # Two noises per region really gave two different samples.
    assert all(r["variant_scores"][0] != r["variant_scores"][1] for r in refined)


@pytest.mark.comfy
@pytest.mark.slow
def test_value_mask_input(comfy_host, _tiny_checkpoint_path, photos):
    """A MASK instead of regions: one region per blob; a 1-pixel blob is reported as too small."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    prompt = _graph(ckpt, photos, "refine_mask/img", regions=False, mask=["53", 0], refine={"labels": "face"})
    prompt.update({
        "50": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}},
        "51": {"class_type": "SolidMask", "inputs": {"value": 0.8, "width": 40, "height": 32}},
        "52": {"class_type": "MaskComposite", "inputs": {"destination": ["50", 0], "source": ["51", 0], "x": 44,
                                                        "y": 20, "operation": "add"}},
        "54": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 1, "height": 1}},
        "53": {"class_type": "MaskComposite", "inputs": {"destination": ["52", 0], "source": ["54", 0], "x": 4,
                                                        "y": 120, "operation": "add"}},
    })
    outputs = comfy_host.run_workflow(prompt, timeout=900)
    report = json.loads(outputs["45"]["text"][0])
    assert report["counts"] == {"refined": 3, "skipped": 3, "failed": 0}  # one blob per image (mask broadcast)
    assert {r["label"] for r in report["regions"]} == {"mask"}  # labels= is ignored for a mask
    assert [r["box"] for r in report["regions"][:2]] == [[4.0, 120.0, 5.0, 121.0], [44.0, 20.0, 84.0, 52.0]]
    assert report["regions"][0]["reason"] == "too small: 1×1 px, the shorter side is below min_size 8"
    assert "regions from the mask: 6 blob(s), labelled 'mask'" in report["notes"]
    _, _, masks = _check_outside_unchanged(comfy_host, outputs)
    # The blob starts at x = 44; grown by 2 and feathered by 3 pixels, nothing is pasted left of x = 36.
    assert all(m[:, :36, 0].max() == 0 and m[20:52, 44:84, 0].min() > 0 for m in masks)


@pytest.mark.comfy
@pytest.mark.slow
def test_value_region_prompt(comfy_host, _tiny_checkpoint_path, photos):
    """region_prompt (through CLIP) replaces positive for its label: same seed, different pixels."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    results = []
    for k, text in enumerate(("", "face: a portrait with freckles")):
        prompt = _graph(ckpt, photos, f"refine_prompt{k}/img", refine={"labels": "face", "region_prompt": text})
        prompt["30"]["inputs"]["clip"] = ["1", 1]
        outputs = comfy_host.run_workflow(prompt, timeout=900)
        assert json.loads(outputs["45"]["text"][0])["counts"]["refined"] == 3
        results.append(_arrays(comfy_host, outputs, "40"))
    assert all(not np.array_equal(a, b) for a, b in zip(*results))


@pytest.mark.comfy
@pytest.mark.slow
def test_value_conditioning_area_cut_to_crops(comfy_host, _tiny_checkpoint_path, photos):
    """A positive set to the left 64 pixels (ConditioningSetArea): regions whose crop reaches it are refined
    with the area cut to the crop; the others fail with the reason instead of being sampled unconditioned."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    prompt = _graph(ckpt, photos, "refine_area/img")
    prompt["4"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["2", 0], "width": 64,
                                                                  "height": SIZE, "x": 0, "y": 0, "strength": 1.0}}
    prompt["30"]["inputs"]["positive"] = ["4", 0]
    outputs = comfy_host.run_workflow(prompt, timeout=900)
    report = json.loads(outputs["45"]["text"][0])
    tried = [r for r in report["regions"] if r["label"] != "person"]
    assert {r["status"] for r in tried} == {"refined", "failed"}
    for r in tried:
        reaches = r["crop"]["rect"][0] < 64
        assert r["status"] == ("refined" if reaches else "failed"), r
        if not reaches:
            assert r["reason"].startswith("no positive conditioning covers this region")
    _check_outside_unchanged(comfy_host, outputs)


@pytest.mark.comfy
@pytest.mark.slow
def test_value_split_form(comfy_host, _tiny_checkpoint_path, photos):
    """Crop Regions → VAEEncode → SetLatentNoiseMask → KSampler → VAEDecode → Paste Regions."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    prompt = _graph(ckpt, photos, "refine_split/img")
    geometry = {k: FAST[k] for k in ("labels", "context_factor", "target_size", "max_size", "min_size",
                                     "mask_dilation", "mask_feather", "score_name", "refine_if_score_below")}
    prompt.update({
        "30": {"class_type": "VitruvianCropRegions", "inputs": {"image": ["14", 0], "regions": ["21", 0], **geometry}},
        "31": {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["1", 2]}},
        "32": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["31", 0], "mask": ["30", 1]}},
        "33": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                    "sampler_name": "euler", "scheduler": "normal",
                                                    "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["32", 0], "denoise": 0.6}},
        "34": {"class_type": "VAEDecode", "inputs": {"samples": ["33", 0], "vae": ["1", 2]}},
        "35": {"class_type": "VitruvianPasteRegions", "inputs": {"image": ["14", 0], "refined_crops": ["34", 0],
                                                                "crop_geometry": ["30", 2]}},
    })
    prompt["40"]["inputs"]["images"] = ["35", 0]
    prompt["42"]["inputs"]["mask"] = ["35", 3]
    prompt["45"]["inputs"]["source"] = ["35", 2]
    outputs = comfy_host.run_workflow(prompt, timeout=900)
    report = json.loads(outputs["45"]["text"][0])
    assert report["counts"] == {"refined": 5, "skipped": 3, "failed": 0}
    assert outputs["30"]["text"][0].startswith("5 crops of 96×96 from 3 image(s); 3 region(s) skipped")
    _check_outside_unchanged(comfy_host, outputs)


# ------------------------------------------------------------------------------ bad inputs → node errors


def _error(host, prompt, node_type="VitruvianRefineRegions") -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        host.run_workflow(prompt, timeout=300)
    assert caught.value.node_type == node_type, str(caught.value)
    return caught.value


@pytest.mark.comfy
def test_exception_regions_of_another_size(comfy_host, _tiny_checkpoint_path, photos):
    """Regions found on the 128 px batch, refined on a 64 px copy: their boxes would lie outside the image."""
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err1/img")
    prompt["15"] = {"class_type": "ImageScale", "inputs": {"image": ["14", 0], "upscale_method": "bilinear",
                                                           "width": 64, "height": 64, "crop": "disabled"}}
    prompt["30"]["inputs"]["image"] = ["15", 0]
    error = _error(comfy_host, prompt)
    assert "regions of image 0 were found on a 128×128 image, but the image is 64×64" in error.message
    assert "detect the regions on this same IMAGE" in error.message


@pytest.mark.comfy
def test_exception_batch_mismatch(comfy_host, _tiny_checkpoint_path, photos):
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err2/img")
    prompt["30"]["inputs"]["image"] = ["10", 0]
    error = _error(comfy_host, prompt)
    assert "regions must describe the 1 image(s) of the batch, got regions for 3 image(s)" in error.message


@pytest.mark.comfy
def test_exception_mask_of_the_wrong_size(comfy_host, _tiny_checkpoint_path, photos):
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err3/img",
                    regions=False, mask=["50", 0])
    prompt["50"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 48}}
    error = _error(comfy_host, prompt)
    assert "VitruvianRefineRegions: mask must have the image's size 128×128, got 64×48" in error.message


@pytest.mark.comfy
def test_exception_regions_and_mask(comfy_host, _tiny_checkpoint_path, photos):
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    both = _graph(ckpt, photos, "refine_err4/img", mask=["21", 1])
    assert "connect regions or mask, not both" in _error(comfy_host, both).message
    neither = _graph(ckpt, photos, "refine_err5/img", regions=False)
    assert "nothing to refine; connect regions (Detect Regions) or a mask" in _error(comfy_host, neither).message


@pytest.mark.comfy
def test_exception_settings_checked_before_running(comfy_host, _tiny_checkpoint_path, photos):
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err6/img",
                    refine={"target_size": 512, "max_size": 256})
    del prompt["41"]  # an output that does not depend on the node would still run (and the prompt be accepted)
    error = _error(comfy_host, prompt)
    assert "max_size must be ≥ target_size, got max_size 256 < target_size 512" in error.message
    assert error.traceback == ""  # rejected at validation, nothing ran


@pytest.mark.comfy
def test_exception_region_prompt_needs_clip(comfy_host, _tiny_checkpoint_path, photos):
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err7/img",
                    refine={"region_prompt": "face: a face"})
    assert "region_prompt needs a CLIP to encode it" in _error(comfy_host, prompt).message


def _crop_paste_graph(comfy_host, checkpoint, photos, name: str, between: dict) -> dict:
    """Crop Regions → ``between`` (node "31", reading the crops) → Paste Regions → SaveImage, on the photos."""
    prompt = _graph(comfy_host.place(checkpoint, "checkpoints"), photos, f"{name}/img")
    geometry = {k: FAST[k] for k in ("labels", "context_factor", "target_size", "max_size", "min_size",
                                     "mask_dilation", "mask_feather", "score_name", "refine_if_score_below")}
    prompt["30"] = {"class_type": "VitruvianCropRegions", "inputs": {"image": ["14", 0], "regions": ["21", 0],
                                                                     **geometry}}
    prompt["31"] = between
    prompt["35"] = {"class_type": "VitruvianPasteRegions", "inputs": {"image": ["14", 0], "refined_crops": ["31", 0],
                                                                      "crop_geometry": ["30", 2]}}
    for key in ("40", "42", "43", "44", "45"):
        del prompt[key]
    prompt["40"] = {"class_type": "SaveImage", "inputs": {"images": ["35", 0], "filename_prefix": f"{name}/out"}}
    return prompt


@pytest.mark.comfy
def test_exception_paste_wrong_crop_count(comfy_host, _tiny_checkpoint_path, photos):
    prompt = _crop_paste_graph(comfy_host, _tiny_checkpoint_path, photos, "refine_err8", {
        "class_type": "ImageFromBatch", "inputs": {"image": ["30", 0], "batch_index": 0, "length": 2}})
    error = _error(comfy_host, prompt, "VitruvianPasteRegions")
    assert "refined crops must be the 5 crops of Crop Regions, in order, got 2 images" in error.message


@pytest.mark.comfy
def test_exception_huge_region_prompt(comfy_host, _tiny_checkpoint_path, photos):
    """A 1 MB region_prompt (found by the fuzz test) was 125,000 CLIP tokens per region: a queue that seemed to hang."""
    prompt = _graph(comfy_host.place(_tiny_checkpoint_path, "checkpoints"), photos, "refine_err13/img",
                    refine={"region_prompt": "a" * 1_000_000})
    prompt["30"]["inputs"]["clip"] = ["1", 1]
    error = _error(comfy_host, prompt)
    assert ("VitruvianRefineRegions: input 'region_prompt': a prompt of at most 10000 characters is expected, got "
            "1000000") in error.message


@pytest.mark.comfy
def test_exception_paste_resized_crops(comfy_host, _tiny_checkpoint_path, photos):
    """Crops scaled on the way (an upscaler, a VAE cropping to its multiple) are refused, never stretched back."""
    prompt = _crop_paste_graph(comfy_host, _tiny_checkpoint_path, photos, "refine_err9", {
        "class_type": "ImageScale", "inputs": {"image": ["30", 0], "upscale_method": "bilinear", "width": 128,
                                               "height": 128, "crop": "disabled"}})
    error = _error(comfy_host, prompt, "VitruvianPasteRegions")
    assert ("VitruvianPasteRegions: input 'refined_crops': refined crops must be 96×96 pixels, the size Crop Regions "
            "cut, got 128×128; scale them back to 96×96") in error.message


@pytest.mark.comfy
def test_exception_labels_and_score_name_the_regions_cannot_carry(comfy_host, _tiny_checkpoint_path, photos):
    """A typo in labels refined nothing, an unknown score_name refined everything "without the gate": both are
    node errors now, before any sampling."""
    ckpt = comfy_host.place(_tiny_checkpoint_path, "checkpoints")
    error = _error(comfy_host, _graph(ckpt, photos, "refine_err10/img", refine={"labels": "face,fcae"}))
    assert "VitruvianRefineRegions: input 'labels': a label the regions carry (or that their detection looked for) " \
           "is expected, got an unknown label fcae; the regions carry face, hand, person" in error.message
    error = _error(comfy_host, _graph(ckpt, photos, "refine_err11/img", refine={"score_name": "sharpness"}))
    assert "input 'score_name': a score name the regions carry is expected, got an unknown score sharpness; the " \
           "regions carry no scores" in error.message
    crop = {k: FAST[k] for k in ("labels", "context_factor", "target_size", "max_size", "min_size", "mask_dilation",
                                 "mask_feather", "score_name", "refine_if_score_below")}
    base = _graph(ckpt, photos, "refine_err12/img")
    prompt = {key: base[key] for key in ("10", "11", "12", "13", "14", "20", "21")}
    prompt["30"] = {"class_type": "VitruvianCropRegions", "inputs": {"image": ["14", 0], "regions": ["21", 0],
                                                                     **crop, "labels": "hands"}}
    prompt["31"] = {"class_type": "PreviewImage", "inputs": {"images": ["30", 0]}}
    error = _error(comfy_host, prompt, "VitruvianCropRegions")
    assert "input 'labels'" in error.message and "got an unknown label hands" in error.message


# ------------------------------------------------------------------------------ the shipped workflow


def test_value_workflow_uses_the_real_astronaut_detection():
    prompt = _api()
    assert prompt["4"]["inputs"]["image"] == "astronaut.png"
    detect = json.loads((REPO_ROOT / "workflows" / "detect_regions.api.json").read_text())
    assert prompt["5"]["inputs"] == detect["2"]["inputs"]
    refine = prompt["7"]
    assert refine["class_type"] == "VitruvianRefineRegions" and refine["inputs"]["regions"] == ["6", 0]


def test_value_ui_workflow_matches_api():
    """Same nodes, same links, and widget values in each node's widget order."""
    api, ui = _api(), json.loads(UI.read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: n["class_type"] for k, n in api.items()}
    widgets = {
        "CheckpointLoaderSimple": ["ckpt_name"], "CLIPTextEncode": ["text"], "LoadImage": ["image", None],
        "VitruvianLoadPose": ["json_text", "file", "format", "canvas_width", "canvas_height"],
        "VitruvianDetectRegions": ["detector", "labels", "threshold", "iou", "max_per_image", "keypoint_confidence"],
        "VitruvianRefineRegions": ["seed", None, *[k for k in FAST if k != "seed"]],
        "SaveImage": ["filename_prefix"], "MaskToImage": [], "PreviewImage": [],
    }
    for key, node in api.items():
        names = widgets[node["class_type"]]
        values = nodes[key]["widgets_values"]
        assert len(values) == len(names), key
        for name, value in zip(names, values):
            if name is not None:  # None: a front-end-only widget (control_after_generate, upload)
                assert value == node["inputs"][name], (key, name)
    links = {(str(link[3]), link[4]): (str(link[1]), link[2]) for link in ui["links"]}
    for key, node in api.items():
        ui_inputs = [i["name"] for i in nodes[key].get("inputs", [])]
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert links[(key, ui_inputs.index(name))] == (value[0], value[1]), (key, name)
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(int(k) for k in api)


@pytest.mark.comfy
@pytest.mark.slow
def test_smoke_shipped_workflow_fast(comfy_host, _tiny_checkpoint_path, comfy_prefix):
    """The shipped workflow on the 512 × 512 astronaut, with CPU-sized sampling (steps, crop size): the face
    is refined and the rest of the photo is untouched."""
    from PIL import Image

    from .test_host import prepare_workflow

    prompt = prepare_workflow(_api(), comfy_host, _tiny_checkpoint_path)
    prompt["7"]["inputs"].update(steps=2, target_size=128, max_size=256)
    prompt["8"]["inputs"]["filename_prefix"] = comfy_prefix
    prompt["99"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": comfy_prefix + "_in"}}
    outputs = comfy_host.run_workflow(prompt, timeout=900)
    text = outputs["7"]["text"][0]
    assert text.startswith("1 image, 1 region: 1 refined, 0 skipped, 0 failed"), text
    (saved,), (loaded,) = comfy_host.output_files({"8": outputs["8"]}), comfy_host.output_files({"99": outputs["99"]})
    with Image.open(saved) as out, Image.open(loaded) as original:
        out, original = np.array(out.convert("RGB")), np.array(original.convert("RGB"))
    assert out.shape == original.shape == (512, 512, 3)
    assert np.array_equal(out[300:], original[300:])  # far below the face
    assert not np.array_equal(out[120:200, 190:280], original[120:200, 190:280])
