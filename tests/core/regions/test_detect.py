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
