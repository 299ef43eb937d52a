"""Settings validation, the per-region decision with its reasons, the report and region prompts."""

from __future__ import annotations

import json

import pytest

from vitruvian.core.errors import ConfigError
from vitruvian.core.refine import RefineReport, RefineSettings, RegionReport, decide
from vitruvian.core.refine.plan import parse_region_prompts
from vitruvian.core.regions import Region

SETTINGS = RefineSettings(target_size=64, max_size=128, min_size=8)


def test_smoke():
    assert RefineSettings().to_dict()["labels"] == ["face", "hand"]
    assert RefineSettings(labels="face, hand").labels == ("face", "hand")
    assert RefineSettings(labels="").labels is None


@pytest.mark.parametrize("kwargs,message", [
    ({"target_size": 512, "max_size": 256}, "max_size must be ≥ target_size, got max_size 256 < target_size 512"),
    ({"context_factor": 0.5}, "context_factor must be in [1, 100]"),
    ({"target_size": 32}, "target_size must be an int in [64, 8192], got 32"),
    ({"variants": 0}, "variants must be an int in [1, 64], got 0"),
    ({"mask_feather": -1}, "mask_feather must be an int in [0, 512], got -1"),
    ({"pick": "best"}, "pick must be one of sharpness, seam, first, got 'best'"),
    ({"min_size": 2.5}, "min_size must be an int"),
])
def test_exception_settings(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        RefineSettings(**kwargs)
    assert message in str(caught.value) and str(caught.value).startswith("RefineSettings: ")


def test_value_reasons():
    size = (128, 128)
    face = Region("face", (10, 10, 40, 40), 1.0)
    plan, reason, notes = decide(face, size, SETTINGS)
    assert plan is not None and reason == "" and notes == []
    assert decide(Region("person", (0, 0, 60, 60), 1.0), size, SETTINGS)[1] == \
        "label 'person' is not in labels (face, hand)"
    assert decide(Region("hand", (0, 0, 7.5, 30), 1.0), size, SETTINGS)[1] == \
        "too small: 8×30 px, the shorter side is below min_size 8"
    assert decide(Region("hand", (0, 0, 0.001, 30), 1.0), size, SETTINGS)[1].startswith("too small: 0×30 px")
    too_large = decide(Region("face", (0, 0, 100, 70), 1.0), size, SETTINGS)[1]
    assert too_large.startswith("too large: 100×70 px is above target_size 64") and "raise target_size" in too_large
    assert decide(Region("person", (0, 0, 100, 70), 1.0), size, RefineSettings(labels=None, target_size=128))[0] is not None


def test_value_score_gate():
    gated = RefineSettings(target_size=64, max_size=128, score_name="sharpness", score_below=100.0)
    sharp = Region("face", (10, 10, 40, 40), 1.0, scores={"sharpness": 150.0})
    blurry = Region("face", (10, 10, 40, 40), 1.0, scores={"sharpness": 20.0})
    unscored = Region("face", (10, 10, 40, 40), 1.0)
    assert decide(sharp, (128, 128), gated)[1] == "score above threshold: sharpness 150 ≥ refine_if_score_below 100"
    assert decide(blurry, (128, 128), gated)[0] is not None
    plan, reason, notes = decide(unscored, (128, 128), gated)
    assert plan is not None and notes == [
        "no 'sharpness' score on this region, refined without the gate (score the regions first)"]


def test_value_report():
    report = RefineReport(2, [
        RegionReport(0, 0, 0, "face", [1, 2, 3, 4], "refined", seed=7, variants=3, chosen=2, pick="sharpness",
                     seam={"colour_before": 0.01, "colour_after": 0.02}),
        RegionReport(1, 0, 1, "hand", [1, 2, 3, 4], "skipped", "too small: 2×2 px"),
        RegionReport(1, 1, 2, "hand", [1, 2, 3, 4], "failed", "the sampler returned NaN/inf pixels"),
    ])
    data = json.loads(report.to_json())
    assert data["counts"] == {"refined": 1, "skipped": 1, "failed": 1}
    assert data["regions"][0]["seed"] == 7 and "seed" not in data["regions"][1]
    assert report.summary().splitlines() == [
        "2 images, 3 regions: 1 refined, 1 skipped, 1 failed",
        "image 0 face #0: refined (variant 2 of 3 by sharpness, seam colour 0.010 → 0.020)",
        "image 1 hand #0: skipped (too small: 2×2 px)",
        "image 1 hand #1: failed (the sampler returned NaN/inf pixels)",
    ]


def test_value_region_prompts():
    labels = ["face", "hand"]
    assert parse_region_prompts("", labels) == {}
    assert parse_region_prompts("a sharp photo", labels) == {None: "a sharp photo"}
    assert parse_region_prompts("face: a smiling face\nhand:  five fingers \nhigh detail", labels) == {
        "face": "a smiling face", "hand": "five fingers", None: "high detail"}
    # A colon after a word that is not a label is part of the prompt.
    assert parse_region_prompts("style: watercolour", labels) == {None: "style: watercolour"}
