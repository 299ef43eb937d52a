"""The pose nodes in a real ComfyUI (``comfy_host``), plus checks on the shipped pose workflows.

Host tests are marked ``comfy`` and skip with the reason when there is no ComfyUI host.
"""

from __future__ import annotations

import json

import pytest

from ..comfy_host import REPO_ROOT, WorkflowError

API = REPO_ROOT / "workflows" / "pose_preview.api.json"
UI = REPO_ROOT / "example_workflows" / "pose_preview.json"
DATA = REPO_ROOT / "tests" / "data"


def _api() -> dict:
    return json.loads(API.read_text(encoding="utf-8"))


def _load_node_inputs(**inputs) -> dict:
    """The shipped workflow with node 1 (VitruvianLoadPose) given other inputs."""
    prompt = _api()
    prompt["1"]["inputs"].update(inputs)
    return prompt


def _aux_text(person: dict) -> str:
    return json.dumps([{"people": [person], "canvas_width": 512, "canvas_height": 512}])


# ------------------------------------------------------------------------------ the shipped workflows


def test_value_workflow_embeds_the_real_astronaut_detection():
    """json_text holds MediaPipe's 33 landmarks of astronaut.png (tests/data/detections.json), normalised."""
    astronaut = json.loads((DATA / "detections.json").read_text())["images"]["astronaut.png"]
    w, h = astronaut["size"]
    node = _api()["1"]
    assert node["class_type"] == "VitruvianLoadPose"
    assert (node["inputs"]["canvas_width"], node["inputs"]["canvas_height"]) == (w, h) == (512, 512)
    landmarks = json.loads(node["inputs"]["json_text"])
    assert [[lm["x"] * w, lm["y"] * h, lm["visibility"]] for lm in landmarks] == astronaut["pose_33"]


def test_value_ui_workflow_matches_api():
    """Same nodes, same links and widget values in the node's widget order."""
    api, ui = _api(), json.loads(UI.read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: n["class_type"] for k, n in api.items()}
    widgets = {
        "VitruvianLoadPose": ["json_text", "file", "format", "canvas_width", "canvas_height"],
        "VitruvianPoseToKeypoint": ["confidence", "threshold"],
        "VitruvianPoseFromKeypoint": ["coordinates"],
        "VitruvianPosePreview": ["min_confidence", "thickness"],
        "SaveImage": ["filename_prefix"],
    }
    for key, node in api.items():
        assert nodes[key]["widgets_values"] == [node["inputs"][name] for name in widgets[node["class_type"]]], key
    links = {(str(link[3]), link[4]): (str(link[1]), link[2]) for link in ui["links"]}
    for key, node in api.items():
        ui_inputs = [i["name"] for i in nodes[key].get("inputs", [])]
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link [node id, output slot]
                assert links[(key, ui_inputs.index(name))] == (value[0], value[1]), (key, name)
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(int(k) for k in api)


# ------------------------------------------------------------------------------ in ComfyUI


@pytest.mark.comfy
def test_smoke_workflow_renders_the_astronaut(comfy_host, comfy_prefix):
    from PIL import Image

    prompt = _api()
    prompt["5"]["inputs"]["filename_prefix"] = comfy_prefix
    outputs = comfy_host.run_workflow(prompt, timeout=120)
    saved = comfy_host.output_files({"5": outputs["5"]})
    previews = comfy_host.output_files({"4": outputs["4"]})
    assert len(saved) == 1 and saved[0].is_file() and len(previews) == 1 and previews[0].is_file()
    with Image.open(saved[0]) as image:
        assert image.size == (512, 512)
        assert image.convert("RGB").getpixel((222, 127)) == (255, 0, 0)  # the nose, OpenPose joint 0
        assert image.convert("RGB").getpixel((5, 5)) == (0, 0, 0)


@pytest.mark.comfy
def test_value_file_input(comfy_host, comfy_prefix, tmp_path):
    """A POSE_KEYPOINT file picked from the input folder (a subfolder too) loads and renders."""
    person = {"pose_keypoints_2d": [100.0, 80.0, 0.9] + [0.0, 0.0, 0.0] * 17}
    path = tmp_path / "one_nose.json"
    path.write_text(_aux_text(person))
    (comfy_host.folders["input"] / "poses").mkdir(exist_ok=True)
    name = "poses/" + comfy_host.place(path, "input", "poses/one_nose.json").split("/")[-1]
    prompt = _load_node_inputs(json_text="", file=name, format="auto", canvas_width=0, canvas_height=0)
    prompt["5"]["inputs"]["filename_prefix"] = comfy_prefix
    from PIL import Image

    files = comfy_host.output_files({"5": comfy_host.run_workflow(prompt, timeout=120)["5"]})
    with Image.open(files[0]) as image:
        assert image.convert("RGB").getpixel((100, 80)) == (255, 0, 0)


