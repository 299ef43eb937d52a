"""The scoring nodes in a real ComfyUI, on the real photos, plus checks on the shipped workflow.

Two hosts: the shared ``comfy_host`` (built-in scorers, ranking, preview, node errors) and a private one
(``scoring_host``, started once for this module) whose ``vitruvian_scorers`` folder holds a narrow FaceScore
checkpoint and an ONNX crop scorer made at test time, and which loads a tiny test-only node that makes the
IMAGEs no built-in node makes (channels-first, empty). Built-in ``PreviewAny`` shows STRING / list outputs.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ..comfy_host import REPO_ROOT, HostUnavailable, WorkflowError, start_host

API = REPO_ROOT / "workflows" / "score_regions.api.json"
UI = REPO_ROOT / "example_workflows" / "score_regions.json"
DETECT_API = REPO_ROOT / "workflows" / "detect_regions.api.json"
DATA = REPO_ROOT / "tests" / "data"
SCORE_DEFAULTS = {"labels": "", "aggregate": "mean", "batch_size": 16, "onnx_normalization": "none", "onnx_size": 0}


def _api() -> dict:
    return json.loads(API.read_text(encoding="utf-8"))


def _photo(name: str) -> torch.Tensor:
    """``(1, 3, H, W)`` in [0, 1], read as ComfyUI's LoadImage reads it."""
    from PIL import Image

    with Image.open(DATA / name) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _two_frame_pose() -> str:
    """The astronaut's pose as aux POSE_KEYPOINT for two images, and an empty third frame."""
    from vitruvian.core.pose import load_pose, to_pose_keypoint

    detect = json.loads(DETECT_API.read_text(encoding="utf-8"))
    pose = load_pose(detect["2"]["inputs"]["json_text"], format="mediapipe33", canvas=(512, 512)).pose
    (frame,) = to_pose_keypoint(pose, space="pixels")
    empty = {**frame, "people": []}
    return json.dumps([frame, frame, empty])


def _score_node(image, regions, scorer: str, **inputs) -> dict:
    return {"class_type": "VitruvianScoreRegions",
            "inputs": {"image": image, "regions": regions, "scorer": scorer, **SCORE_DEFAULTS, **inputs}}


def _batch_prompt() -> dict:
    """astronaut, astronaut blurred, astronaut → ImageBatch ×2 → DetectRegions with a 3-frame pose (the third
    frame has nobody) → ScoreRegions(sharpness) (node 13)."""
    detect = json.loads(DETECT_API.read_text(encoding="utf-8"))
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 6, "sigma": 3.0}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["1", 0]}},
        "5": {"class_type": "VitruvianLoadPose", "inputs": {"json_text": _two_frame_pose(), "file": "none",
                                                            "format": "pose_keypoint", "canvas_width": 0, "canvas_height": 0}},
        "6": {"class_type": "VitruvianDetectRegions", "inputs": {**detect["3"]["inputs"], "image": ["4", 0], "pose": ["5", 0]}},
        "13": _score_node(["4", 0], ["6", 0], "sharpness", labels="face"),
    }


