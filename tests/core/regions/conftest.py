"""Fixtures for the region tests: the real photos, their MediaPipe detections, and the test detectors
exported to ONNX once per session (tests/core/regions/detector_kit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[2] / "data"
PEOPLE = ("astronaut.png", "camera.png")
NEGATIVES = ("chelsea.png", "coffee.png")


@pytest.fixture(scope="session")
def detections() -> dict:
    """tests/data/detections.json (MediaPipe 0.10.21 on the four photos)."""
    return json.loads((DATA / "detections.json").read_text())["images"]


def load_photo(name: str) -> torch.Tensor:
    """A photo of tests/data as ``(1, 3, H, W)`` float32 in [0, 1] (grey repeated to RGB)."""
    from PIL import Image

    with Image.open(DATA / name) as image:
        array = np.array(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    """The test detector exported four ways: bbox and segm with names; without names, a one-class
    model (labelled from its file name, ``hand_…``) and a two-class one."""
    from .detector_kit import export_detector

    folder = tmp_path_factory.mktemp("detectors")
    return {
        "bbox": export_detector(folder / "colour_boxes.onnx"),
        "segm": export_detector(folder / "colour_discs-seg.onnx", segm=True),
        "unnamed": export_detector(folder / "hand_yolo_test.onnx", names=None, classes=1),
        "unnamed_two": export_detector(folder / "yolo_test.onnx", names=None),
    }