def _error(comfy_host, prompt) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow(prompt, timeout=120)
    assert caught.value.node_type == "VitruvianLoadPose", str(caught.value)
    return caught.value


@pytest.mark.comfy
def test_exception_malformed_json_text(comfy_host):
    error = _error(comfy_host, _load_node_inputs(json_text=_aux_text({"hand_left_keypoints_2d": [1.0] * 62}), format="auto"))
    assert (
        "load_pose: image 0, person 0, hand_left_keypoints_2d has 62 values, expected a multiple of 3 "
        "(21 keypoints × [x, y, c] = 63)" in error.message
    )
    error = _error(comfy_host, _load_node_inputs(json_text='{"people": [', format="auto"))
    assert "load_pose: json_text is not valid JSON" in error.message


@pytest.mark.comfy
def test_exception_nan(comfy_host):
    values = [1.0] * 54
    values[3] = float("nan")  # keypoint 1, x; json.dumps writes it as NaN, which JSON readers accept
    text = _aux_text({"pose_keypoints_2d": values})
    assert "NaN" in text
    error = _error(comfy_host, _load_node_inputs(json_text=text, format="auto"))
    assert "load_pose: image 0, person 0, pose_keypoints_2d keypoint 1 has x = nan" in error.message


@pytest.mark.comfy
def test_exception_unknown_format(comfy_host):
    error = _error(comfy_host, _load_node_inputs(format="yaml"))
    assert "format must be one of auto, openpose, pose_keypoint, coco17, wholebody133, mediapipe33, got 'yaml'" in error.message


@pytest.mark.comfy
@pytest.mark.parametrize("name", ["../../etc/passwd.json", "/etc/hosts"])
def test_exception_file_outside_input_folder(comfy_host, name):
    error = _error(comfy_host, _load_node_inputs(json_text="", file=name))
    assert "file must be inside ComfyUI's input folder" in error.message and name in error.message


@pytest.mark.comfy
def test_exception_inputs_checked_before_running(comfy_host):
    error = _error(comfy_host, _load_node_inputs(canvas_width=512, canvas_height=0))
    assert "canvas_width and canvas_height must both be 0" in error.message
    error = _error(comfy_host, _load_node_inputs(json_text=" "))
    assert "nothing to load" in error.message


@pytest.mark.comfy
def test_exception_data_needs_canvas(comfy_host):
    # Normalised MediaPipe landmarks without a canvas: the message says which inputs to set.
    error = _error(comfy_host, _load_node_inputs(canvas_width=0, canvas_height=0))
    assert "has no canvas size" in error.message and "canvas_width/canvas_height" in error.message


@pytest.mark.comfy
def test_exception_preview_over_an_image_the_pose_does_not_fit(comfy_host, comfy_prefix):
    """Preview Pose stretched any pose over any image (the fuzz test's review found a 512² pose drawn onto a 1×1
    image); it follows Detect Regions' rule now: the same aspect ratio is scaled, anything else is refused."""
    prompt = _api()
    prompt["5"]["inputs"]["filename_prefix"] = comfy_prefix
    prompt["6"] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}
    prompt["4"]["inputs"]["image"] = ["6", 0]
    for (width, height), message in (((1, 1), "pose 0 has a 512×512 canvas but image 0 is 1×1: an image of at least "
                                               "16×16 pixels is expected"),
                                     ((512, 256), "the aspect ratios differ")):
        prompt["6"]["inputs"].update(width=width, height=height)
        with pytest.raises(WorkflowError) as caught:
            comfy_host.run_workflow(prompt, timeout=120)
        assert caught.value.node_type == "VitruvianPosePreview"
        assert "VitruvianPosePreview: input 'image': pose 0 has a 512×512 canvas" in caught.value.message
        assert message in caught.value.message
    prompt["6"]["inputs"].update(width=256, height=256)  # another resolution of the same picture: drawn, scaled
    (path,) = comfy_host.output_files({"5": comfy_host.run_workflow(prompt, timeout=120)["5"]})
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (256, 256) and image.getextrema() != ((0, 0), (0, 0), (0, 0))
