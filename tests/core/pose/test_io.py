import copy
import json
import random

import pytest
import torch

from vitruvian.core.pose import (
    Part,
    Person,
    PoseBatch,
    PoseFrame,
    detect_format,
    load_pose,
    to_coco_keypoints,
    to_mediapipe_landmarks,
    to_openpose_json,
    to_pose_keypoint,
)


def _flat(k, rng, *, w=512, h=512, missing=()):
    """k keypoints as a flat aux/OpenPose list; values with few digits so JSON text round-trips exactly."""
    out = []
    for i in range(k):
        out += [0.0, 0.0, 0.0] if i in missing else [round(rng.uniform(0, w), 2), round(rng.uniform(0, h), 2), round(rng.uniform(0.05, 1), 4)]
    return out


def _aux_person(rng, **kw):
    return {
        "pose_keypoints_2d": _flat(18, rng, missing={16}, **kw),
        "face_keypoints_2d": _flat(70, rng, **kw),
        "hand_left_keypoints_2d": _flat(21, rng, **kw),
        "hand_right_keypoints_2d": None,
    }


def _aux_list(seed=0):
    rng = random.Random(seed)
    return [
        {"people": [_aux_person(rng), _aux_person(rng)], "canvas_width": 512, "canvas_height": 512},
        {"people": [], "canvas_width": 512, "canvas_height": 512},
    ]


def _people(frames):
    return [f["people"] for f in frames]


def _astronaut_pixels(astronaut) -> PoseBatch:
    return load_pose({"pose_33": astronaut["pose_33"], "size": astronaut["size"]}).pose


