"""The region nodes in a real ComfyUI, on the real photos, plus checks on the shipped workflow.

Two hosts: the shared ``comfy_host`` (keypoint regions, masks, the shipped workflow) and a private
one (``regions_host``, started once for this module) whose model folders hold the test detectors
exported to ONNX, and which loads a tiny test-only node pack (``regions_test_nodes.py`` below) that
makes the inputs no built-in node makes: a channels-first IMAGE, an empty batch, SEGS with a box
outside the image.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ..comfy_host import REPO_ROOT, HostUnavailable, WorkflowError, start_host
from ..core.regions.detector_kit import draw_box, export_detector

API = REPO_ROOT / "workflows" / "detect_regions.api.json"
UI = REPO_ROOT / "example_workflows" / "detect_regions.json"
DATA = REPO_ROOT / "tests" / "data"


def _api() -> dict:
    return json.loads(API.read_text(encoding="utf-8"))


def _landmarks_text(name: str) -> str:
    entry = json.loads((DATA / "detections.json").read_text())["images"][name]
    w, h = entry["size"]
    return json.dumps([{"x": x / w, "y": y / h, "visibility": v} for x, y, v in entry["pose_33"]])


def _prompt(image: str, *, pose_text: str | None = None, pose_format: str = "mediapipe33",
            canvas: tuple[int, int] = (512, 512), **detect) -> dict:
    """LoadImage (+ LoadPose) → DetectRegions → MaskToImage → SaveImage (node 3 = DetectRegions)."""
    prompt = _api()
    prompt["1"]["inputs"]["image"] = image
    if pose_text is None:
        del prompt["2"]
        del prompt["3"]["inputs"]["pose"]
    else:
        prompt["2"]["inputs"].update(json_text=pose_text, format=pose_format, canvas_width=canvas[0],
                                     canvas_height=canvas[1])
    prompt["3"]["inputs"].update(detect)
    del prompt["4"]
    prompt["5"]["inputs"]["mask"] = ["3", 1]  # the detector's own mask output
    return prompt


def _run(host, prompt, prefix) -> tuple[str, np.ndarray]:
    """Run; return DetectRegions' node text and the saved mask as an (H, W) array in [0, 1]."""
    from PIL import Image

    prompt["6"]["inputs"]["filename_prefix"] = prefix
    outputs = host.run_workflow(prompt, timeout=180)
    (path,) = host.output_files({"6": outputs["6"]})
    with Image.open(path) as image:
        mask = np.asarray(image.convert("L"), dtype=np.float32) / 255
    return outputs["3"]["text"][0], mask


def _error(host, prompt) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        host.run_workflow(prompt, timeout=180)
    return caught.value


# ------------------------------------------------------------------------------ the shipped workflows


def test_value_workflow_embeds_the_pose_preview_landmarks():
    """The LoadPose node is pose_preview's (MediaPipe's 33 landmarks of astronaut.png)."""
    pose_preview = json.loads((REPO_ROOT / "workflows" / "pose_preview.api.json").read_text())
    api = _api()
    assert api["2"] == pose_preview["1"] and api["1"]["inputs"]["image"] == "astronaut.png"
    assert json.loads(api["2"]["inputs"]["json_text"]) == json.loads(_landmarks_text("astronaut.png"))


