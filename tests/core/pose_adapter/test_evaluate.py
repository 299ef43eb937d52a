"""Keypoint error with an ONNX heatmap estimator exported here from a tiny torch module."""
from __future__ import annotations

import math

import pytest
import torch

from vitruvian.core.errors import ConfigError, PoseFormatError
from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame
from vitruvian.core.pose_adapter.evaluate import THRESHOLDS, OnnxHeatmapEstimator, keypoint_error, main, pose_error

from .onnx_models import H, W, BrightestSpot, ConstantHeatmaps, export_onnx, peaks_px


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    return export_onnx(ConstantHeatmaps(), tmp_path_factory.mktemp("onnx") / "constant.onnx")


def _peaks_px(scale=1.0):
    return peaks_px(round(scale * W), round(scale * H))


def _target(xy, w=W, h=H, conf=1.0) -> PoseBatch:
    kp = torch.cat([xy, torch.full((17, 1), conf)], dim=1)
    return PoseBatch((PoseFrame((Person(body=Part("coco17", kp)),), w, h),))


def test_value_onnx_estimator_decodes_peaks(constant_model):
    est = OnnxHeatmapEstimator(constant_model, mean=(0, 0, 0), std=(1, 1, 1))
    people = est(torch.rand(2, 3, 2 * H, 2 * W))  # any image size: scaled back to its pixels
    assert len(people) == 2 and len(people[0]) == 1 and people[0][0].shape == (17, 3)
    torch.testing.assert_close(people[1][0][:, :2], _peaks_px(2.0))
    torch.testing.assert_close(people[0][0][:, 2], torch.full((17,), 0.9))


def test_value_metrics_exact_and_shifted(constant_model):
    est = OnnxHeatmapEstimator(constant_model)
    images = torch.rand(1, 3, H, W)
    exact = pose_error(images, _target(_peaks_px()), est)
    assert exact.ap == 1.0 and exact.mean_distance == pytest.approx(0, abs=1e-6) and exact.detected == 1.0
    peaks = _peaks_px()
    diag = float((peaks.max(0).values - peaks.min(0).values).norm())
    shift = 0.12 * diag  # every keypoint 12 % of the box diagonal away (the box keeps its size)
    moved = pose_error(images, _target(peaks + torch.tensor([shift, 0.0])), est)
    assert moved.mean_distance == pytest.approx(0.12, rel=1e-4)
    assert moved.mean_distance_px == pytest.approx(shift, rel=1e-4)
    assert moved.ap == pytest.approx(sum(th >= 0.12 for th in THRESHOLDS) / len(THRESHOLDS))
    # A pose on a 2x canvas is scaled to the image: same result.
    assert pose_error(images, _target(2 * peaks, 2 * W, 2 * H), est).ap == 1.0


def test_value_missed_and_invisible_keypoints(constant_model):
    est = OnnxHeatmapEstimator(constant_model)
    peaks = _peaks_px()
    kp = torch.cat([peaks, torch.ones(17, 1)], dim=1)
    kp[:5, 2] = 0.1  # the face is not in the target: not scored
    target = PoseBatch((PoseFrame((Person(body=Part("coco17", kp)),), W, H),))
    report = keypoint_error([[torch.cat([peaks, torch.ones(17, 1)], 1)]], target, image_size=(W, H))
    assert report.ap == 1.0
    missed = torch.cat([peaks, torch.ones(17, 1)], 1)
    missed[5:9, 2] = 0.0  # the estimator misses 4 of the 12 scored keypoints
    report = keypoint_error([[missed]], target, image_size=(W, H))
    assert report.ap == pytest.approx(8 / 12) and report.detected == pytest.approx(8 / 12)
    nobody = keypoint_error([[]], target, image_size=(W, H))
    assert nobody.ap == 0 and nobody.detected == 0 and math.isnan(nobody.mean_distance)


def test_value_estimator_follows_the_image(tmp_path):
    est = OnnxHeatmapEstimator(export_onnx(BrightestSpot(), tmp_path / "bright.onnx"), mean=(0, 0, 0), std=(1, 1, 1))
    image = torch.zeros(1, 3, H, W)
    image[:, :, 40:44, 8:12] = 1.0
    (person,) = est(image)[0]
    torch.testing.assert_close(person[:, :2], torch.tensor([[9.5, 41.5]]).expand(17, 2))


def test_smoke_cli(constant_model, tmp_path, capsys):
    import json

    from PIL import Image

    from vitruvian.core.pose import to_openpose_json

    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    (tmp_path / "pose.json").write_text(json.dumps(to_openpose_json(_target(_peaks_px()))))
    assert main([str(tmp_path / "a.png"), "--pose", str(tmp_path / "pose.json"), "--model", str(constant_model)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ap"] == 1.0 and out["detected"] == 1.0


def test_exception(constant_model):
    with pytest.raises(ConfigError, match="keypoint_format must be one of"):
        OnnxHeatmapEstimator(constant_model, keypoint_format="hand21")
    with pytest.raises(PoseFormatError, match="target must have 1 frame or one per image"):
        keypoint_error([[], []], PoseBatch(tuple(_target(_peaks_px()).frames * 3)), image_size=(W, H))
    empty = PoseBatch((PoseFrame((Person(body=Part("coco17", torch.zeros(17, 3))),), W, H),))
    with pytest.raises(PoseFormatError, match="target image 0 must have visible coco17 keypoints"):
        keypoint_error([[]], empty, image_size=(W, H))
