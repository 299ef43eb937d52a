"""score_regions: per-region scores aligned with regions over a multi-image batch (incl. an image
without regions), per-image aggregates, label selection, the JSON report and input errors."""

from __future__ import annotations

import json

import pytest
import torch

from vitruvian.core.regions import Region, RegionBatch
from vitruvian.core.scoring import (
    ConfidenceScorer,
    ScoreResult,
    aggregate,
    attach_scores,
    read_scores,
    score_regions,
    scores_report,
)


class AreaScorer:
    """A closed-form scorer: each region's box area, NaN (not applicable) for persons."""

    names = ("area",)
    labels = None

    def __init__(self):
        self.calls = []

    def score(self, image, regions, image_index):
        self.calls.append((len(regions), image_index.tolist()))
        values = [float("nan") if r.label == "person" else r.area for r in regions]
        return {"area": torch.tensor(values, dtype=torch.float64)}


def _batch() -> RegionBatch:
    return RegionBatch(
        (
            (Region("face", (0, 0, 4, 4), 0.9), Region("hand", (4, 4, 6, 6), 0.5), Region("person", (0, 0, 8, 8), 0.7)),
            (),
            (Region("hand", (1, 1, 4, 2), 0.3),),
        ),
        ((8, 8),) * 3,
    )


def test_smoke():
    result = score_regions(torch.rand(3, 3, 8, 8), _batch(), ConfidenceScorer())
    assert isinstance(result, ScoreResult) and result.name == "confidence" and len(result.regions) == 3


def test_value_alignment_across_images_in_one_call():
    scorer = AreaScorer()
    result = score_regions(torch.rand(3, 3, 8, 8), _batch(), scorer)
    assert scorer.calls == [(4, [0, 0, 0, 2])]  # every region of every image, once
    assert result.per_region["area"] == [[16.0, 4.0, None], [], [3.0]]
    assert read_scores(result.regions, "area") == [[16.0, 4.0, None], [], [3.0]]
    agg = result.per_image["area"]
    assert (agg.min, agg.mean, agg.max, agg.count) == ([4.0, None, 3.0], [10.0, None, 3.0], [16.0, None, 3.0], [2, 0, 1])
    assert "area" not in result.regions[0][2].scores  # not applicable: no score, not NaN


def test_value_labels_select_regions_and_keep_other_scores():
    batch = attach_scores(_batch(), "old", [[1.0, 2.0, 3.0], [], [4.0]])
    result = score_regions(torch.rand(3, 3, 8, 8), batch, ConfidenceScorer(), labels="hand")
    assert result.per_region["confidence"] == [[None, 0.5, None], [], [0.3]]
    assert result.regions[0][0].scores == {"old": 1.0}
    assert result.regions[0][1].scores == {"old": 2.0, "confidence": 0.5}
    # FairHuman's metric: mean confidence per image, per label.
    assert aggregate(score_regions(torch.rand(3, 3, 8, 8), _batch(), ConfidenceScorer()).regions, "confidence",
                     labels=["hand"]).mean == [0.5, None, 0.3]


def test_value_report_is_json():
    result = score_regions(torch.rand(3, 3, 8, 8), _batch(), AreaScorer())
    report = json.loads(json.dumps(result.report(), allow_nan=False))
    assert report["scores"] == ["area"]
    assert [len(im["regions"]) for im in report["images"]] == [3, 0, 1]
    assert report["images"][0]["aggregates"]["area"] == {"min": 4.0, "mean": 10.0, "max": 16.0, "count": 2}
    assert report["images"][0]["by_label"]["face"]["area"]["mean"] == 16.0
    assert report["images"][1]["aggregates"]["area"]["count"] == 0 and report["images"][1]["by_label"] == {}
    assert scores_report(_batch(), ["x"])["images"][2]["aggregates"]["x"]["mean"] is None


def test_value_attach_scores_all_given_equals_with_scores():
    batch = _batch()
    values = [[1.0, 2.0, 3.0], [], [4.0]]
    assert read_scores(attach_scores(batch, "q", values), "q") == read_scores(batch.with_scores("q", values), "q")


def test_value_channels_grey_and_alpha():
    for c in (1, 4):
        assert score_regions(torch.rand(3, c, 8, 8), _batch(), ConfidenceScorer()).per_image["confidence"].count == [3, 0, 1]


def test_exception():
    with pytest.raises(ValueError, match=r"looks like ComfyUI's IMAGE layout \(B, H, W, C\): use image.movedim\(-1, 1\)"):
        score_regions(torch.rand(3, 8, 8, 3), _batch(), ConfidenceScorer())
    with pytest.raises(ValueError, match=r"image batch is empty \(shape \(0, 3, 8, 8\)\)"):
        score_regions(torch.rand(0, 3, 8, 8), RegionBatch(), ConfidenceScorer())
    with pytest.raises(ValueError, match=r"regions must describe the 2 image\(s\) of the batch, got regions for 3"):
        score_regions(torch.rand(2, 3, 8, 8), _batch(), ConfidenceScorer())
    with pytest.raises(ValueError, match="regions of image 0 were found on a 8×8 image, but the image is 16×8"):
        score_regions(torch.rand(3, 3, 8, 16), _batch(), ConfidenceScorer())
    with pytest.raises(ValueError, match=r"values_per_image must match the regions per image \[3, 0, 1\]"):
        attach_scores(_batch(), "q", [[1.0], [], [2.0]])
    with pytest.raises(ValueError, match="must be finite or None"):
        attach_scores(_batch(), "q", [[1.0, float("inf"), None], [], [2.0]])
