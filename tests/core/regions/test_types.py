"""Region and RegionBatch: validation, masks, scores, filtering and the JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

from vitruvian.core.regions import Region, RegionBatch, pixel_box, region_mask


def _batch() -> RegionBatch:
    face = Region("face", (10.5, 8.0, 30.2, 32.0), 0.9, mask=torch.rand(24, 20).round(),
                  keypoints=torch.rand(5, 3), source="keypoints:face68:hull")
    hand = Region("hand", (40, 40, 50, 60), 0.6, handedness="left", source="onnx:hand.onnx")
    person = Region("person", (0, 0, 64, 64), 0.8, scores={"sharpness": 0.5})
    return RegionBatch(((face, hand), (person,), ()), ((64, 64),) * 3)


def test_smoke():
    batch = _batch()
    assert len(batch) == 3 and batch.count() == 3 and batch.count("hand") == 1
    assert [(b, i, r.label) for b, i, r in batch.flat()] == [(0, 0, "face"), (0, 1, "hand"), (1, 0, "person")]
    assert [len(per_image) for per_image in batch] == [2, 1, 0]
    assert batch.summary() == "3 images: 1 face, 1 hand, 1 person"
    assert RegionBatch().summary() == "0 images: no regions"


def test_value_region_mask_pastes_the_crop():
    mask = torch.zeros(4, 6)
    mask[1:3, 2:5] = 1
    r = Region("face", (10.2, 20.7, 15.5, 23.1), 1.0, mask=mask)
    assert pixel_box(r) == (10, 20, 16, 24)
    full = region_mask(r, 32, 32)
    assert full.sum() == 6 and torch.equal(full[20:24, 10:16], mask)
    # No mask: the box's pixel extent is the shape.
    assert region_mask(Region("hand", (2, 2, 4, 5), 1.0), 8, 8).sum() == 6


def test_value_mask_of_other_size_is_resized_to_the_box():
    r = Region("face", (0, 0, 8, 8), 1.0, mask=torch.ones(2, 2))
    assert r.crop_mask().shape == (8, 8) and bool((r.crop_mask() == 1).all())


def test_value_to_masks_combines_and_filters():
    a = Region("face", (0, 0, 4, 4), 1.0, mask=torch.full((4, 4), 0.6))
    b = Region("hand", (2, 2, 6, 6), 1.0, mask=torch.full((4, 4), 0.6))
    batch = RegionBatch(((a, b),), ((8, 8),))
    assert batch.to_masks()[0, 0, 3, 3] == pytest.approx(0.6)
    assert batch.to_masks(combine="sum")[0, 0, 3, 3] == 1.0  # 1.2 clipped
    only_hand = batch.to_masks("hand")
    assert only_hand[0, 0, 1, 1] == 0 and only_hand[0, 0, 5, 5] == pytest.approx(0.6)
    assert batch.to_masks(["face", "hand"]).shape == (1, 1, 8, 8)


def test_value_with_scores_and_filter():
    batch = _batch()
    scored = batch.with_scores("facescore", [[3.0, 1.0], [2.0], []])
    assert [r.scores.get("facescore") for _, _, r in scored.flat()] == [3.0, 1.0, 2.0]
    assert scored[1][0].scores == {"sharpness": 0.5, "facescore": 2.0}
    assert batch[1][0].scores == {"sharpness": 0.5}  # the original is unchanged
    assert batch.filter("face,hand").count() == 2 and batch.filter(min_score=0.7).count() == 2
    assert len(batch.filter(["person"])) == 3  # images stay, possibly empty


def test_value_json_round_trip_is_lossless():
    batch = _batch()
    text = json.dumps(batch.to_dict())
    back = RegionBatch.from_dict(json.loads(text))
    assert back.image_sizes == batch.image_sizes
    for (_, _, a), (_, _, b) in zip(batch.flat(), back.flat()):
        assert (a.label, a.box, a.score, a.handedness, a.source, a.scores) == (b.label, b.box, b.score, b.handedness,
                                                                                b.source, b.scores)
        assert (a.mask is None and b.mask is None) or torch.equal(a.mask, b.mask)
        assert (a.keypoints is None and b.keypoints is None) or torch.equal(a.keypoints, b.keypoints)
    light = batch.to_dict(masks=False)
    assert "mask" not in light["regions"][0][0] and RegionBatch.from_dict(light)[0][0].mask is None


def test_value_clipped():
    mask = torch.zeros(10, 10)
    mask[:, 5:] = 1  # the right half, which is the part inside the image
    r = Region("hand", (-5, 0, 5, 10), 0.5, mask=mask)
    c = r.clipped(20, 20)
    assert c.box == (0, 0, 5, 10) and c.mask.shape == (10, 5) and bool((c.mask == 1).all())
    assert r.clipped(20, 20) is not r and Region("hand", (1, 1, 2, 2), 0.5).clipped(4, 4).box == (1, 1, 2, 2)
    assert Region("hand", (30, 30, 40, 40), 0.5).clipped(20, 20) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"box": (10, 10, 5, 20)}, "box must have x0 < x1 and y0 < y1"),
        ({"box": (0, 0, float("nan"), 1)}, "box must be 4 finite numbers"),
        ({"box": (0, 0, 1)}, "box must be 4 finite numbers"),
        ({"score": 1.5}, "score must be a confidence in [0, 1], got 1.5"),
        ({"label": ""}, "label must be a non-empty str"),
        ({"mask": torch.ones(2, 2, 2)}, "mask must be (h, w) over the box, got shape (2, 2, 2)"),
        ({"mask": torch.full((2, 2), 2.0)}, "mask values must be in [0, 1]"),
        ({"mask": torch.ones(2, 2, dtype=torch.uint8)}, "mask must be a float tensor"),
        ({"keypoints": torch.ones(5, 2)}, "keypoints must be (K, 3) x, y, confidence"),
        ({"handedness": "both"}, "handedness must be 'left', 'right' or None, got 'both'"),
    ],
)
def test_exception_region(kwargs, message):
    args = {"label": "face", "box": (0, 0, 4, 4), "score": 0.5, **kwargs}
    with pytest.raises((ValueError, TypeError)) as caught:
        Region(**args)
    assert message in str(caught.value)


def test_exception_batch():
    inside = Region("face", (0, 0, 4, 4), 0.5)
    with pytest.raises(ValueError, match=r"image_sizes must have one \(H, W\) per image, got 1 sizes for 2 images"):
        RegionBatch(((inside,), ()), ((8, 8),))
    with pytest.raises(ValueError, match=r"outside its 3×8 image; clip it first with Region.clipped"):
        RegionBatch(((inside,),), ((8, 3),))
    with pytest.raises(ValueError, match="images must share one size"):
        RegionBatch(((), ()), ((8, 8), (8, 9))).to_masks()
    with pytest.raises(ValueError, match="combine must be one of max, sum, got 'mean'"):
        RegionBatch(((),), ((8, 8),)).to_masks(combine="mean")
    with pytest.raises(ValueError, match=r"values_per_image must match the regions per image \[1, 0\], got \[1, 1\]"):
        RegionBatch(((inside,), ()), ((8, 8),) * 2).with_scores("x", [[1.0], [2.0]])
    with pytest.raises(ValueError, match="data must be a dict with 'regions' and 'image_sizes'"):
        RegionBatch.from_dict({"regions": []})