def test_value_ui_workflow_matches_api():
    api, ui = _api(), json.loads(UI.read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: n["class_type"] for k, n in api.items()}
    widgets = {
        "LoadImage": ["image"],
        "VitruvianLoadPose": ["json_text", "file", "format", "canvas_width", "canvas_height"],
        "VitruvianDetectRegions": ["detector", "labels", "threshold", "iou", "max_per_image", "keypoint_confidence"],
        "VitruvianRegionsToMask": ["labels", "dilation", "feather"],
        "MaskToImage": [],
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
def test_smoke_shipped_workflow_masks_the_astronaut_face(comfy_host, comfy_prefix):
    from PIL import Image

    comfy_host.place(DATA / "astronaut.png", "input")
    prompt = _api()
    prompt["6"]["inputs"]["filename_prefix"] = comfy_prefix
    outputs = comfy_host.run_workflow(prompt, timeout=180)
    assert outputs["3"]["text"] == ["1 image: 1 face, 1 person"]
    (path,) = comfy_host.output_files({"6": outputs["6"]})
    with Image.open(path) as image:
        mask = np.asarray(image.convert("L"), dtype=np.float32) / 255
    assert mask.shape == (512, 512)
    face = json.loads((DATA / "detections.json").read_text())["images"]["astronaut.png"]["faces"][0]["box"]
    cx, cy = (face[0] + face[2]) // 2, (face[1] + face[3]) // 2
    assert mask[cy, cx] > 0.99 and mask[5, 5] == 0 and mask[400, 250] == 0  # face in, body (person label) out
    inside = mask[face[1] : face[3], face[0] : face[2]]
    assert 0.5 < float(inside.mean()) < 0.95  # an oval, feathered: not the box


# ------------------------------------------------------------------------------ keypoint regions


@pytest.mark.comfy
def test_value_camera_face_and_hands(comfy_host, comfy_prefix):
    comfy_host.place(DATA / "camera.png", "input")
    text, mask = _run(comfy_host, _prompt("camera.png", pose_text=_landmarks_text("camera.png"), labels="face,hand"),
                      comfy_prefix)
    assert text == "1 image: 1 face, 2 hands"
    face = json.loads((DATA / "detections.json").read_text())["images"]["camera.png"]["faces"][0]["box"]
    assert mask[(face[1] + face[3]) // 2, (face[0] + face[2]) // 2] == 1


@pytest.mark.comfy
@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
def test_value_no_people_no_regions(comfy_host, comfy_prefix, name):
    from PIL import Image

    comfy_host.place(DATA / name, "input")
    with Image.open(DATA / name) as image:
        w, h = image.size
    empty = json.dumps({"people": [], "canvas_width": w, "canvas_height": h})
    text, mask = _run(comfy_host, _prompt(name, pose_text=empty, pose_format="auto", canvas=(0, 0)), comfy_prefix)
    assert text == "1 image: no regions" and mask.shape == (h, w) and mask.max() == 0


@pytest.mark.comfy
def test_value_pose_canvas_rescaled_with_a_note(comfy_host, comfy_prefix):
    """The astronaut's landmarks on a 256×256 canvas: the same face, found on the 512×512 image."""
    comfy_host.place(DATA / "astronaut.png", "input")
    text, mask = _run(comfy_host, _prompt("astronaut.png", pose_text=_landmarks_text("astronaut.png"),
                                          canvas=(256, 256), labels="face"), comfy_prefix)
    assert text == "1 image: 1 face\npose canvas 256×256 rescaled to the 512×512 image"
    assert mask[119, 225] == 1


@pytest.mark.comfy
def test_exception_pose_errors(comfy_host):
    comfy_host.place(DATA / "astronaut.png", "input")
    landmarks = _landmarks_text("astronaut.png")
    error = _error(comfy_host, _prompt("astronaut.png", pose_text=landmarks, canvas=(512, 256)))
    assert error.node_type == "VitruvianDetectRegions"
    assert "pose 0 has a 512×256 canvas but image 0 is 512×512; the aspect ratios differ" in error.message
    two = json.dumps([{"people": [], "canvas_width": 512, "canvas_height": 512}] * 2)
    error = _error(comfy_host, _prompt("astronaut.png", pose_text=two, pose_format="auto", canvas=(0, 0)))
    assert ("pose has 2 frames but image has 1 images; the batch sizes must match (one pose frame per image)"
            in error.message)
    error = _error(comfy_host, _prompt("astronaut.png"))
    assert "nothing to detect with; connect a pose or pick a detector file" in error.message


@pytest.mark.comfy
def test_exception_pose_on_a_tiny_image(comfy_host):
    """The astronaut's 512² pose on a 1×1 image was rescaled onto it without a word; now it names the input."""
    prompt = _prompt("astronaut.png", pose_text=_landmarks_text("astronaut.png"))
    prompt["1"] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}
    error = _error(comfy_host, prompt)
    assert error.node_type == "VitruvianDetectRegions"
    assert ("VitruvianDetectRegions: input 'pose': pose 0 has a 512×512 canvas but image 0 is 1×1: an image of at "
            "least 16×16 pixels is expected for keypoints") in error.message
    prompt["1"]["inputs"].update(width=2048, height=2048)  # the same picture at 4×: rescaled, as before
    prompt["2"]["inputs"].update(canvas_width=32, canvas_height=32)  # but a 32² pose on it is 64×: refused
    assert "rescaling the pose 64× (more than 32× either way)" in _error(comfy_host, prompt).message


@pytest.mark.comfy
def test_exception_labels_no_region_can_carry(comfy_host, comfy_prefix):
    """A label no source makes is an error listing what they make; a label the regions cannot carry is an error in
    Regions to Mask and Regions to SEGS; one they could carry but do not is an empty mask with a warning."""
    comfy_host.place(DATA / "astronaut.png", "input")
    landmarks = _landmarks_text("astronaut.png")
    error = _error(comfy_host, _prompt("astronaut.png", pose_text=landmarks, labels="face,fcae"))
    assert ("VitruvianDetectRegions: input 'labels': a label that the pose or the detector makes is expected, got "
            "fcae; the pose makes face, hand, person") in error.message

    prompt = _api()
    prompt["3"]["inputs"]["labels"] = "face,hand"  # the astronaut's hands are not in the picture
    prompt["4"]["inputs"]["labels"] = "person"  # not looked for: empty by construction
    prompt["6"]["inputs"]["filename_prefix"] = comfy_prefix
    error = _error(comfy_host, prompt)
    assert error.node_type == "VitruvianRegionsToMask"
    assert ("VitruvianRegionsToMask: input 'labels': a label the regions carry (or that their detection looked for) "
            "is expected, got an unknown label person; the regions carry face; their detection looked for face, "
            "hand") in error.message
    prompt["4"]["inputs"]["labels"] = "hand"  # looked for, not found: a legitimate empty mask, said so
    outputs = comfy_host.run_workflow(prompt, timeout=180)
    assert outputs["4"]["text"] == ["mask of 1 image: no regions\nwarning: no region labelled hand in image 0 (of 1)"]
    (path,) = comfy_host.output_files({"6": outputs["6"]})
    from PIL import Image

    with Image.open(path) as image:
        assert np.asarray(image.convert("L")).max() == 0

    segs = {"1": prompt["1"], "2": prompt["2"], "3": prompt["3"],
            "7": {"class_type": "VitruvianRegionsToSEGS", "inputs": {"regions": ["3", 0], "batch_index": 0,
                                                                     "crop_factor": 3.0, "labels": "hand"}},
            "8": {"class_type": "VitruvianSEGSToRegions", "inputs": {"segs": ["7", 0]}},
            "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}}}
    outputs = comfy_host.run_workflow(segs, timeout=180)
    assert outputs["7"]["text"] == ["0 SEG(s) of image 0\nwarning: no region labelled hand in image 0"]
    segs["7"]["inputs"]["labels"] = "a" * 100_000
    error = _error(comfy_host, segs)
    assert error.node_type == "VitruvianRegionsToSEGS" and "input 'labels'" in error.message
    assert len(error.message) < 1000  # the 100 KB label is cut in the message


@pytest.mark.comfy
def test_exception_missing_detector_lists_folders(comfy_host):
    comfy_host.place(DATA / "astronaut.png", "input")
    error = _error(comfy_host, _prompt("astronaut.png", detector="face_yolov8m.onnx"))
    assert error.node_type == "VitruvianDetectRegions" and not error.traceback  # refused before running
    assert "detector 'face_yolov8m.onnx'" in error.message and "not found; searched:" in error.message
    assert os.path.join("vitruvian", "detectors") in error.message and os.path.join("ultralytics", "bbox") in error.message


# ------------------------------------------------------------------------------ the private host

TEST_NODES = '''
"""Test-only nodes (written by tests/nodes/test_regions_nodes.py): inputs no built-in node makes."""
from collections import namedtuple
import numpy as np

SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"], defaults=[None])


class RegionsTestImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "op": (["channels_first", "empty"],)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, image, op):
        return (image.movedim(-1, 1).contiguous(),) if op == "channels_first" else (image[:0],)


class RegionsTestSEGS:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}
    RETURN_TYPES = ("SEGS",)
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, image):
        h, w = image.shape[1:3]
        mask = np.ones((40, 40), dtype=np.float32)
        inside = SEG(None, mask, 0.9, [10, 10, 50, 50], np.array([10.0, 10.0, 50.0, 50.0]), "face")
        edge = SEG(None, mask, 0.8, [w - 40, 0, w, 40], np.array([w - 20.0, 0.0, w + 20.0, 40.0]), "hand")
        return (((h, w), [inside, edge]),)


NODE_CLASS_MAPPINGS = {"RegionsTestImage": RegionsTestImage, "RegionsTestSEGS": RegionsTestSEGS}
'''


@pytest.fixture(scope="module")
def regions_host(tmp_path_factory):
    """A ComfyUI with the test detectors in ``vitruvian_detectors`` (bbox) and ``ultralytics_segm``
    (segm), and the test-only nodes above; coffee.png with a red square in its input folder."""
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    work = tmp_path_factory.mktemp("regions_comfy")
    (work / "custom").mkdir()
    (work / "custom" / "regions_test_nodes.py").write_text(TEST_NODES, encoding="utf-8")
    detectors, segm = work / "detectors", work / "ultralytics" / "segm"
    detectors.mkdir()
    segm.mkdir(parents=True)
    export_detector(detectors / "colour_boxes.onnx")
    export_detector(segm / "colour_discs-seg.onnx", segm=True)
    config = work / "regions_paths.yaml"
    config.write_text(json.dumps({"vitruvian_regions_tests": {
        "vitruvian_detectors": str(detectors), "ultralytics_segm": str(segm)}}), encoding="utf-8")
    try:
        host = start_host(work, extra_args=("--extra-model-paths-config", str(config)))
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    from PIL import Image

    from ..core.regions.conftest import load_photo

    coffee = load_photo("coffee.png")
    draw_box(coffee, (400, 100, 480, 190), "red")
    array = (coffee[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(host.folders["input"] / "coffee_red_square.png")
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        host.place(DATA / name, "input")
    yield host
    host.close()


@pytest.mark.comfy
@pytest.mark.slow
def test_value_detector_files_are_listed(regions_host):
    info = regions_host.object_info()["VitruvianDetectRegions"]
    options = info["input"]["required"]["detector"]
    options = options[1]["options"] if isinstance(options[0], str) else options[0]
    assert options == ["none", "colour_boxes.onnx", "segm/colour_discs-seg.onnx"]


@pytest.mark.comfy
@pytest.mark.slow
def test_value_onnx_detector_in_comfy(regions_host, comfy_prefix):
    """The red square pasted on the coffee photo is found where it was drawn, as a face."""
    text, mask = _run(regions_host, _prompt("coffee_red_square.png", detector="colour_boxes.onnx"), comfy_prefix)
    assert text.splitlines()[0] == "1 image: 1 face"
    assert text.splitlines()[1] == "detector colour_boxes.onnx on CPUExecutionProvider"
    ys, xs = np.nonzero(mask > 0.5)
    assert abs(xs.min() - 400) <= 2 and abs(xs.max() + 1 - 480) <= 2
    assert abs(ys.min() - 100) <= 2 and abs(ys.max() + 1 - 190) <= 2


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png"])
@pytest.mark.parametrize("detector", ["colour_boxes.onnx", "segm/colour_discs-seg.onnx"])
def test_value_onnx_detector_finds_nothing_on_negatives(regions_host, comfy_prefix, name, detector):
    text, mask = _run(regions_host, _prompt(name, detector=detector), comfy_prefix)
    assert text.splitlines()[0] == "1 image: no regions" and mask.max() == 0


@pytest.mark.comfy
@pytest.mark.slow
def test_value_pose_and_detector_merge(regions_host, comfy_prefix):
    """Keypoint regions and detector regions together: the astronaut's face (pose) is kept; the detector
    adds nothing on this photo."""
    text, _ = _run(regions_host, _prompt("astronaut.png", pose_text=_landmarks_text("astronaut.png"),
                                         detector="segm/colour_discs-seg.onnx"), comfy_prefix)
    assert text.splitlines() == ["1 image: 1 face, 1 person", "detector colour_discs-seg.onnx on CPUExecutionProvider"]


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("op, message", [
    ("channels_first", "input 'image': an IMAGE (B, H, W, C) with 1, 3 or 4 channels is expected, got shape "
                       "(1, 3, 400, 600); it looks channels-first (B, C, H, W)"),
    ("empty", "input 'image': a non-empty IMAGE is expected, got shape (0, 400, 600, 3); connect a node that "
              "outputs at least one image"),
])
def test_exception_bad_images(regions_host, op, message):
    prompt = _prompt("coffee.png", detector="colour_boxes.onnx")
    prompt["7"] = {"class_type": "RegionsTestImage", "inputs": {"image": ["1", 0], "op": op}}
    prompt["3"]["inputs"]["image"] = ["7", 0]
    error = _error(regions_host, prompt)
    assert error.node_type == "VitruvianDetectRegions" and message in error.message


@pytest.mark.comfy
@pytest.mark.slow
def test_value_segs_round_trip_and_clipping(regions_host, comfy_prefix):
    """SEGS with a box half outside the image → REGIONS (clipped, with a note) → SEGS → REGIONS → MASK."""
    from PIL import Image

    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "coffee.png"}},
        "2": {"class_type": "RegionsTestSEGS", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "VitruvianSEGSToRegions", "inputs": {"segs": ["2", 0]}},
        "4": {"class_type": "VitruvianRegionsToSEGS", "inputs": {"regions": ["3", 0], "image": ["1", 0],
                                                                 "batch_index": 0, "crop_factor": 3.0, "labels": ""}},
        "5": {"class_type": "VitruvianSEGSToRegions", "inputs": {"segs": ["4", 0]}},
        "6": {"class_type": "VitruvianRegionsToMask", "inputs": {"regions": ["5", 0], "labels": "hand",
                                                                 "dilation": 0, "feather": 0}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": comfy_prefix}},
    }
    outputs = regions_host.run_workflow(prompt, timeout=180)
    assert outputs["3"]["text"] == [
        "1 image: 1 face, 1 hand\nSEG 1 (hand): bbox (580.0, 0.0, 620.0, 40.0) clipped to the 600×400 image"]
    assert outputs["5"]["text"] == ["1 image: 1 face, 1 hand"]  # nothing left to clip
    (path,) = regions_host.output_files({"8": outputs["8"]})
    with Image.open(path) as image:
        mask = np.asarray(image.convert("L"), dtype=np.float32) / 255
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (580, 599, 0, 39)


@pytest.mark.comfy
@pytest.mark.slow
def test_value_regions_to_mask_dilation_and_feather(regions_host, comfy_prefix):
    from PIL import Image

    def run(dilation, feather):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "coffee_red_square.png"}},
            "2": {"class_type": "VitruvianDetectRegions", "inputs": {
                "image": ["1", 0], "detector": "colour_boxes.onnx", "labels": "face", "threshold": 0.5, "iou": 0.45,
                "max_per_image": 20, "keypoint_confidence": 0.3}},
            "3": {"class_type": "VitruvianRegionsToMask", "inputs": {"regions": ["2", 0], "labels": "",
                                                                     "dilation": dilation, "feather": feather}},
            "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": comfy_prefix}},
        }
        outputs = regions_host.run_workflow(prompt, timeout=180)
        (path,) = regions_host.output_files({"5": outputs["5"]})
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.float32) / 255

    plain, grown, soft = run(0, 0), run(10, 0), run(0, 8)
    assert grown.sum() > plain.sum() + 4 * 80 * 10 * 0.9  # about 10 px more on every side
    assert set(np.unique(plain)) <= {0.0, 1.0} and 0 < soft[145, 400] < 1  # a soft edge at the box's left side
