"""detect_regions: keypoints and an ONNX detector together on the real photos."""

from __future__ import annotations

import json

import pytest
import torch

from vitruvian.core.pose import load_pose
from vitruvian.core.regions import detect_regions, load_detector

from .conftest import load_photo
from .detector_kit import draw_box


def _pose(detections, name, canvas=None):
    entry = detections[name]
    w, h = entry["size"]
    landmarks = [{"x": x / w, "y": y / h, "visibility": v} for x, y, v in entry["pose_33"]]
    return load_pose(json.dumps(landmarks), format="mediapipe33", canvas=canvas or (w, h)).pose


def test_value_pose_and_detector_together(detections, onnx_models):
    """The astronaut with a red square pasted at her shoulder: the face from keypoints, the square from the
    detector (labelled face too, but far from her face, so both stay)."""
    image = load_photo("astronaut.png")
    draw_box(image, (380, 300, 440, 360), "red")
    regions, notes = detect_regions(image, pose=_pose(detections, "astronaut.png"),
                                    detector=load_detector(onnx_models["bbox"]), labels=["face"])
    faces = regions[0]
    assert sorted(r.source for r in faces) == ["keypoints:mediapipe33:estimate", "onnx:colour_boxes.onnx"]
    assert faces[0].score >= faces[1].score  # best first
    assert notes == ["detector colour_boxes.onnx on CPUExecutionProvider"]


def test_value_threshold_drops_unsure_keypoint_regions(detections):
    image = load_photo("astronaut.png")
    pose = _pose(detections, "astronaut.png")
    low, _ = detect_regions(image, pose=pose, threshold=0.0)
    high, _ = detect_regions(image, pose=pose, threshold=0.5)
    assert low.count("hand") == 1 and high.count("hand") == 0  # the hand below the frame (score 0.33)
    assert high.summary() == "1 image: 1 face, 1 person"


def test_value_rescaled_canvas_is_noted(detections):
    image = load_photo("camera.png")
    regions, notes = detect_regions(image, pose=_pose(detections, "camera.png", canvas=(1024, 1024)), labels=["face"])
    assert notes == ["pose canvas 1024×1024 rescaled to the 512×512 image"]
    (face,) = regions[0]
    truth = detections["camera.png"]["faces"][0]["box"]
    assert face.box[0] < truth[0] < truth[2] < face.box[2]  # the same face as on the 512 canvas


def test_exception(detections):
    image = load_photo("astronaut.png")
    with pytest.raises(ValueError, match="nothing to detect with; connect a pose or pick a detector file"):
        detect_regions(image)
    with pytest.raises(ValueError, match="pose has 1 frames but image has 2 images"):
        detect_regions(torch.cat([image, image]), pose=_pose(detections, "astronaut.png"))
    with pytest.raises(TypeError, match="pose must be a PoseBatch"):
        detect_regions(image, pose={"people": []})
    with pytest.raises(ValueError, match="looks like ComfyUI's IMAGE layout"):
        detect_regions(image.permute(0, 2, 3, 1), pose=_pose(detections, "astronaut.png"))


def test_value_searched_labels_are_recorded(detections, onnx_models):
    """The labels looked for travel with the regions, so later nodes tell "not found" from "never looked for"."""
    image = load_photo("astronaut.png")
    pose = _pose(detections, "astronaut.png")
    assert detect_regions(image, pose=pose)[0].searched == ("face", "hand", "person")
    assert detect_regions(image, pose=pose, labels="face, person")[0].searched == ("face", "person")
    named = load_detector(onnx_models["bbox"])  # classes face, hand
    assert detect_regions(image, detector=named)[0].searched == ("face", "hand")
    assert detect_regions(image, pose=pose, detector=named, labels="hand")[0].searched == ("hand",)
    unnamed = load_detector(onnx_models["unnamed_two"])  # no class names: what it makes is not known
    assert detect_regions(image, detector=unnamed)[0].searched == ()
    assert detect_regions(image, detector=unnamed, labels=["class1"])[0].searched == ("class1",)


def test_value_labels_no_source_makes(detections, onnx_models):
    """A label no source here makes: the pack's own labels are a note (the default asks for all three), any other
    label an error listing what the sources make."""
    image = load_photo("coffee.png")
    named = load_detector(onnx_models["bbox"])
    _, notes = detect_regions(image, detector=named, labels="face,hand,person")
    assert notes == ["detector colour_boxes.onnx on CPUExecutionProvider",
                     "labels person: no source here makes them (the detector makes face, hand)"]
    with pytest.raises(ValueError, match=r"labels: a label that the pose or the detector makes is expected, got "
                                         r"fcae; the detector makes face, hand\. Check the spelling"):
        detect_regions(image, detector=named, labels="fcae,hand")
    pose = _pose(detections, "astronaut.png")
    with pytest.raises(ValueError, match=r"got abc; the pose makes face, hand, person"):
        detect_regions(load_photo("astronaut.png"), pose=pose, labels="abc")
    # a detector that does not list its classes may make any label
    assert detect_regions(image, detector=load_detector(onnx_models["unnamed_two"]), labels="abc")[0].count() == 0


def test_exception_pose_on_a_tiny_image(detections):
    """A 512² pose on a 1×1 image is refused, not rescaled."""
    pose = _pose(detections, "astronaut.png")
    with pytest.raises(ValueError, match=r"pose 0 has a 512×512 canvas but image 0 is 1×1: an image of at least "
                                         r"16×16 pixels is expected for keypoints"):
        detect_regions(torch.rand(1, 3, 1, 1), pose=pose)
