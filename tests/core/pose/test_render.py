from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame, load_pose, overlay_pose, render_pose
from vitruvian.core.pose.render import BODY_COLORS

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def astronaut_pose(astronaut) -> PoseBatch:
    return load_pose({"pose_33": astronaut["pose_33"], "size": astronaut["size"]}).pose


@pytest.fixture(scope="module")
def astronaut_image() -> torch.Tensor:
    """(1, 3, 512, 512) float32 in [0, 1]."""
    a = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def _pixel(img, x, y):
    return img[0, :, int(round(y)), int(round(x))]


class TestRenderPose:
    def test_smoke(self, astronaut_pose):
        out = render_pose(astronaut_pose)
        assert out.shape == (1, 3, 512, 512) and out.dtype == torch.float32
        assert 0 <= float(out.min()) and float(out.max()) <= 1

    def test_value_joints_drawn_in_openpose_colours(self, astronaut_pose, astronaut):
        out = render_pose(astronaut_pose, min_confidence=0.3)
        x, y, _ = astronaut["pose_33"][0]  # nose: OpenPose joint 0, red
        assert _pixel(out, x, y).tolist() == pytest.approx([c / 255 for c in BODY_COLORS[0]], abs=1 / 255)
        x, y, _ = astronaut["pose_33"][12]  # right shoulder: joint 2
        assert _pixel(out, x, y).tolist() == pytest.approx([c / 255 for c in BODY_COLORS[2]], abs=1 / 255)
        assert float(out[0, :, 5, 5].sum()) == 0  # far from the person: black

    def test_value_low_confidence_not_drawn(self, astronaut_pose, astronaut):
        x, y, c = astronaut["pose_33"][15]  # left wrist, visibility 0.13
        assert c < 0.3
        assert float(_pixel(render_pose(astronaut_pose, min_confidence=0.3), x, y).sum()) == 0
        assert float(_pixel(render_pose(astronaut_pose, min_confidence=0.1), x, y).sum()) > 0

    def test_value_missing_points_never_drawn(self):
        k = torch.zeros(18, 3)  # every point missing (0, 0, 0)
        frame = PoseFrame((Person(body=Part("coco18", k)),), 32, 32)
        assert float(render_pose(PoseBatch((frame,)), min_confidence=0).sum()) == 0

    def test_value_hands_and_face(self):
        hand = torch.tensor([[10.0 + 2 * i, 10.0 + i, 1.0] for i in range(21)])
        face = torch.tensor([[40.0 + (i % 10) * 2, 40.0 + (i // 10) * 2, 1.0] for i in range(70)])
        person = Person(left_hand=Part("hand21", hand), face=Part("face70", face))
        out = render_pose(PoseBatch((PoseFrame((person,), 64, 64),)))
        assert _pixel(out, 10, 10).tolist() == pytest.approx([0, 0, 1])  # hand joints are blue
        assert _pixel(out, 40, 40).tolist() == pytest.approx([1, 1, 1])  # face points are white
        only_body = render_pose(PoseBatch((PoseFrame((person,), 64, 64),)), parts=("body",))
        assert float(only_body.sum()) == 0

    def test_value_size_scales_pose(self, astronaut_pose, astronaut):
        out = render_pose(astronaut_pose, size=(256, 128))
        assert out.shape == (1, 3, 128, 256)
        x, y, _ = astronaut["pose_33"][0]
        assert float(_pixel(out, x / 2, y / 4).sum()) > 0

    def test_value_normalized_frame(self, astronaut_pose):
        # Coordinates are scaled back to the canvas before drawing: the same picture either way.
        assert torch.equal(render_pose(astronaut_pose), render_pose(astronaut_pose.to_normalized()))

    def test_exception(self, astronaut_pose):
        other = PoseFrame((), 64, 48)
        with pytest.raises(PoseFormatError, match=r"frames must share one canvas size to stack, got 64×48 and 512×512; pass size"):
            render_pose(PoseBatch((astronaut_pose[0], other)))
        with pytest.raises(PoseFormatError, match="parts must be among body, hands, face"):
            render_pose(astronaut_pose, parts=("feet",))
        with pytest.raises(PoseFormatError, match="size has canvas_width = 0"):
            render_pose(astronaut_pose, size=(0, 10))


class TestOverlayPose:
    def test_value(self, astronaut_pose, astronaut_image, astronaut):
        out = overlay_pose(astronaut_image, astronaut_pose)
        assert out.shape == astronaut_image.shape
        x, y, _ = astronaut["pose_33"][0]
        assert _pixel(out, x, y).tolist() == pytest.approx([c / 255 for c in BODY_COLORS[0]], abs=1 / 255)
        drawn = render_pose(astronaut_pose).sum(1, keepdim=True) > 0
        untouched = ~drawn.expand_as(out)
        assert torch.equal(out[untouched], astronaut_image[untouched])  # the photo is kept elsewhere

    def test_value_opacity_and_broadcast(self, astronaut_pose, astronaut_image):
        two = torch.cat([astronaut_image, astronaut_image])
        half = overlay_pose(two, astronaut_pose, opacity=0.5)
        assert half.shape == (2, 3, 512, 512)
        assert torch.equal(overlay_pose(two, astronaut_pose, opacity=0.0), two)

    def test_exception(self, astronaut_pose, astronaut_image):
        bhwc = astronaut_image.permute(0, 2, 3, 1)
        with pytest.raises(PoseFormatError, match=r"image must be \(B, 3, H, W\), got \(1, 512, 512, 3\); ComfyUI IMAGE"):
            overlay_pose(bhwc, astronaut_pose)
        two = PoseBatch((astronaut_pose[0],) * 2)
        three = torch.cat([astronaut_image] * 3)
        with pytest.raises(PoseFormatError, match="image batch 3 and pose batch 2 must match"):
            overlay_pose(three, two)
