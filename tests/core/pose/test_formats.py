import pytest
import torch

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import FORMATS, convert_body, get_format, join_wholebody, split_wholebody
from vitruvian.core.pose.formats import WHOLEBODY133_LAYOUT

# (keypoints, bones) per format: OpenPose, COCO and MediaPipe's published tables.
EXPECTED = {
    "coco18": (18, 17),
    "body25": (25, 24),
    "coco17": (17, 19),
    "mediapipe33": (33, 35),
    "feet6": (6, 2),
    "face68": (68, 73),
    "face70": (70, 77),
    "hand21": (21, 20),
}


class TestTables:
    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_cardinality(self, name):
        f = get_format(name)
        assert (f.num_keypoints, len(f.bones)) == EXPECTED[name]

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_value_tables_are_consistent(self, name):
        f = FORMATS[name]
        assert len(set(f.joints)) == f.num_keypoints, "joint names must be unique"
        assert all(0 <= i < f.num_keypoints and 0 <= j < f.num_keypoints and i != j for i, j in f.bones)
        assert len({frozenset(b) for b in f.bones}) == len(f.bones), "no duplicate bones"

    def test_value_shared_names(self):
        # The same joint is at the positions each format's documentation gives it.
        assert get_format("coco18").index("left_shoulder") == 5
        assert get_format("coco17").index("left_shoulder") == 5
        assert get_format("body25").index("mid_hip") == 8
        assert get_format("mediapipe33").index("right_shoulder") == 12
        assert get_format("hand21").index("index_tip") == 8
        assert get_format("face70").index("right_pupil") == 68

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="format must be one of .*coco18.*got 'coco19'"):
            get_format("coco19")


class TestConvertBody:
    def test_smoke(self):
        assert convert_body(torch.rand(17, 3), "coco17", "coco18").shape == (18, 3)

    def test_value_neck_from_shoulders(self):
        k = torch.zeros(17, 3)
        k[5] = torch.tensor([100.0, 50.0, 0.9])  # left shoulder
        k[6] = torch.tensor([60.0, 54.0, 0.4])  # right shoulder
        out = convert_body(k, "coco17", "coco18")
        assert out[1].tolist() == pytest.approx([80.0, 52.0, 0.4])  # midpoint, min confidence
        assert out[5].tolist() == pytest.approx(k[5].tolist())  # coco18 left_shoulder
        assert out[2].tolist() == pytest.approx(k[6].tolist())  # coco18 right_shoulder

    def test_value_body25_keeps_its_neck(self):
        k = torch.rand(25, 3)
        out = convert_body(k, "body25", "coco18")
        assert torch.equal(out[:8], k[:8])  # nose .. left wrist share positions
        assert torch.equal(out[8:14], k[9:15])  # hips, knees, ankles (mid-hip dropped)
        assert torch.equal(out[14:], k[15:19])  # eyes, ears (feet dropped)

    def test_value_identity(self):
        k = torch.rand(18, 3)
        assert torch.equal(convert_body(k, "coco18", "coco18"), k)

    def test_value_mediapipe_real_astronaut(self, astronaut):
        k = torch.tensor(astronaut["pose_33"], dtype=torch.float32)
        out = convert_body(k, "mediapipe33", "coco18")
        mp = get_format("mediapipe33")
        for i, joint in enumerate(get_format("coco18").joints):
            if joint == "neck":
                a, b = k[mp.index("left_shoulder")], k[mp.index("right_shoulder")]
                assert out[i, :2].tolist() == pytest.approx(((a[:2] + b[:2]) / 2).tolist())
                assert float(out[i, 2]) == pytest.approx(min(float(a[2]), float(b[2])))
            else:
                assert torch.equal(out[i], k[mp.index(joint)]), joint

    def test_value_to_body25_uses_feet(self):
        body, feet = torch.rand(17, 3), torch.rand(6, 3)
        extra = dict(zip(get_format("feet6").joints, feet))
        out = convert_body(body, "coco17", "body25", extra=extra)
        assert torch.equal(out[19:], feet)  # BODY-25 feet order = COCO-WholeBody feet order
        assert float(out[8, 2]) == pytest.approx(min(float(body[11, 2]), float(body[12, 2])))  # mid-hip

    def test_value_missing_joint_is_zero(self):
        out = convert_body(torch.rand(17, 3), "coco17", "body25")
        assert torch.equal(out[19:], torch.zeros(6, 3))

    def test_exception(self):
        with pytest.raises(PoseFormatError, match="'hand21' is a hand format"):
            convert_body(torch.rand(21, 3), "hand21", "coco18")
        with pytest.raises(PoseFormatError, match=r"keypoints must be \(17, 3\) for coco17, got \(18, 3\)"):
            convert_body(torch.rand(18, 3), "coco17", "coco18")


class TestWholebody:
    def test_cardinality(self):
        parts = split_wholebody(torch.rand(133, 3))
        assert {k: v.shape[0] for k, v in parts.items()} == {
            "body": 17, "feet": 6, "face": 68, "left_hand": 21, "right_hand": 21
        }
        assert WHOLEBODY133_LAYOUT[-1][-1] == 133

    def test_value_round_trip(self):
        k = torch.rand(133, 3)
        assert torch.equal(join_wholebody(split_wholebody(k)), k)

    def test_exception(self):
        with pytest.raises(PoseFormatError, match=r"must be \(133, 3\), got \(134, 3\)"):
            split_wholebody(torch.rand(134, 3))
