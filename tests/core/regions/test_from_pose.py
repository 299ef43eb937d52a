"""Regions from keypoints: checked against MediaPipe's own face detections on the real photos."""

from __future__ import annotations

import json

import pytest
import torch

from vitruvian.core.errors import PoseFormatError
from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame, load_pose
from vitruvian.core.regions import Region, box_iou, regions_from_pose
from vitruvian.core.regions.from_pose import pose_fit_problem

from .conftest import NEGATIVES, PEOPLE


def _mediapipe_pose(entry: dict) -> PoseBatch:
    """The photo's 33 MediaPipe landmarks as MediaPipe reports them (normalised), read by load_pose."""
    w, h = entry["size"]
    landmarks = [{"x": x / w, "y": y / h, "visibility": v} for x, y, v in entry["pose_33"]]
    return load_pose(json.dumps(landmarks), format="mediapipe33", canvas=(w, h)).pose


def _overlap(a, b) -> tuple[float, bool]:
    """IoU of two boxes, and whether one contains the other."""
    iou = float(box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)))
    inside = lambda p, q: p[0] >= q[0] and p[1] >= q[1] and p[2] <= q[2] and p[3] <= q[3]  # noqa: E731
    return iou, inside(a, b) or inside(b, a)


@pytest.mark.parametrize("name", PEOPLE)
def test_value_face_from_body_overlaps_mediapipe_face(detections, name):
    entry = detections[name]
    batch = regions_from_pose(_mediapipe_pose(entry))
    faces = [r for r in batch[0] if r.label == "face"]
    assert len(faces) == 1
    face, truth = faces[0], entry["faces"][0]["box"]
    iou, contained = _overlap(face.box, truth)
    assert iou > 0.3 or contained, (face.box, truth, iou)
    assert face.source == "keypoints:mediapipe33:estimate"
    # Score = mean confidence of the face points used (nose, eyes, ears, mouth: all visible here).
    assert face.score == pytest.approx(float(face.keypoints[:, 2].mean())) and face.score > 0.9
    # An upright oval, not the box.
    assert 0.5 < float(face.mask.mean()) < 0.75


def test_value_astronaut_face_is_close(detections):
    """On the frontal astronaut face the estimate is within 6 % of MediaPipe's detector box."""
    entry = detections["astronaut.png"]
    face = next(r for r in regions_from_pose(_mediapipe_pose(entry))[0] if r.label == "face")
    iou, _ = _overlap(face.box, entry["faces"][0]["box"])
    assert iou > 0.85, iou


@pytest.mark.parametrize("name", PEOPLE)
def test_value_person_contains_face_and_hands_have_sides(detections, name):
    batch = regions_from_pose(_mediapipe_pose(detections[name]))
    person = next(r for r in batch[0] if r.label == "person")
    face = next(r for r in batch[0] if r.label == "face")
    assert person.mask is None and person.keypoints.shape == (33, 3)
    assert person.box[0] <= face.box[0] and person.box[1] <= face.box[1] and person.box[2] >= face.box[2]
    for hand in (r for r in batch[0] if r.label == "hand"):
        assert hand.handedness in ("left", "right")
        wrist = hand.keypoints[0]  # the wrist comes first
        assert hand.box[0] <= wrist[0] <= hand.box[2] or hand.box[1] <= wrist[1] <= hand.box[3]


def test_value_camera_hands_and_astronaut_clipping(detections):
    camera = regions_from_pose(_mediapipe_pose(detections["camera.png"]))
    assert sorted(r.handedness for r in camera[0] if r.label == "hand") == ["left", "right"]
    astronaut = regions_from_pose(_mediapipe_pose(detections["astronaut.png"]))
    # The astronaut's right hand is below the frame (low visibility): its estimate is clipped to the image.
    (hand,) = [r for r in astronaut[0] if r.label == "hand"]
    assert hand.score < 0.5 and hand.box[3] == 512 and hand.mask.shape[0] == 512 - int(hand.box[1])


@pytest.mark.parametrize("name", NEGATIVES)
def test_value_photos_without_people_give_no_regions(detections, name):
    """What a pose detector returns on the cat and the coffee: a frame with no people."""
    from .conftest import load_photo

    h, w = load_photo(name).shape[-2:]
    assert detections[name]["pose_33"] is None
    pose = load_pose(json.dumps({"people": [], "canvas_width": w, "canvas_height": h})).pose
    batch = regions_from_pose(pose, [(h, w)])
    assert len(batch) == 1 and batch.count() == 0 and batch.to_masks().sum() == 0


