"""Fixtures for the pose-adapter tests: real poses (MediaPipe on astronaut.png) and tiny adapters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session")
def astronaut_pose() -> PoseBatch:
    """The 33 MediaPipe landmarks of astronaut.png (512×512, pixels) as a one-image PoseBatch."""
    det = json.loads((DATA / "detections.json").read_text())["images"]["astronaut.png"]
    body = Part("mediapipe33", torch.tensor(det["pose_33"], dtype=torch.float32).clamp(0))
    w, h = det["size"]
    return PoseBatch((PoseFrame((Person(body=body),), w, h),))


def hand(seed: int = 0, *, center=(0.5, 0.5), scale=0.1) -> Part:
    """A random hand21 part around ``center`` (fractions of a 1×1 canvas), all confidences 1."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.tensor(center) + (torch.rand(21, 2, generator=g) - 0.5) * scale
    return Part("hand21", torch.cat([xy, torch.ones(21, 1)], dim=1))