def _rank(prompt: dict, score: str = "sharpness", **inputs) -> dict:
    prompt = dict(prompt)
    prompt["20"] = {"class_type": "VitruvianRankImages", "inputs": {
        "image": ["4", 0], "regions": ["13", 0], "score": score, "aggregate": "min", "order": "descending",
        "top_k": 0, "labels": "", "missing": "last", **inputs}}
    prompt["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 2]}}
    return prompt


def _error(host, prompt, node_type: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        host.run_workflow(prompt, timeout=180)
    assert caught.value.node_type == node_type, str(caught.value)
    return caught.value


# ------------------------------------------------------------------------------ the shipped workflows


def test_value_workflow_is_the_detect_workflow_plus_scoring():
    api, detect = _api(), json.loads(DETECT_API.read_text(encoding="utf-8"))
    assert [api[k] for k in "123"] == [detect[k] for k in "123"]  # LoadImage astronaut, LoadPose, DetectRegions
    assert [api[k]["class_type"] for k in "4567"] == [
        "VitruvianScoreRegions", "VitruvianScoreRegions", "VitruvianScorePreview", "SaveImage"]
    assert (api["4"]["inputs"]["scorer"], api["5"]["inputs"]["scorer"]) == ("sharpness", "confidence")
    assert api["5"]["inputs"]["regions"] == ["4", 0] and api["6"]["inputs"]["regions"] == ["5", 0]


def test_value_ui_workflow_matches_api():
    api, ui = _api(), json.loads(UI.read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: n["class_type"] for k, n in api.items()}
    widgets = {
        "LoadImage": ["image"],
        "VitruvianLoadPose": ["json_text", "file", "format", "canvas_width", "canvas_height"],
        "VitruvianDetectRegions": ["detector", "labels", "threshold", "iou", "max_per_image", "keypoint_confidence"],
        "VitruvianScoreRegions": ["scorer", "labels", "aggregate", "batch_size", "onnx_normalization", "onnx_size"],
        "VitruvianScorePreview": ["scores", "mask_opacity", "thickness"],
        "SaveImage": ["filename_prefix"],
    }
    for key, node in api.items():
        values = nodes[key]["widgets_values"]
        if node["class_type"] == "LoadImage":
            values = values[:1]  # the UI adds the upload widget's value
        assert values == [node["inputs"][name] for name in widgets[node["class_type"]]], key
    links = {(str(link[3]), link[4]): (str(link[1]), link[2]) for link in ui["links"]}
    for key, node in api.items():
        ui_inputs = [i["name"] for i in nodes[key].get("inputs", [])]
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert links[(key, ui_inputs.index(name))] == (value[0], value[1]), (key, name)
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(int(k) for k in api)


@pytest.mark.comfy
def test_smoke_shipped_workflow_scores_the_astronaut(comfy_host, comfy_prefix):
    from PIL import Image

    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["7"]["inputs"]["filename_prefix"] = comfy_prefix
    outputs = comfy_host.run_workflow(prompt, timeout=180)
    sharp, conf = outputs["4"]["text"][0].splitlines(), outputs["5"]["text"][0].splitlines()
    assert sharp[0].startswith("sharpness (mean per image): ") and sharp[1].startswith("image 0: face ")
    assert conf[1].startswith("image 0: face 0.99")  # the keypoints' confidence (MediaPipe visibility ≈ 0.999)
    (saved,) = comfy_host.output_files({"7": outputs["7"]})
    with Image.open(saved) as image:
        drawn = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert drawn.shape == (512, 512, 3)
    face = json.loads((DATA / "detections.json").read_text())["images"]["astronaut.png"]["faces"][0]["box"]
    gold = (np.abs(drawn - np.array([255, 196, 0])).sum(-1) < 30)  # the face box outline
    ys, xs = np.nonzero(gold)
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    assert xs.min() < cx < xs.max() and ys.min() < cy < ys.max()


@pytest.mark.comfy
def test_value_scores_per_image_and_ranking(comfy_host):
    """Three images (sharp, blurred, sharp without people): per-image values are aligned, the blurred face
    ranks below the sharp one, the empty image goes last or is dropped, and the regions follow the images."""
    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _batch_prompt()
    prompt["14"] = {"class_type": "PreviewAny", "inputs": {"source": ["13", 2]}}  # the FLOAT list, one per image
    prompt["15"] = {"class_type": "PreviewAny", "inputs": {"source": ["13", 1]}}  # the JSON report
    outputs = comfy_host.run_workflow(_rank(prompt), timeout=300)
    values = [float(v) for v in outputs["14"]["text"]]
    assert len(values) == 3 and values[0] > 2 * values[1] and math.isnan(values[2])
    report = json.loads(outputs["15"]["text"][0])
    assert [im["aggregates"]["sharpness"]["count"] for im in report["images"]] == [1, 1, 0]
    assert report["images"][0]["aggregates"]["sharpness"]["mean"] == pytest.approx(values[0])
    assert outputs["21"]["text"] == ["0,1,2"]
    assert outputs["20"]["text"][0].splitlines()[2] == "#2: image 2 min sharpness –"

    ascending = comfy_host.run_workflow(_rank(_batch_prompt(), order="ascending", missing="drop"), timeout=300)
    assert ascending["21"]["text"] == ["1,0"]
    top = _rank(_batch_prompt(), top_k=1)
    top["22"] = _score_node(["20", 0], ["20", 1], "confidence")  # regions stay aligned with the ranked images
    top["23"] = {"class_type": "PreviewAny", "inputs": {"source": ["22", 1]}}
    out = comfy_host.run_workflow(top, timeout=300)
    assert out["21"]["text"] == ["0"] and len(json.loads(out["23"]["text"][0])["images"]) == 1


@pytest.mark.comfy
def test_value_no_people_no_scores_no_error(comfy_host):
    comfy_host.place(DATA / "coffee.png", "input")
    prompt = _api()
    prompt["1"]["inputs"]["image"] = "coffee.png"
    prompt["2"]["inputs"]["json_text"] = json.dumps([{"people": [], "canvas_width": 600, "canvas_height": 400}])
    prompt["2"]["inputs"].update(format="pose_keypoint", canvas_width=0, canvas_height=0)
    del prompt["7"]
    outputs = comfy_host.run_workflow(prompt, timeout=180)
    assert outputs["4"]["text"][0] == ("sharpness (mean per image): –\nimage 0: no region scored\nwarning: no region "
                                       "with a sharpness score in image 0 (of 1) (no region it could score): "
                                       "per_image is NaN there")


@pytest.mark.comfy
def test_exception_missing_model_lists_folders(comfy_host):
    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["4"]["inputs"]["scorer"] = "facescore:FS_model.pt"
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert "scorer file 'FS_model.pt'" in error.message and "not found; searched:" in error.message
    assert os.path.join("vitruvian", "scorers") in error.message
    prompt["4"]["inputs"]["scorer"] = "brightness"
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert "scorer must be one of sharpness, confidence, hand plausibility, facescore:<file> or onnx:<file>, " \
           "got 'brightness'" in error.message


@pytest.mark.comfy
def test_exception_inputs_checked_before_running(comfy_host):
    """Our combo checks, and ComfyUI's own range checks on the other inputs, reject a prompt before it runs."""
    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["4"]["inputs"]["aggregate"] = "median"
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert "aggregate must be one of min, mean, max, count, got 'median'" in error.message
    prompt = _api()
    prompt["4"]["inputs"]["batch_size"] = 0
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert "Value 0 smaller than min of 1" in error.message


@pytest.mark.comfy
def test_exception_image_and_regions_disagree(comfy_host):
    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["8"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                          "width": 256, "height": 256, "crop": "disabled"}}
    prompt["4"]["inputs"]["image"] = ["8", 0]
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert "regions of image 0 were found on a 512×512 image, but the image is 256×256" in error.message
    prompt = _api()
    prompt["8"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["1", 0]}}
    prompt["6"]["inputs"]["image"] = ["8", 0]
    error = _error(comfy_host, prompt, "VitruvianScorePreview")
    assert "regions must describe the 2 image(s) of the batch, got regions for 1 image(s)" in error.message


