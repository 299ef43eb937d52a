"""core.pairs: choosing winners and losers, building the records of a scored batch, and appending pairs the
trainer's validation accepts."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from vitruvian.core.errors import NodeInputError
from vitruvian.core.pairs import (
    PairRecord, append_pairs, choose_pairs, choose_real_pairs, choose_same_index_pairs, collect_pairs, image_hash,
    image_scores,
)
from vitruvian.core.regions import Region, RegionBatch


def _img(seed: int, size=(16, 20)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, *size, generator=g)


def test_choose_pairs_extremes():
    # best (1) vs worst (3), second best (2) vs second worst (0); the unscored image 4 is never paired
    assert choose_pairs([0.2, 0.9, 0.5, 0.1, None]) == [(1, 3), (2, 0)]


def test_choose_pairs_lower_is_better_and_margin():
    assert choose_pairs([0.2, 0.9, 0.5, 0.1], higher_is_better=False) == [(3, 1), (0, 2)]
    assert choose_pairs([0.2, 0.9, 0.5, 0.1], min_margin=0.5) == [(1, 3)]
    assert choose_pairs([0.3, 0.3]) == []  # equal scores are no preference


def test_choose_pairs_best_vs_rest_widest_first():
    assert choose_pairs([0.2, 0.9, 0.5, 0.1], pairing="best_vs_rest") == [(1, 3), (1, 0), (1, 2)]
    assert choose_pairs([0.2, 0.9, 0.5, 0.1], pairing="best_vs_rest", max_pairs=1) == [(1, 3)]


def test_choose_real_pairs_worst_generated_first():
    assert choose_real_pairs([0.2, 0.9, 0.5], 2) == [(0, 0), (1, 2), (0, 1)]
    assert choose_real_pairs([None, None], 1) == [(0, 0), (0, 1)]  # no scores: every image loses to the real one


def test_choose_same_index_pairs_without_scores_pairs_every_index():
    assert choose_same_index_pairs([None, None, None], 3) == [(0, 0), (1, 1), (2, 2)]
    assert choose_same_index_pairs([None, None, None], 3, max_pairs=2) == [(0, 0), (1, 1)]
    assert choose_same_index_pairs([], 0) == []


def test_choose_same_index_pairs_worst_generated_first():
    # the unscored image 2 is not paired once some are scored; lower_is_better flips the order
    assert choose_same_index_pairs([0.5, 0.1, None, 0.3], 4) == [(1, 1), (3, 3), (0, 0)]
    assert choose_same_index_pairs([0.5, 0.1, None, 0.3], 4, higher_is_better=False) == [(0, 0), (3, 3), (1, 1)]
    assert choose_same_index_pairs([0.5, 0.1, None, 0.3], 4, max_pairs=1) == [(1, 1)]


def test_choose_same_index_pairs_real_scores_drop_unseen_degradations():
    gen, real = [0.5, 0.1, 0.3, 0.2], [0.9, 0.2, 0.3, None]
    # pair 2: equal scores, no preference; pair 3: the real image is unscored, the pair stands as made
    assert choose_same_index_pairs(gen, 4, real_scores=real) == [(1, 1), (3, 3), (0, 0)]
    assert choose_same_index_pairs(gen, 4, real_scores=real, min_margin=0.2) == [(3, 3), (0, 0)]
    # a lower score is better: only pair 2 would be tied, pair 0 and 1 now prefer the generated image
    assert choose_same_index_pairs(gen, 4, real_scores=real, higher_is_better=False) == [(3, 3)]


def test_choose_same_index_pairs_exception():
    with pytest.raises(ValueError, match=r"n_real must equal the number of generated images \(3\).*got 2; give one "
                                         r"real image per generated one"):
        choose_same_index_pairs([None] * 3, 2)
    with pytest.raises(ValueError, match=r"min_margin compares real and generated scores, got min_margin 0.5 "
                                         r"without real_scores"):
        choose_same_index_pairs([0.1, 0.2], 2, min_margin=0.5)
    with pytest.raises(ValueError, match=r"real_scores must hold one score \(or None\) per real image \(2\), got 1"):
        choose_same_index_pairs([0.1, 0.2], 2, real_scores=[0.3])
    with pytest.raises(ValueError, match=r"real_scores: scores must be finite numbers or None, got inf at index 0"):
        choose_same_index_pairs([0.1, 0.2], 2, real_scores=[float("inf"), 0.3])


def test_exception():
    with pytest.raises(ValueError, match="pairing must be one of extremes, best_vs_rest, got 'random'"):
        choose_pairs([1.0, 2.0], pairing="random")
    with pytest.raises(ValueError, match=r"scores must be finite numbers or None, got nan at index 1"):
        choose_pairs([1.0, float("nan")])
    with pytest.raises(ValueError, match="n_real must be >= 1"):
        choose_real_pairs([1.0], 0)
    with pytest.raises(ValueError, match=r"chosen must be a \(3, H, W\) image in \[0, 1\], got \(16, 20, 3\)"):
        append_pairs("/nonexistent-never-written", [PairRecord("p", _img(0).permute(1, 2, 0), _img(1))])


def test_image_hash_is_the_saved_pixels():
    a = torch.randint(0, 256, (3, 8, 8), generator=torch.Generator().manual_seed(0)) / 255
    assert image_hash(a) == image_hash(a + 1e-3)  # the same 8-bit pixels once saved
    assert image_hash(a) != image_hash(_img(1))


def test_append_validates_with_the_trainer(tmp_path):
    from vitruvian.trainers.data import validate_dataset

    pairs = [
        PairRecord("a person", _img(0), _img(1), face_boxes={"chosen": [(2, 2, 10, 12)], "rejected": []},
                   hand_boxes={"chosen": [], "rejected": [(0, 0, 25, 30)]},  # clipped to the 20×16 image
                   chosen_quality=torch.linspace(0, 1, 16 * 20).reshape(16, 20), rejected_quality=torch.zeros(16, 20)),
        PairRecord("a person", _img(2), _img(1), chosen_source="real"),
    ]
    result = append_pairs(tmp_path / "ds", pairs)
    assert (result.added, result.duplicates, result.total) == (2, 0, 2)
    records = validate_dataset(tmp_path / "ds")
    assert [r.source for r in records] == ["generated", "real"]
    assert records[0].boxes["face_boxes"] == (((2.0, 2.0, 10.0, 12.0),), ())
    assert records[0].boxes["hand_boxes"] == ((), ((0.0, 0.0, 20.0, 16.0),))
    # the shared rejected image is stored once
    assert len(list((tmp_path / "ds" / "images").iterdir())) == 3


def test_append_skips_duplicates_and_keeps_old_lines(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text('{"not": "a pair"}')  # no newline at the end; kept as is
    first = append_pairs(folder, [PairRecord("p", _img(0), _img(1))])
    again = append_pairs(folder, [PairRecord("p", _img(0), _img(1)), PairRecord("p", _img(3), _img(3)),
                                  PairRecord("other prompt", _img(0), _img(1))])
    assert (first.added, again.added, again.duplicates, again.total) == (1, 1, 2, 3)
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    assert lines[0] == '{"not": "a pair"}'
    assert [json.loads(line)["prompt"] for line in lines[1:]] == ["p", "other prompt"]


def test_concurrent_appends_lose_nothing(tmp_path):
    def worker(k):
        append_pairs(tmp_path / "ds", [PairRecord(f"prompt {k}-{i}", _img(10 * k + i), _img(100 + k)) for i in range(3)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "ds" / "metadata.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["prompt"] for x in lines) == sorted(f"prompt {k}-{i}" for k in range(4) for i in range(3))
    assert not [p for p in (tmp_path / "ds").rglob("*.tmp")]


# ------------------------------------------------------------------------------ records of a scored batch


def _scored(values, size=(64, 80)) -> RegionBatch:
    """One face (scored ``q`` = the value, unscored when None) and one hand per image."""
    def regions(v):
        face = Region("face", (4, 4, 20, 20), 0.9, scores={} if v is None else {"q": v})
        return (face, Region("hand", (30, 30, 40, 44), 0.8))

    return RegionBatch(tuple(regions(v) for v in values), (size,) * len(values), scored=("q",))


def _images(n, size=(64, 80), seed=0):
    return torch.stack([_img(seed + i, size) for i in range(n)])


def test_collect_pairs_extremes_with_boxes_and_quality():
    regions = _scored([0.2, 0.9, 0.5, 0.1])
    scores = image_scores(_images(4), regions, "q", "mean", "face", where="t")
    assert scores.values == [0.2, 0.9, 0.5, 0.1] and scores.warning == ""
    quality = torch.rand(4, 64, 80)
    out = collect_pairs("p", _images(4), scores, regions=regions, quality=quality, where="t")
    assert out.lines == ["image 1 (0.9) > image 3 (0.1)", "image 2 (0.5) > image 0 (0.2)"]
    first = out.records[0]
    assert torch.equal(first.chosen, _images(4)[1]) and first.chosen_source == "generated"
    assert first.face_boxes == {"chosen": [[4, 4, 20, 20]], "rejected": [[4, 4, 20, 20]]}
    assert first.hand_boxes["rejected"] == [[30, 30, 40, 44]]
    assert torch.equal(first.chosen_quality, quality[1]) and torch.equal(first.rejected_quality, quality[3])


def test_collect_pairs_real_winners_and_same_index():
    regions, real_regions = _scored([0.5, 0.1]), _scored([0.9, 0.1])
    scores = image_scores(_images(2), regions, "q", where="t")
    real = _images(2, seed=10)
    out = collect_pairs("p", _images(2), scores, regions=regions, real_images=real[:1], max_pairs=1, where="t")
    assert out.lines == ["real 0 > image 1 (0.1)"] and out.records[0].chosen_source == "real"
    assert out.records[0].face_boxes["chosen"] == [] and out.records[0].chosen_quality is None
    # same_index: real 1 is no better than image 1 by the score, so only pair 0 stands
    out = collect_pairs("p", _images(2), scores, pairing="same_index", regions=regions, real_images=real,
                        real_regions=real_regions, where="t")
    assert out.lines == ["real 0 (0.9) > image 0 (0.5)"]
    assert out.records[0].face_boxes["chosen"] == [[4, 4, 20, 20]] and torch.equal(out.records[0].chosen, real[0])
    # without scores every index is paired
    out = collect_pairs("p", _images(2), None, pairing="same_index", real_images=real, where="t")
    assert out.lines == ["real 0 > image 0", "real 1 > image 1"]


def test_collect_pairs_nothing_scored_warns():
    regions = _scored([None, None])
    scores = image_scores(_images(2), regions, "q", "mean", "hand", where="t")
    assert scores.values == [None, None]
    assert scores.warning == "warning: no image has a region labelled hand with a q score"
    assert collect_pairs("p", _images(2), scores, regions=regions, where="t").records == []


def test_collect_pairs_exception():
    regions = _scored([0.2, 0.9])
    scores = image_scores(_images(2), regions, "q", where="t")
    with pytest.raises(NodeInputError, match="t: input 'real_images': images of at least 64×64 pixels are expected "
                                             r"in a training dataset \(Train's smallest resolution\), got 1×1"):
        collect_pairs("p", _images(2), scores, regions=regions, real_images=torch.rand(1, 3, 1, 1), where="t")
    with pytest.raises(NodeInputError, match="t: input 'quality': quality maps of the images' size 80×64 are "
                                             "expected, got 8×8"):
        collect_pairs("p", _images(2), scores, regions=regions, quality=torch.rand(2, 8, 8), where="t")
    with pytest.raises(ValueError, match=r"t: real_regions must describe the 1 image\(s\) of real_images"):
        collect_pairs("p", _images(2), scores, regions=regions, real_images=_images(1), real_regions=regions, where="t")
    with pytest.raises(ValueError, match=r"real_images must hold one image per image \(2\) for pairing same_index"):
        collect_pairs("p", _images(2), scores, pairing="same_index", regions=regions, real_images=_images(1), where="t")
    with pytest.raises(ValueError, match="pairing same_index pairs real image i with image i, got no real_images"):
        collect_pairs("p", _images(2), None, pairing="same_index", where="t")
    with pytest.raises(ValueError, match="regions must be the scored regions of image .* for pairing 'extremes'"):
        collect_pairs("p", _images(2), None, where="t")
    with pytest.raises(NodeInputError, match="t: input 'labels': .*got an unknown label fcae"):
        image_scores(_images(2), regions, "q", labels="fcae", where="t")
    with pytest.raises(NodeInputError, match="t: input 'score': one region score name is expected"):
        image_scores(_images(2), regions, "", where="t")
    with pytest.raises(ValueError, match=r"t: after_regions must describe the 3 image\(s\) of after"):
        image_scores(_images(3), regions, "q", where="t", name="after", regions_name="after_regions")
