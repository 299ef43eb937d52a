"""Fixtures for the pose tests: the real MediaPipe detection of astronaut.png (tests/data)."""

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session")
def detections() -> dict:
    """tests/data/detections.json (MediaPipe 0.10.21 on the test photos)."""
    return json.loads((DATA / "detections.json").read_text())


@pytest.fixture(scope="session")
def astronaut(detections) -> dict:
    """``{"size": [512, 512], "pose_33": 33 × [x, y, visibility] in pixels, ...}``."""
    return detections["images"]["astronaut.png"]


@pytest.fixture(scope="session")
def astronaut_landmarks(astronaut) -> list[dict]:
    """The same 33 points as MediaPipe reports them: ``{x, y, visibility}`` normalised to 0-1."""
    w, h = astronaut["size"]
    return [{"x": x / w, "y": y / h, "visibility": v} for x, y, v in astronaut["pose_33"]]