@pytest.mark.comfy
def test_exception_rank_by_a_score_nobody_has(comfy_host):
    comfy_host.place(DATA / "astronaut.png", "input")
    error = _error(comfy_host, _rank(_batch_prompt(), score="facescore"), "VitruvianRankImages")
    assert "VitruvianRankImages: input 'score': a score name the regions carry is expected, got an unknown score " \
           "facescore; the regions carry sharpness, sharpness_rel. Score them first with Score Regions" in error.message
    error = _error(comfy_host, _rank(_batch_prompt(), score=""), "VitruvianRankImages")
    assert "input 'score': one score name is expected" in error.message
    error = _error(comfy_host, _rank(_batch_prompt(), labels="faces"), "VitruvianRankImages")
    assert "input 'labels'" in error.message and "got an unknown label faces; the regions carry face" in error.message


def _hands_scored() -> dict:
    """The shipped workflow's astronaut (a face, no hands in the picture) scored for sharpness on its hands only:
    a legitimate empty result (node 4), its report (8) and per-image values (9)."""
    prompt = {key: node for key, node in _api().items() if key in ("1", "2", "3", "4")}
    prompt["4"]["inputs"]["labels"] = "hand"
    prompt["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}}
    prompt["9"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}}
    return prompt


@pytest.mark.comfy
def test_value_labels_no_region_carries_is_a_warning(comfy_host):
    """Score Regions on labels no region has (but that were looked for): NaN per image, said so in the text and the
    report; ranking by that score keeps the batch order with a warning, or refuses when it would drop every image."""
    comfy_host.place(DATA / "astronaut.png", "input")
    outputs = comfy_host.run_workflow(_hands_scored(), timeout=180)
    warning = ("warning: no region with a sharpness score in image 0 (of 1) (no hand region it could score): "
               "per_image is NaN there")
    assert outputs["4"]["text"][0].splitlines()[-1] == warning
    assert json.loads(outputs["8"]["text"][0])["warnings"] == [warning]
    assert math.isnan(float(outputs["9"]["text"][0]))

    prompt = _hands_scored()
    prompt["20"] = {"class_type": "VitruvianRankImages", "inputs": {
        "image": ["1", 0], "regions": ["4", 0], "score": ["4", 3], "aggregate": "min", "order": "descending",
        "top_k": 0, "labels": "", "missing": "last"}}
    prompt["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 2]}}
    outputs = comfy_host.run_workflow(prompt, timeout=180)
    assert outputs["21"]["text"] == ["0"]
    assert outputs["20"]["text"][0].splitlines() == [
        "#0: image 0 min sharpness –",
        "warning: no image has a region with a sharpness score: nothing to rank, the batch order is kept"]
    prompt["20"]["inputs"]["missing"] = "drop"
    error = _error(comfy_host, prompt, "VitruvianRankImages")
    assert "input 'score': no image has a region with a sharpness score, so missing=drop would output no image" \
        in error.message


@pytest.mark.comfy
def test_exception_labels_and_scores_the_regions_cannot_carry(comfy_host):
    """Labels and score names nothing can match were NaN per image (Score Regions) or an empty drawing (Score
    Preview) without a word; now they are node errors that list what the regions carry."""
    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["4"]["inputs"]["labels"] = "fcae"
    error = _error(comfy_host, prompt, "VitruvianScoreRegions")
    assert ("VitruvianScoreRegions: input 'labels': a label the regions carry (or that their detection looked for) is "
            "expected, got an unknown label fcae; the regions carry face, person; their detection looked for face, "
            "hand, person") in error.message
    prompt = _api()
    prompt["6"]["inputs"]["scores"] = "confidence, sharpnes"
    error = _error(comfy_host, prompt, "VitruvianScorePreview")
    assert ("VitruvianScorePreview: input 'scores': a score name the regions carry is expected, got an unknown score "
            "sharpnes; the regions carry confidence, sharpness, sharpness_rel") in error.message


# ------------------------------------------------------------------------------ the private host

TEST_NODES = '''
"""Test-only node (written by tests/nodes/test_scoring_nodes.py): IMAGEs no built-in node makes."""


class ScoringTestImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "op": (["channels_first", "empty"],)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, image, op):
        return (image.movedim(-1, 1).contiguous(),) if op == "channels_first" else (image[:0],)


NODE_CLASS_MAPPINGS = {"ScoringTestImage": ScoringTestImage}
'''


@pytest.fixture(scope="module")
def scoring_host(tmp_path_factory):
    """A ComfyUI whose ``vitruvian_scorers`` folder holds ``fs_tiny.pt`` (a narrow FaceScore with the official
    key names) and ``tiny.onnx`` (a crop → scalar net), plus the test-only node; astronaut.png as input."""
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    from vitruvian.core.scoring import FaceScoreConfig, FaceScoreModel

    from ..core.scoring.onnx_kit import export_scorer

    work = tmp_path_factory.mktemp("scoring_comfy")
    (work / "custom").mkdir()
    (work / "custom" / "scoring_test_nodes.py").write_text(TEST_NODES, encoding="utf-8")
    scorers = work / "scorers"
    scorers.mkdir()
    torch.manual_seed(0)
    config = FaceScoreConfig(vision_width=32, vision_depth=2, vision_heads=1, vision_mlp=64, text_width=32,
                             text_depth=2, text_heads=1, text_intermediate=64, embed_dim=8)
    model = FaceScoreModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    torch.save(model.state_dict(), scorers / "fs_tiny.pt")
    export_scorer(scorers / "tiny.onnx")
    paths = work / "scoring_paths.yaml"
    paths.write_text(json.dumps({"vitruvian_scoring_tests": {"vitruvian_scorers": str(scorers)}}), encoding="utf-8")
    try:
        host = start_host(work, extra_args=("--extra-model-paths-config", str(paths)))
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    host.place(DATA / "astronaut.png", "input")
    host.scorers = scorers
    yield host
    host.close()


def _model_prompt(scorer: str, **inputs) -> dict:
    prompt = _api()
    prompt["4"] = _score_node(["1", 0], ["3", 0], scorer, **inputs)
    prompt["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}}
    for key in "567":
        del prompt[key]
    return prompt


@pytest.mark.comfy
@pytest.mark.slow
def test_value_scorer_files_are_listed(scoring_host):
    info = scoring_host.object_info()["VitruvianScoreRegions"]
    options = info["input"]["required"]["scorer"]
    options = options[1]["options"] if isinstance(options[0], str) else options[0]
    assert options == ["sharpness", "confidence", "hand plausibility", "facescore:fs_tiny.pt", "onnx:tiny.onnx"]


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("scorer, name", [("facescore:fs_tiny.pt", "facescore"), ("onnx:tiny.onnx", "onnx:tiny")])
def test_value_model_scorers_in_comfy_equal_core(scoring_host, scorer, name):
    """The score ComfyUI reports for the astronaut's face is what the core scorer gives on the same face."""
    from vitruvian.core.regions import Region, RegionBatch
    from vitruvian.core.scoring import FaceScorer, OnnxScorer, load_facescore, score_regions

    outputs = scoring_host.run_workflow(_model_prompt(scorer, labels="face"), timeout=300)
    report = json.loads(outputs["8"]["text"][0])
    (face,) = report["images"][0]["regions"][:1]
    assert face["label"] == "face" and report["images"][0]["aggregates"][name]["count"] == 1
    path = scoring_host.scorers / scorer.split(":", 1)[1]
    core = FaceScorer(load_facescore(path)) if name == "facescore" else OnnxScorer(path)
    batch = RegionBatch(((Region("face", tuple(face["box"]), face["score"]),),), ((512, 512),))
    expected = score_regions(_photo("astronaut.png"), batch, core).per_region[name][0][0]
    assert face["scores"][name] == pytest.approx(expected, abs=1e-4)


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("op, message", [
    ("channels_first", "input 'image': an IMAGE (B, H, W, C) with 1, 3 or 4 channels is expected, got shape "
                       "(1, 3, 512, 512); it looks channels-first (B, C, H, W)"),
    ("empty", "input 'image': a non-empty IMAGE is expected, got shape (0, 512, 512, 3); connect a node that "
              "outputs at least one image"),
])
def test_exception_bad_images(scoring_host, op, message):
    prompt = _model_prompt("sharpness")
    prompt["9"] = {"class_type": "ScoringTestImage", "inputs": {"image": ["1", 0], "op": op}}
    prompt["4"]["inputs"]["image"] = ["9", 0]
    error = _error(scoring_host, prompt, "VitruvianScoreRegions")
    assert message in error.message


@pytest.mark.comfy
@pytest.mark.slow
def test_exception_unsafe_scorer_file_is_refused(scoring_host):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))

    torch.save({"blip.visual_encoder.cls_token": Payload()}, scoring_host.scorers / "evil.pt")
    try:
        error = _error(scoring_host, _model_prompt("facescore:evil.pt"), "VitruvianScoreRegions")
    finally:
        (scoring_host.scorers / "evil.pt").unlink()
    assert "refused to load 'evil.pt'" in error.message and scoring_host.running
