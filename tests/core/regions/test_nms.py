"""NMS in plain torch: values against hand-worked cases."""

import torch

import pytest

from vitruvian.core.regions import Region, RegionBatch, batched_nms, box_iou, merge_regions, nms


def test_value_box_iou():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert torch.allclose(iou[0], torch.tensor([50 / 150, 0.0, 1.0]))
    assert torch.equal(iou[1], torch.zeros(3))  # an empty box overlaps nothing (no 0/0)


def test_value_nms_keeps_best_and_distinct():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.4, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]  # 0 and 3 overlap box 1 by > 0.5
    assert nms(boxes, scores, 0.95).tolist() == [1, 3, 0, 2]  # nothing overlaps that much: best first
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_value_batched_nms_is_class_aware():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.6, 0.9, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.5).tolist() == [1]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_value_merge_regions():
    left = Region("hand", (10, 10, 30, 30), 0.6, handedness="left")
    right = Region("hand", (12, 12, 32, 32), 0.7, handedness="right")  # overlaps the left hand: both stay
    face = Region("face", (50, 0, 70, 20), 0.5)
    pose = RegionBatch(((left, right, face),), ((64, 80),))
    better_face = Region("face", (51, 1, 71, 21), 0.9, source="onnx:face.onnx")
    worse_hand = Region("hand", (11, 11, 31, 31), 0.65, source="onnx:hand.onnx")  # loses to the right hand
    far_hand = Region("hand", (0, 40, 10, 50), 0.2, source="onnx:hand.onnx")
    detected = RegionBatch(((better_face, worse_hand, far_hand),), ((64, 80),))
    merged = merge_regions(pose, detected, iou=0.45)
    assert [(r.label, r.score) for r in merged[0]] == [("face", 0.9), ("hand", 0.7), ("hand", 0.6), ("hand", 0.2)]
    assert merged[0][0] is better_face and merged[0][1] is right
    assert len(merge_regions(pose, detected, max_per_image=2)[0]) == 2
    empty = RegionBatch(((),), ((64, 80),))
    assert [r.score for r in merge_regions(pose, empty)[0]] == [0.7, 0.6, 0.5]
    with pytest.raises(ValueError, match="both batches must have the same image sizes"):
        merge_regions(pose, RegionBatch(((),), ((8, 8),)))
