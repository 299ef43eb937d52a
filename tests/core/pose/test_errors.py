"""Malformed input → PoseFormatError naming the image, person, part and keypoint index."""

import json
import re

import pytest

from vitruvian.core.errors import PoseFormatError, VitruvianError
from vitruvian.core.pose import load_pose


def _aux(person: dict, *, image_index=0, canvas=(512, 512)) -> list:
    ok = {"pose_keypoints_2d": [1.0, 2.0, 0.5] * 18}
    frames = [{"people": [ok], "canvas_width": canvas[0], "canvas_height": canvas[1]} for _ in range(image_index)]
    frames.append({"people": [ok, person], "canvas_width": canvas[0], "canvas_height": canvas[1]})
    return frames


def _raises(data, message: str, **kw):
    with pytest.raises(PoseFormatError) as info:
        load_pose(data, **kw)
    assert message in str(info.value), str(info.value)
    return str(info.value)


class TestPoseKeypointErrors:
    def test_exception_flat_length(self):
        # The brief's own example, character for character.
        _raises(
            _aux({"hand_left_keypoints_2d": [1.0] * 62}),
            "load_pose: image 0, person 1, hand_left_keypoints_2d has 62 values, expected a multiple of 3 "
            "(21 keypoints × [x, y, c] = 63)",
        )

    def test_exception_keypoint_count(self):
        msg = _raises(_aux({"pose_keypoints_2d": [1.0] * 60}, image_index=2), "load_pose: image 2, person 1, pose_keypoints_2d has 60 values (20 keypoints)")
        assert "54 (18 keypoints" in msg and "75 (25 keypoints" in msg

    @pytest.mark.parametrize("bad, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf")])
    def test_exception_not_finite(self, bad, shown):
        values = [1.0] * 63
        values[3 * 7 + 1] = bad
        _raises(_aux({"hand_right_keypoints_2d": values}), f"image 0, person 1, hand_right_keypoints_2d keypoint 7 has y = {shown}")

    def test_exception_nan_in_json_text(self):
        text = json.dumps(_aux({"face_keypoints_2d": [1.0] * 210}))
        text = text.replace("1.0", "NaN", 3 * 18 + 3 * 18 + 1)  # both bodies, then the face's first x
        _raises(text, "image 0, person 0, pose_keypoints_2d keypoint 0 has x = nan")

    @pytest.mark.parametrize("conf", [1.5, -0.1])
    def test_exception_confidence_range(self, conf):
        values = [10.0, 10.0, 0.5] * 18
        values[3 * 4 + 2] = conf
        _raises(_aux({"pose_keypoints_2d": values}), f"image 0, person 1, pose_keypoints_2d keypoint 4 has confidence {conf:g}, expected a value in [0, 1]")

    def test_exception_not_a_number(self):
        values = [10.0, 10.0, 0.5] * 18
        values[5] = "high"
        _raises(_aux({"pose_keypoints_2d": values}), "pose_keypoints_2d keypoint 1 has c = 'high' (str), expected a number")

    def test_exception_nested_triples(self):
        _raises(_aux({"pose_keypoints_2d": [[1.0, 2.0, 0.5]] * 18}), "got nested lists; flatten")

    @pytest.mark.parametrize("canvas, shown", [((0, 512), "canvas_width = 0"), ((512, -4), "canvas_height = -4")])
    def test_exception_canvas(self, canvas, shown):
        _raises(_aux({}, canvas=canvas), f"load_pose: image 0 has {shown}, expected a positive integer")

    def test_exception_canvas_argument(self):
        _raises([], "load_pose: canvas has canvas_width = -1", canvas=(-1, 5))

    def test_exception_missing_canvas(self):
        _raises({"version": 1.3, "people": []}, "load_pose: image 0 has no canvas size")

    def test_exception_person_not_object(self):
        _raises(_aux([1, 2, 3]), "load_pose: image 0, person 1 must be an object")

    def test_exception_animals(self):
        _raises([{"version": "ap10k", "animals": [], "canvas_width": 8, "canvas_height": 8}], "animal poses")


class TestLoadErrors:
    def test_exception_unknown_format(self):
        _raises([], "load_pose: format must be one of auto, openpose, pose_keypoint, coco17, wholebody133, mediapipe33, got 'yaml'", format="yaml")

    @pytest.mark.parametrize("data, shown", [(42, "got int"), ("3", "got int"), ("null", "got null")])
    def test_exception_not_list_or_dict(self, data, shown):
        _raises(data, "load_pose: data must be a JSON list or object")
        _raises(data, shown)

    def test_exception_invalid_json(self):
        _raises('{"people": [', "load_pose: json_text is not valid JSON: Expecting value at line 1 column 13")

    def test_exception_empty(self):
        _raises("  \n", "load_pose: json_text is empty")

    def test_exception_unrecognised(self):
        _raises({"bones": []}, "load_pose: could not recognise the keypoint data")

    def test_value_is_a_value_error(self):
        # Callers that catch ValueError (or the pack's root error) see these too.
        with pytest.raises(ValueError):
            load_pose("[1]")
        with pytest.raises(VitruvianError):
            load_pose("[1]")


class TestOtherFormatErrors:
    def test_exception_coco_flags_mixed(self):
        values = [5.0, 5.0, 2] * 17
        values[3 * 9 + 2] = 3
        _raises({"keypoints": values, "width": 8, "height": 8}, "image 0, person 0, keypoints keypoint 9 has confidence 3")

    def test_exception_coco_length(self):
        _raises({"keypoints": [0.0] * 52, "width": 8, "height": 8}, "image 0, person 0, keypoints has 52 values, expected a multiple of 3")

    def test_exception_coco_format_mismatch(self):
        _raises({"keypoints": [0.0] * 51, "width": 8, "height": 8}, "keypoints has 51 values (17 keypoints), expected 399", format="wholebody133")

    def test_exception_coco_image_id(self):
        _raises({"images": [{"id": 1, "width": 8, "height": 8}], "annotations": [{"image_id": 2, "keypoints": [0.0] * 51}]}, "annotation 0 has image_id 2")

    def test_exception_mediapipe_count(self, astronaut_landmarks):
        _raises(astronaut_landmarks[:32], "load_pose: image 0, person 0, landmarks has 32 landmarks, expected 33", canvas=(8, 8))

    def test_exception_mediapipe_visibility(self, astronaut_landmarks):
        bad = [dict(lm) for lm in astronaut_landmarks]
        del bad[12]["visibility"]
        _raises(bad, "image 0, person 0, landmarks landmark 12 has no visibility", canvas=(8, 8))

    def test_exception_mediapipe_nan(self, astronaut_landmarks):
        bad = [dict(lm) for lm in astronaut_landmarks]
        bad[3]["x"] = float("nan")
        _raises(bad, "image 0, person 0, landmarks landmark 3 has x = nan", canvas=(8, 8))

    def test_exception_mediapipe_needs_canvas(self, astronaut_landmarks):
        msg = _raises(astronaut_landmarks, "load_pose: image 0 has no canvas size")
        assert re.search(r"pass canvas=\(width, height\)", msg)

    def test_exception_detections_second_image(self, detections):
        data = json.loads(json.dumps(detections))
        data["images"]["camera.png"]["pose_33"][5][2] = 2.0
        _raises(data, "load_pose: image 1, person 0, pose_33 landmark 5 has confidence 2", canvas=(512, 512))

    def test_exception_space_for_coco(self):
        _raises({"keypoints": [0.0] * 51, "width": 8, "height": 8}, "space='normalized' applies to openpose/pose_keypoint data only", space="normalized")