# ---------------------------------------------------------------------------------- landmark hulls


def _face68(cx=100.0, cy=100.0, r=30.0, conf=0.9) -> torch.Tensor:
    """A plausible face-68 layout: jaw on the lower half of an ellipse, brows, nose, eyes, lips."""
    import math

    pts = []
    for i in range(17):  # jaw: from the right ear round the chin to the left ear
        a = math.pi * (1 - i / 16)
        pts.append((cx + r * math.cos(a), cy + 1.2 * r * math.sin(a) * 0.9 + 0.1 * r))
    pts += [(cx - r * 0.7 + i * r * 0.15, cy - 0.5 * r) for i in range(5)]  # right brow
    pts += [(cx + r * 0.1 + i * r * 0.15, cy - 0.5 * r) for i in range(5)]  # left brow
    pts += [(cx, cy - 0.3 * r + i * 0.15 * r) for i in range(4)]  # nose bridge
    pts += [(cx - 0.2 * r + i * 0.1 * r, cy + 0.35 * r) for i in range(5)]  # lower nose
    for ex in (-0.4, 0.4):  # eyes
        pts += [(cx + ex * r + 0.12 * r * math.cos(t * math.pi / 3), cy - 0.2 * r + 0.06 * r * math.sin(t * math.pi / 3))
                for t in range(6)]
    pts += [(cx + 0.35 * r * math.cos(t * math.pi / 6), cy + 0.65 * r + 0.12 * r * math.sin(t * math.pi / 6))
            for t in range(12)]  # outer lip
    pts += [(cx + 0.25 * r * math.cos(t * math.pi / 4), cy + 0.65 * r + 0.05 * r * math.sin(t * math.pi / 4))
            for t in range(8)]  # inner lip
    return torch.tensor([[x, y, conf] for x, y in pts], dtype=torch.float32)


def _hand21(x0=300.0, y0=200.0, conf=0.8) -> torch.Tensor:
    """An open hand pointing up: wrist, then 4 points per finger fanning out."""
    pts = [(x0, y0)]
    for f in range(5):
        dx = (f - 2) * 9.0
        pts += [(x0 + dx * (j + 1) / 4 * 1.2, y0 - 12 - 11 * j) for j in range(4)]
    return torch.tensor([[x, y, conf] for x, y in pts], dtype=torch.float32)


def _frame(person: Person, w=512, h=512) -> PoseBatch:
    return PoseBatch((PoseFrame((person,), w, h),))


def test_value_face_hull_is_not_a_rectangle():
    face68 = _face68()
    batch = regions_from_pose(_frame(Person(face=Part("face68", face68))), labels=["face"])
    (face,) = batch[0]
    assert face.source == "keypoints:face68:hull" and face.score == pytest.approx(0.9)
    h, w = face.mask.shape
    assert 0.5 * h * w < float(face.mask.sum()) < 0.9 * h * w  # fewer pixels than the box
    full = batch.to_masks()[0, 0]
    for x, y, _ in face68.tolist():  # every landmark is inside the (grown) hull
        assert full[int(y), int(x)] == 1
    assert full[int(face.box[1]) + 1, int(face.box[0]) + 1] == 0  # a box corner is not


def test_value_hand_hull_has_handedness_and_keypoints():
    hand21 = _hand21()
    person = Person(right_hand=Part("hand21", hand21))
    (hand,) = regions_from_pose(_frame(person), labels=["hand"])[0]
    assert (hand.label, hand.handedness, hand.source) == ("hand", "right", "keypoints:hand21:hull")
    assert torch.equal(hand.keypoints, hand21) and hand.score == pytest.approx(0.8)
    assert float(hand.mask.mean()) < 0.9


def test_value_unconfident_hand_part_falls_back_to_the_body():
    body = torch.zeros(18, 3)
    body[3] = torch.tensor([100.0, 100.0, 0.9])  # right elbow
    body[4] = torch.tensor([100.0, 160.0, 0.7])  # right wrist, forearm pointing down
    weak = _hand21(conf=0.1)
    person = Person(body=Part("coco18", body), right_hand=Part("hand21", weak))
    (hand,) = regions_from_pose(_frame(person), labels=["hand"])[0]
    assert hand.source == "keypoints:coco18:estimate" and hand.handedness == "right"
    assert hand.score == pytest.approx(0.8)  # mean of elbow and wrist
    cx, cy = (hand.box[0] + hand.box[2]) / 2, (hand.box[1] + hand.box[3]) / 2
    assert cx == pytest.approx(100.0) and cy > 160  # beyond the wrist, away from the elbow
    assert hand.width == pytest.approx(0.75 * 60)


