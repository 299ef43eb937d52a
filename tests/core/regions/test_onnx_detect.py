"""The ONNX path end to end: a detector exported at test time in ultralytics' YOLOv8 layout (known
boxes), through onnxruntime, letterbox, decoding, threshold, class-aware NMS and the mapping back."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.errors import ModelNotFoundError
from vitruvian.core.regions import letterbox, load_detector
from vitruvian.core.checks import check_image
from vitruvian.core.regions.onnx_detect import PAD_VALUE

from .conftest import NEGATIVES, PEOPLE, load_photo
from .detector_kit import canvas, draw_box, draw_disc, expected_score

#: One letterboxed input pixel, mapped back to a 600×400 image (scale 320/600), is 1.9 image pixels.
TOLERANCE = 2.0


def _scene() -> tuple[torch.Tensor, list]:
    """A 600×400 image with a red square, a green rectangle and a faint red square (score 0.25)."""
    image = canvas(400, 600)
    known = [("face", (60, 60, 180, 180), 1.0), ("hand", (420, 220, 540, 330), 0.9)]
    for label, box, value in known:
        draw_box(image, box, "red" if label == "face" else "green", value)
    draw_box(image, (260, 330, 300, 370), "red", 0.7)
    return image, known


def test_value_letterbox():
    image = torch.rand(3, 100, 200)
    out, (sx, sy), (left, top) = letterbox(image, (64, 64))
    assert out.shape == (3, 64, 64) and (sx, sy) == (0.32, 0.32) and (left, top) == (0, 16)
    assert bool((out[:, :16] == PAD_VALUE).all()) and bool((out[:, 48:] == PAD_VALUE).all())
    same, scale, pad = letterbox(torch.rand(3, 64, 64), (64, 64))
    assert scale == (1.0, 1.0) and pad == (0, 0)


def test_value_known_boxes_recovered(onnx_models):
    detector = load_detector(onnx_models["bbox"])
    assert detector.names == {0: "face", 1: "hand"} and detector.input_size == (320, 320)
    assert detector.provider == "CPUExecutionProvider"
    image, known = _scene()
    batch = detector(image, threshold=0.5, iou=0.45)
    assert batch.image_sizes == ((400, 600),)
    found = sorted(batch[0], key=lambda r: r.label)
    assert [r.label for r in found] == ["face", "hand"]  # the faint square is under the threshold
    for region, (label, box, value) in zip(found, known):
        assert region.box == pytest.approx(box, abs=TOLERANCE), (label, region.box)
        assert region.score == pytest.approx(expected_score(value), abs=1e-3)
        assert region.mask is None and region.source == "onnx:colour_boxes.onnx"
    # Lower the threshold: the faint square appears, with its own score.
    low = detector(image, threshold=0.1)
    assert sorted(round(r.score, 2) for r in low[0]) == [0.25, 0.75, 1.0]


def test_value_nms_and_max_per_image(onnx_models):
    """Every anchor inside a shape predicts the same box: NMS leaves one; max_per_image keeps the best."""
    detector = load_detector(onnx_models["bbox"])
    image, _ = _scene()
    x, _, _ = letterbox(image[0], detector.input_size)
    raw = torch.from_numpy(detector.session.run(None, {detector.input_name: x[None].numpy()})[0])[0]
    candidates = int((raw[4:].max(dim=0).values >= 0.5).sum())
    assert candidates > 100  # anchors inside the two shapes, each predicting (about) the same box
    assert len(detector(image)[0]) == 2
    (best,) = detector(image, max_per_image=1)[0]
    assert best.label == "face"
    assert [r.label for r in detector(image, labels={"hand"})[0]] == ["hand"]


def test_value_portrait_image_and_batch(onnx_models):
    """A tall image pads left and right; two images give two lists."""
    detector = load_detector(onnx_models["bbox"])
    tall = canvas(500, 250)
    draw_box(tall, (50, 300, 150, 420), "green")
    batch = detector(torch.cat([tall, canvas(500, 250)]))
    assert len(batch) == 2 and len(batch[1]) == 0
    (hand,) = batch[0]
    assert hand.label == "hand" and hand.box == pytest.approx((50, 300, 150, 420), abs=TOLERANCE * 500 / 320)


def test_value_segm_mask_is_the_disc(onnx_models):
    detector = load_detector(onnx_models["segm"])
    image = canvas(300, 451)
    draw_disc(image, (200.0, 150.0), 60.0, "red")
    (face,) = detector(image)[0]
    assert face.box == pytest.approx((140, 90, 260, 210), abs=TOLERANCE)
    h, w = face.mask.shape
    assert 0.70 < float(face.mask.mean()) < 0.86  # π/4 of the box: round, not the rectangle
    full = detector(image).to_masks()[0, 0]
    disc = image[0, 0] > 0
    agree = float((full.bool() == disc).float().mean())
    assert agree > 0.995, agree


def test_value_labels_from_file_name(onnx_models):
    """No ``names`` metadata: a one-class model is labelled from its file name (hand_yolo_test.onnx); a
    model with several classes gets ``class<i>``."""
    image, _ = _scene()
    single = load_detector(onnx_models["unnamed"])
    assert single.names is None
    assert [r.label for r in single(image)[0]] == ["hand"]  # the red square, class 0 of a one-class model
    several = load_detector(onnx_models["unnamed_two"])
    assert sorted(r.label for r in several(image)[0]) == ["class0", "class1"]


@pytest.mark.parametrize("name", NEGATIVES + PEOPLE)
def test_value_real_photos_give_no_colour_boxes(onnx_models, name):
    """Natural photos have no saturated red/green patches: zero regions, and no error."""
    for kind in ("bbox", "segm"):
        batch = load_detector(onnx_models[kind])(load_photo(name))
        assert len(batch) == 1 and batch.count() == 0


def test_value_box_on_a_real_photo(onnx_models):
    """A red square pasted on the coffee photo is found at its place, nothing else is."""
    image = load_photo("coffee.png")
    draw_box(image, (400, 100, 480, 190), "red")
    (face,) = load_detector(onnx_models["bbox"])(image)[0]
    assert face.box == pytest.approx((400, 100, 480, 190), abs=TOLERANCE)


def test_exception(onnx_models, tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        load_detector(tmp_path / "face_yolov8m.onnx", searched=[str(tmp_path), "/somewhere/else"])
    assert "detector 'face_yolov8m.onnx' not found; searched:" in str(caught.value)
    assert "/somewhere/else" in str(caught.value)
    detector = load_detector(onnx_models["bbox"])
    with pytest.raises(ValueError, match=r"got shape \(1, 64, 64, 3\); this looks like ComfyUI's IMAGE layout"):
        detector(torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"image batch is empty \(shape \(0, 3, 64, 64\)\)"):
        detector(torch.zeros(0, 3, 64, 64))
    with pytest.raises(ValueError, match="threshold and iou must be in"):
        detector(torch.zeros(1, 3, 64, 64), threshold=2.0)
    assert check_image(torch.zeros(1, 1, 8, 8), "t").shape == (1, 3, 8, 8)
    assert check_image(torch.zeros(1, 4, 8, 8), "t").shape == (1, 3, 8, 8)
