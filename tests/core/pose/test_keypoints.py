import pytest
import torch

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame


def _frame(space="pixels", w=640, h=480):
    torch.manual_seed(0)
    k = torch.rand(18, 3) * torch.tensor([w, h, 1.0]) if space == "pixels" else torch.rand(18, 3)
    person = Person(body=Part("coco18", k), left_hand=Part("hand21", torch.rand(21, 3)))
    return PoseFrame((person,), w, h, space)


class TestPart:
    def test_smoke(self):
        assert Part("hand21", torch.zeros(21, 3)).num_keypoints == 21

    def test_value_casts_to_float32(self):
        assert Part("hand21", torch.zeros(21, 3, dtype=torch.float64)).keypoints.dtype == torch.float32

    def test_exception(self):
        with pytest.raises(PoseFormatError, match=r"must be \(21, 3\), got \(20, 3\)"):
            Part("hand21", torch.zeros(20, 3))
        bad = torch.zeros(21, 3)
        bad[4, 1] = float("nan")
        with pytest.raises(PoseFormatError, match="keypoint 4 .* must be finite"):
            Part("hand21", bad)
        bad = torch.zeros(21, 3)
        bad[7, 2] = 1.5
        with pytest.raises(PoseFormatError, match=r"keypoint 7 has confidence 1.5, expected \[0, 1\]"):
            Part("hand21", bad)


class TestPerson:
    def test_smoke(self):
        p = Person(body=Part("coco17", torch.rand(17, 3)), feet=Part("feet6", torch.rand(6, 3)))
        assert [name for name, _ in p.parts()] == ["body", "feet"]

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="left_hand must hold a hand format, got 'face68'"):
            Person(left_hand=Part("face68", torch.rand(68, 3)))


class TestPoseFrame:
    @pytest.mark.parametrize("w, h", [(0, 512), (512, -1), (512.5, 512), (True, 512)])
    def test_exception_canvas(self, w, h):
        with pytest.raises(PoseFormatError, match="expected a positive integer"):
            PoseFrame((), w, h)

    def test_exception_space(self):
        with pytest.raises(PoseFormatError, match="space must be one of pixels, normalized, got 'px'"):
            PoseFrame((), 8, 8, "px")

    def test_value_normalize_round_trip(self):
        frame = _frame()
        norm = frame.to_normalized()
        assert norm.space == "normalized"
        body = norm.people[0].body.keypoints
        assert float(body[:, 0].max()) <= 1 and float(body[:, 1].max()) <= 1
        # Confidences are never touched by a space conversion.
        assert torch.equal(body[:, 2], frame.people[0].body.keypoints[:, 2])
        assert PoseBatch((norm.to_pixels(),)).allclose(PoseBatch((frame,)), atol=1e-3)

    def test_value_exact_scale(self):
        k = torch.tensor([[0.25, 0.5, 0.7]] * 18)
        frame = PoseFrame((Person(body=Part("coco18", k)),), 640, 480, "normalized").to_pixels()
        assert frame.people[0].body.keypoints[0].tolist() == pytest.approx([160.0, 240.0, 0.7])

    def test_value_resized(self):
        frame = _frame(w=100, h=50)
        big = frame.resized(200, 200)
        a, b = frame.people[0].body.keypoints, big.people[0].body.keypoints
        assert torch.allclose(b[:, 0], a[:, 0] * 2) and torch.allclose(b[:, 1], a[:, 1] * 4)

    def test_value_to_pixels_noop(self):
        frame = _frame()
        assert frame.to_pixels() is frame


class TestPoseBatch:
    def test_smoke(self):
        batch = PoseBatch((_frame(), _frame("normalized")))
        assert len(batch) == 2 and batch.num_people == 2
        assert {f.space for f in batch.to_pixels()} == {"pixels"}
        assert "2 images, 2 people" in batch.summary()

    def test_value_equal(self):
        a, b = PoseBatch((_frame(),)), PoseBatch((_frame(),))
        assert a.equal(b)
        assert not a.equal(PoseBatch((_frame(w=641),)))