def test_value_coco_face_estimate():
    body = torch.zeros(18, 3)
    for i, (x, y) in {0: (200, 110), 14: (190, 100), 15: (210, 100), 16: (180, 104), 17: (220, 104)}.items():
        body[i] = torch.tensor([x, y, 0.8])
    (face,) = regions_from_pose(_frame(Person(body=Part("coco18", body))), labels=["face"])[0]
    assert face.source == "keypoints:coco18:estimate"
    assert face.box[0] < 180 and face.box[2] > 220 and face.box[1] < 100 < 110 < face.box[3]


def test_value_canvas_rescaled_to_the_image():
    person = Person(right_hand=Part("hand21", _hand21(x0=150.0, y0=100.0)))
    small = PoseBatch((PoseFrame((person,), 256, 256),))
    (hand,) = regions_from_pose(small, [(512, 512)], labels=["hand"])[0]
    (same,) = regions_from_pose(small, labels=["hand"])[0]
    assert hand.box == pytest.approx(tuple(2 * v for v in same.box), abs=1e-3)


def test_value_pose_fit_rule():
    """Another resolution of the same picture is rescaled; a tiny image, another aspect ratio or a rescale by more
    than 32× either way is refused (a 512² pose on a 1×1 image is not the same picture)."""
    assert pose_fit_problem((512, 512), (512, 512)) == ""
    assert pose_fit_problem((512, 768), (1024, 1536)) == ""  # DWPose at 512 for a 1024×1536 image
    assert pose_fit_problem((512, 512), (16, 16)) == ""  # 32×: the limit, and the smallest image
    assert pose_fit_problem((64, 64), (2048, 2048)) == ""
    assert pose_fit_problem((512, 512), (1, 1), 3) == (
        "pose 3 has a 512×512 canvas but image 3 is 1×1: an image of at least 16×16 pixels is expected for "
        "keypoints (no face or hand fits in less); use the full-size image")
    assert "an image of at least 16×16 pixels is expected" in pose_fit_problem((8, 8), (8, 8))  # even at the canvas size
    assert "rescaling the pose 64× (more than 32× either way)" in pose_fit_problem((1024, 1024), (16, 16))
    assert "rescaling the pose 64×" in pose_fit_problem((32, 32), (2048, 2048))
    assert "the aspect ratios differ" in pose_fit_problem((512, 256), (512, 512))


def test_exception_pose():
    person = Person(right_hand=Part("hand21", _hand21(x0=150.0, y0=100.0)))
    pose = PoseBatch((PoseFrame((person,), 256, 256),))
    with pytest.raises(PoseFormatError, match=r"pose 0 has a 256×256 canvas but image 0 is 512×300; the aspect "
                                              r"ratios differ"):
        regions_from_pose(pose, [(300, 512)])
    with pytest.raises(PoseFormatError, match=r"pose 0 has a 256×256 canvas but image 0 is 1×1: an image of at "
                                              r"least 16×16 pixels is expected"):
        regions_from_pose(pose, [(1, 1)])
    with pytest.raises(PoseFormatError, match=r"rescaling the pose 64× \(more than 32× either way\)"):
        regions_from_pose(pose, [(16384, 16384)])
    with pytest.raises(ValueError, match="pose has 1 frames but there are 2 images"):
        regions_from_pose(pose, [(256, 256), (256, 256)])
    with pytest.raises(ValueError, match=r"labels must be among face, hand, person, got \['feet'\]"):
        regions_from_pose(pose, labels=["feet"])
    with pytest.raises(TypeError, match="pose must be a PoseBatch, got list"):
        regions_from_pose([])


def test_value_regions_are_inside_the_image():
    """A person at the image corner: every region is clipped to the image (RegionBatch checks it)."""
    hand = _hand21(x0=5.0, y0=40.0)
    batch = regions_from_pose(_frame(Person(left_hand=Part("hand21", hand)), w=64, h=64))
    for _, _, r in batch.flat():
        assert isinstance(r, Region) and r.box[0] >= 0 and r.box[1] >= 0 and r.box[2] <= 64 and r.box[3] <= 64
