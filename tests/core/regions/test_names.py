"""Labels and score names asked of a RegionBatch: unknown (an error for nodes) vs absent (a warning)."""

from __future__ import annotations

import pytest

from vitruvian.core.regions import (
    LABEL, SCORE, Region, RegionBatch, absent_images, absent_warning, known_names, parse_names, unknown_problem,
)


def _batch(**kwargs) -> RegionBatch:
    """Image 0: a face scored for sharpness; image 1: a hand; image 2: nothing."""
    face = Region("face", (0, 0, 4, 4), 0.9, scores={"sharpness": 0.5})
    hand = Region("hand", (2, 2, 6, 6), 0.8)
    return RegionBatch(((face,), (hand,), ()), ((8, 8),) * 3, **kwargs)


def test_value_parse_names():
    assert parse_names("face, hand,,face ") == ("face", "hand")
    assert parse_names(["hand", " face"]) == ("hand", "face")
    assert parse_names("") is None and parse_names(" , ") is None and parse_names(None) is None


def test_value_batch_records_searched_and_scored():
    batch = _batch(searched=["face", "hand", "face"], scored=("sharpness",))
    assert batch.searched == ("face", "hand") and batch.scored == ("sharpness",)
    again = RegionBatch.from_dict(batch.to_dict())
    assert again.searched == batch.searched and again.scored == batch.scored
    assert batch.filter("face").searched == batch.searched  # a filtered batch was still searched for both
    assert "searched" not in _batch().to_dict()  # nothing recorded: the JSON stays as it was
    with pytest.raises(ValueError, match="searched must be a tuple of non-empty names, got 'face'"):
        _batch(searched="face")
    with pytest.raises(ValueError, match="scored must be a tuple of non-empty names"):
        _batch(scored=("",))


def test_value_known_labels():
    # nothing recorded: the pack's own labels and whatever a region carries
    assert known_names(_batch(), LABEL) == {"face", "hand", "person"}
    assert unknown_problem(_batch(), ("person",), LABEL) == ""  # known, carried by no region: not an error
    # recorded: only what was looked for (and found)
    assert known_names(_batch(searched=("face", "hand")), LABEL) == {"face", "hand"}
    problem = unknown_problem(_batch(searched=("face", "hand")), ("person",), LABEL)
    assert "got an unknown label person; the regions carry face, hand; their detection looked for face, hand" in problem
    assert unknown_problem(_batch(), None, LABEL) == ""


def test_value_unknown_label_lists_what_the_regions_carry():
    problem = unknown_problem(_batch(), ("face", "fcae", "abc"), LABEL)
    assert problem.startswith("a label the regions carry (or that their detection looked for) is expected, got "
                              "unknown labels abc, fcae; the regions carry face, hand. Check the spelling")
    huge = unknown_problem(_batch(), ("a" * 1_000_000,), LABEL)
    assert len(huge) < 600 and "a" * 40 + "…" in huge  # a fuzzed 1 MB label does not flood the UI


def test_value_score_names():
    assert known_names(_batch(), SCORE) == {"sharpness"}
    problem = unknown_problem(_batch(), ("facescore",), SCORE)
    assert "a score name the regions carry is expected, got an unknown score facescore; the regions carry " \
           "sharpness. Score them first with Score Regions" in problem
    # computed by a scorer but carried by no region (no face in the batch): known
    computed = _batch(scored=("sharpness", "facescore"))
    assert unknown_problem(computed, ("facescore",), SCORE) == ""
    assert "(and facescore was computed, on no region)" in unknown_problem(computed, ("hand",), SCORE)


def test_value_absent_images_and_warning():
    batch = _batch()
    assert absent_images(batch, None, LABEL) == [2] and absent_images(batch, ("face",), LABEL) == [1, 2]
    assert absent_images(batch, ("sharpness",), SCORE) == [1, 2] and absent_images(batch, None, SCORE) == [1, 2]
    assert absent_warning(batch, ("face",), LABEL) == "warning: no region labelled face in images 1, 2 (of 3)"
    assert absent_warning(batch, ("face", "hand"), LABEL) == "warning: no region labelled face or hand in image 2 (of 3)"
    assert absent_warning(batch, ("sharpness",), SCORE) == \
        "warning: no region with a sharpness score in images 1, 2 (of 3)"
    assert absent_warning(batch, ("person",), LABEL) == "warning: no region labelled person in any image"
    assert absent_warning(batch, ("face", "hand"), LABEL).endswith("image 2 (of 3)")
    full = RegionBatch(((Region("face", (0, 0, 4, 4), 0.9),),), ((8, 8),))
    assert absent_warning(full, ("face",), LABEL) == ""
    with pytest.raises(ValueError, match="kind must be 'label' or 'score'"):
        absent_images(batch, None, "labels")
