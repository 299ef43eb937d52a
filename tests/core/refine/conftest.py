"""Fixtures for the refinement tests: a batch of three real photos at 128 × 128 (astronaut, camera,
the astronaut flipped) and their face / hand / person regions from MediaPipe's keypoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[2] / "data"
SIZE = 128


def _photo(name: str, flip: bool = False) -> torch.Tensor:
    from PIL import Image

    with Image.open(DATA / name) as image:
        image = image.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.array(image, dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """``(3, 3, 128, 128)``: astronaut, camera, astronaut flipped left-right."""
    return torch.stack([_photo("astronaut.png"), _photo("camera.png"), _photo("astronaut.png", flip=True)])


@pytest.fixture(scope="session")
def photo_regions():
    """The photos' regions from the MediaPipe landmarks of tests/data/detections.json (faces, hands, people)."""
    from vitruvian.core.pose import load_pose
    from vitruvian.core.regions import regions_from_pose

    det = json.loads((DATA / "detections.json").read_text())["images"]
    astronaut, camera = det["astronaut.png"]["pose_33"], det["camera.png"]["pose_33"]
    frames = [{"pose_33": astronaut, "size": [512, 512]}, {"pose_33": camera, "size": [512, 512]},
              {"pose_33": [[512 - x, y, v] for x, y, v in astronaut], "size": [512, 512]}]
    pose = load_pose(json.dumps(frames), canvas=(SIZE, SIZE)).pose
    return regions_from_pose(pose, [(SIZE, SIZE)] * 3, min_confidence=0.3).filter(min_score=0.5)