class TestPoseKeypoint:
    def test_smoke(self):
        loaded = load_pose(_aux_list())
        assert loaded.format == "pose_keypoint"
        person = loaded.pose[0].people[0]
        assert (person.body.format, person.face.format, person.left_hand.format) == ("coco18", "face70", "hand21")
        assert person.right_hand is None  # aux writes a missing part as null

    def test_value_round_trip_lossless(self):
        data = _aux_list()
        batch = load_pose(json.dumps(data)).pose
        written = to_pose_keypoint(batch)
        assert _people(written) == _people(data)  # the JSON values, real confidences included
        assert load_pose(json.loads(json.dumps(written))).pose.equal(batch)

    def test_value_real_confidences_kept(self):
        data = _aux_list()
        k = load_pose(data).pose[0].people[0].body.keypoints
        expected = torch.tensor(data[0]["people"][0]["pose_keypoints_2d"], dtype=torch.float32).reshape(18, 3)
        assert torch.equal(k, expected)
        assert 0 < float(k[0, 2]) < 1

    def test_value_huchenlei_single_dict(self):
        data = _aux_list()[0]
        loaded = load_pose(data)
        assert loaded.format == "pose_keypoint" and len(loaded.pose) == 1
        assert loaded.pose[0].equal(load_pose([data]).pose[0])

    def test_value_pixels_vs_normalized(self, astronaut):
        # The same real detection written the two ways aux writes it: DWPose in pixels, its OpenPose
        # estimator in 0-1 fractions. Both must land on the same pixels.
        batch = _astronaut_pixels(astronaut)
        pixels, normalized = to_pose_keypoint(batch), to_pose_keypoint(batch, space="normalized")
        for frames in (pixels, normalized):
            for f in frames:
                del f["vitruvian"]  # no declared space: as aux writes it
        a, b = load_pose(pixels), load_pose(normalized)
        assert a.pose[0].space == "pixels" and b.pose[0].space == "normalized"
        assert "normalized" in b.message
        assert b.pose.to_pixels().allclose(a.pose, atol=1e-3)

    def test_value_space_override(self):
        data = _aux_list()
        loaded = load_pose(data, space="normalized")
        assert loaded.pose[0].space == "normalized"

    def test_value_binarize_like_aux(self):
        batch = load_pose(_aux_list()).pose
        written = to_pose_keypoint(batch, binarize=0.3)
        k = torch.tensor(written[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
        src = batch[0].people[0].body.keypoints
        keep = src[:, 2] >= 0.3
        assert set(k[:, 2].tolist()) <= {0.0, 1.0}
        assert torch.equal(k[keep, :2], src[keep, :2]) and torch.equal(k[~keep], torch.zeros(int((~keep).sum()), 3))
        assert "vitruvian" not in written[0]["people"][0]

    def test_value_canvas_rescale(self):
        loaded = load_pose(_aux_list(), canvas=(1024, 256))
        a = load_pose(_aux_list()).pose[0].people[0].body.keypoints
        b = loaded.pose[0].people[0].body.keypoints
        assert torch.allclose(b[:, 0], a[:, 0] * 2) and torch.allclose(b[:, 1], a[:, 1] / 2)
        assert any("rescaled" in n for n in loaded.notes)


class TestOpenPoseJson:
    @pytest.mark.parametrize("k, fmt", [(25, "body25"), (18, "coco18")])
    def test_value_round_trip_lossless(self, k, fmt):
        rng = random.Random(k)
        data = {
            "version": 1.3,
            "people": [
                {
                    "person_id": [-1],
                    "pose_keypoints_2d": _flat(k, rng, w=640, h=480),
                    "face_keypoints_2d": [],
                    "hand_left_keypoints_2d": _flat(21, rng, w=640, h=480),
                    "hand_right_keypoints_2d": _flat(21, rng, w=640, h=480),
                }
            ],
        }
        loaded = load_pose(json.dumps(data), canvas=(640, 480))
        assert loaded.format == "openpose"
        person = loaded.pose[0].people[0]
        assert person.body.format == fmt and person.face is None
        written = to_openpose_json(loaded.pose)
        for key in ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"):
            assert written[0]["people"][0][key] == data["people"][0][key]
        assert load_pose(written).pose.equal(loaded.pose)


class TestCoco:
    def test_value_coco17_file_round_trip(self):
        rng = random.Random(1)
        data = {
            "images": [{"id": 7, "width": 640, "height": 427}, {"id": 9, "width": 300, "height": 200}],
            "annotations": [
                {"image_id": 9, "keypoints": _flat(17, rng, w=300, h=200)},
                {"image_id": 7, "keypoints": _flat(17, rng, w=640, h=427)},
                {"image_id": 7, "keypoints": _flat(17, rng, w=640, h=427)},
            ],
        }
        loaded = load_pose(data)
        assert loaded.format == "coco17"
        assert [len(f.people) for f in loaded.pose] == [2, 1]  # frames follow "images"
        assert (loaded.pose[1].canvas_width, loaded.pose[1].canvas_height) == (300, 200)
        written = to_coco_keypoints(loaded.pose)
        assert written["annotations"][0]["keypoints"] == data["annotations"][1]["keypoints"]
        assert load_pose(written).pose.equal(loaded.pose)

    def test_value_visibility_flags(self):
        rng = random.Random(2)
        flat = _flat(17, rng)
        flat[2::3] = [rng.choice([0, 1, 2]) for _ in range(17)]
        flat[2] = 2
        loaded = load_pose({"keypoints": flat, "width": 512, "height": 512}, format="coco17")
        conf = loaded.pose[0].people[0].body.keypoints[:, 2]
        assert conf.tolist() == [v / 2 for v in flat[2::3]]
        assert any("visibility flags" in n for n in loaded.notes)
        assert to_coco_keypoints(loaded.pose, flags=True)["annotations"][0]["keypoints"] == [float(v) for v in flat]

    def test_value_wholebody_round_trip(self):
        rng = random.Random(3)
        flat = _flat(133, rng)
        loaded = load_pose({"keypoints": flat, "format": "wholebody133", "width": 512, "height": 512})
        assert loaded.format == "wholebody133"
        person = loaded.pose[0].people[0]
        assert {n: p.format for n, p in person.parts()} == {
            "body": "coco17", "feet": "feet6", "face": "face68", "left_hand": "hand21", "right_hand": "hand21"
        }
        assert torch.equal(person.left_hand.keypoints, torch.tensor(flat[91 * 3 : 112 * 3]).reshape(21, 3))
        written = to_coco_keypoints(loaded.pose)
        assert written["annotations"][0]["keypoints"] == flat
        assert load_pose(written).pose.equal(loaded.pose)

    def test_value_wholebody_ground_truth_keys(self):
        rng = random.Random(4)
        flat = _flat(133, rng)
        gt = {
            "keypoints": flat[: 17 * 3],
            "foot_kpts": flat[17 * 3 : 23 * 3],
            "face_kpts": flat[23 * 3 : 91 * 3],
            "lefthand_kpts": flat[91 * 3 : 112 * 3],
            "righthand_kpts": [0.0] * 63,  # an all-zero part is absent
            "width": 512,
            "height": 512,
        }
        loaded = load_pose(gt)
        assert loaded.format == "wholebody133"
        person = loaded.pose[0].people[0]
        assert person.right_hand is None
        expected = load_pose({"keypoints": flat, "width": 512, "height": 512}).pose[0].people[0]
        assert person.left_hand.equal(expected.left_hand) and person.face.equal(expected.face)


class TestMediapipe:
    def test_value_real_astronaut_normalized(self, astronaut, astronaut_landmarks):
        loaded = load_pose(json.dumps(astronaut_landmarks), canvas=(512, 512))
        assert loaded.format == "mediapipe33"
        frame = loaded.pose[0]
        assert frame.space == "normalized" and frame.people[0].body.format == "mediapipe33"
        pixels = frame.to_pixels().people[0].body.keypoints
        assert torch.allclose(pixels, torch.tensor(astronaut["pose_33"], dtype=torch.float32))

    def test_value_round_trip_lossless(self, astronaut_landmarks):
        batch = load_pose(astronaut_landmarks, canvas=(512, 512)).pose
        written = to_mediapipe_landmarks(batch)

        def as_f32(landmarks):  # the type stores float32; JSON carries each as its shortest decimal
            return torch.tensor([[lm["x"], lm["y"], lm["visibility"]] for lm in landmarks], dtype=torch.float32)

        assert torch.equal(as_f32(written[0]["pose_landmarks"][0]), as_f32(astronaut_landmarks))
        assert load_pose(written).pose.equal(batch)

    def test_value_detections_file(self, detections):
        loaded = load_pose(detections, canvas=(512, 512))
        assert [len(f.people) for f in loaded.pose] == [1, 1, 0, 0]  # astronaut, camera, cat, coffee
        assert loaded.pose[0].space == "pixels"

    def test_value_multi_person_and_presence(self, astronaut_landmarks):
        second = [{"x": lm["x"], "y": lm["y"], "z": -0.1, "presence": 0.5} for lm in astronaut_landmarks]
        loaded = load_pose([astronaut_landmarks, second], canvas=(512, 512))
        assert len(loaded.pose[0].people) == 2
        assert set(loaded.pose[0].people[1].body.keypoints[:, 2].tolist()) == {0.5}


class TestCrossFormat:
    """Formats the OpenPose fields cannot hold survive POSE → POSE_KEYPOINT → POSE."""

    def test_value_mediapipe_through_pose_keypoint(self, astronaut):
        batch = _astronaut_pixels(astronaut)
        written = to_pose_keypoint(batch)
        assert len(written[0]["people"][0]["pose_keypoints_2d"]) == 54  # aux still sees COCO-18
        assert load_pose(json.loads(json.dumps(written))).pose.equal(batch)
        assert load_pose(to_openpose_json(batch)).pose.equal(batch)

    def test_value_wholebody_feet_kept(self):
        rng = random.Random(5)
        batch = load_pose({"keypoints": _flat(133, rng), "width": 512, "height": 512}).pose
        assert load_pose(to_pose_keypoint(batch)).pose.equal(batch)
        written = to_openpose_json(batch)
        assert len(written[0]["people"][0]["pose_keypoints_2d"]) == 75  # feet → BODY-25
        assert load_pose(written).pose.equal(batch)

    def test_value_edit_elsewhere_wins(self, astronaut):
        batch = _astronaut_pixels(astronaut)
        written = to_pose_keypoint(batch)
        written[0]["people"][0]["pose_keypoints_2d"][0] += 10  # an editor moved the nose
        loaded = load_pose(written)
        body = loaded.pose[0].people[0].body
        assert body.format == "coco18" and float(body.keypoints[0, 0]) == pytest.approx(232.0)
        assert any("no longer matches" in n for n in loaded.notes)


class TestDetect:
    @pytest.mark.parametrize(
        "data, expected",
        [
            ([], "pose_keypoint"),
            ({"people": [], "canvas_width": 8, "canvas_height": 8}, "pose_keypoint"),
            ({"version": 1.3, "people": []}, "openpose"),
            ({"keypoints": [0.0] * 51}, "coco17"),
            ({"keypoints": [0.0] * 399}, "wholebody133"),
            ({"annotations": [{"image_id": 1, "keypoints": [0.0] * 399}]}, "wholebody133"),
            ([{"x": 0.5, "y": 0.5, "visibility": 1.0}] * 33, "mediapipe33"),
            ({"pose_33": None, "size": [8, 8]}, "mediapipe33"),
        ],
    )
    def test_value(self, data, expected):
        assert detect_format(data) == expected

    def test_smoke_path(self, tmp_path):
        path = tmp_path / "pose.json"
        path.write_text(json.dumps(_aux_list()))
        assert load_pose(path).pose.equal(load_pose(_aux_list()).pose)

    def test_value_explicit_format_wins(self):
        data = {"version": 1.3, "people": [], "canvas_width": 4, "canvas_height": 4}
        assert load_pose(data, format="pose_keypoint").format == "pose_keypoint"


def test_value_batch_from_objects_round_trips():
    torch.manual_seed(0)
    scale = torch.tensor([100.0, 100.0, 1.0])  # pixels for x, y; confidence stays in [0, 1]
    person = Person(
        body=Part("body25", torch.rand(25, 3) * scale),
        face=Part("face68", torch.rand(68, 3) * scale),
        right_hand=Part("hand21", torch.rand(21, 3) * scale),
    )
    batch = PoseBatch((PoseFrame((person, copy.deepcopy(person)), 100, 100),))
    for written in (to_pose_keypoint(batch), to_openpose_json(batch)):
        assert load_pose(json.loads(json.dumps(written))).pose.equal(batch)
