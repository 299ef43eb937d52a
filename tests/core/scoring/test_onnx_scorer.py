"""The ONNX crop scorer: a torch model exported at test time scores the same as in torch, in batches,
with its input size read from the file; normalisation, crop shape, and bad models."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.regions import Region, RegionBatch
from vitruvian.core.scoring import NORMALIZATIONS, OnnxScorer, score_regions

from .onnx_kit import TinyScorer, export_scorer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _batch() -> tuple[torch.Tensor, RegionBatch]:
    torch.manual_seed(0)
    image = torch.rand(3, 3, 64, 80)
    regions = (
        (Region("face", (4, 4, 30, 40), 0.9), Region("hand", (50, 10, 78, 30), 0.7)),
        (),
        (Region("face", (0, 0, 64, 64), 0.8), Region("person", (10.5, 3.2, 70.1, 60.7), 0.6), Region("hand", (70, 50, 80, 64), 0.5)),
    )
    return image, RegionBatch(regions, ((64, 80),) * 3)


def test_smoke(tmp_path):
    scorer = OnnxScorer(export_scorer(tmp_path / "tiny.onnx"))
    assert scorer.size == 32 and scorer.names == ("onnx:tiny",) and scorer.provider.endswith("ExecutionProvider")


@pytest.mark.parametrize("normalization", ["none", "imagenet"])
def test_value_round_trip(tmp_path, normalization):
    """ONNX scores equal the torch model's on the very crops the scorer builds; aligned with regions."""
    image, batch = _batch()
    model = TinyScorer()
    scorer = OnnxScorer(export_scorer(tmp_path / "tiny.onnx", model), normalization=normalization, batch_size=2)
    result = score_regions(image, batch, scorer)
    flat = [(b, r) for b, _, r in batch.flat()]
    crops = scorer.crops(image, [r for _, r in flat], torch.tensor([b for b, _ in flat]))
    with torch.no_grad():
        expected = model(crops).tolist()
    got = [v for per_image in result.per_region["onnx:tiny"] for v in per_image]
    assert got == pytest.approx(expected, abs=1e-5)
    assert result.per_image["onnx:tiny"].count == [2, 0, 3]
    mean, std = NORMALIZATIONS[normalization]
    raw = (crops * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None])
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5  # crops are [0, 1] RGB before normalisation


def test_value_keep_dim_output_and_labels(tmp_path):
    image, batch = _batch()
    scorer = OnnxScorer(export_scorer(tmp_path / "q.onnx", TinyScorer(keep_dim=True)), name="quality", labels=["face"])
    result = score_regions(image, batch, scorer)
    assert result.name == "quality"
    assert [[v is not None for v in per_image] for per_image in result.per_region["quality"]] == [
        [True, False], [], [True, False, False]]


def test_value_dynamic_size_and_fixed_batch(tmp_path):
    image, batch = _batch()
    model = TinyScorer()
    dynamic = OnnxScorer(export_scorer(tmp_path / "dyn.onnx", model, size=None), size=48)
    single = OnnxScorer(export_scorer(tmp_path / "one.onnx", model, dynamic_batch=False))  # runs crop by crop
    reference = OnnxScorer(export_scorer(tmp_path / "ref.onnx", model))
    a = score_regions(image, batch, single).per_region["onnx:one"]
    b = score_regions(image, batch, reference).per_region["onnx:ref"]
    assert [[x is None for x in xs] for xs in a] == [[x is None for x in xs] for xs in b]
    assert all(x == pytest.approx(y, abs=1e-5) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    assert dynamic.size == 48 and len(score_regions(image, batch, dynamic).regions.flat()) == 5


def test_value_square_crop_differs_from_box_crop(tmp_path):
    image, batch = _batch()
    path = export_scorer(tmp_path / "tiny.onnx")
    square = score_regions(image, batch, OnnxScorer(path, crop="square")).per_region["onnx:tiny"]
    box = score_regions(image, batch, OnnxScorer(path, crop="box")).per_region["onnx:tiny"]
    assert square[2][0] == pytest.approx(box[2][0], abs=1e-6)  # a square region: the same crop
    assert square[0][0] != pytest.approx(box[0][0], abs=1e-6)


def test_exception(tmp_path):
    path = export_scorer(tmp_path / "tiny.onnx")
    with pytest.raises(ValueError, match="size must be 32 \\(the model's input size\\), got 64"):
        OnnxScorer(path, size=64)
    with pytest.raises(ValueError, match="dynamic input size .* give size=S"):
        OnnxScorer(export_scorer(tmp_path / "dyn.onnx", size=None))
    with pytest.raises(ValueError, match="normalization must be one of none, imagenet, clip, minus_one_one"):
        OnnxScorer(path, normalization="zscore")
    image, batch = _batch()
    two = OnnxScorer(export_scorer(tmp_path / "two.onnx", TinyScorer(outputs=2)))
    with pytest.raises(ValueError, match=r"must output one number per crop \(\(P,\) or \(P, 1\)\), got shape \(5, 2\) for 5 crops"):
        score_regions(image, batch, two)
    from vitruvian.core.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        OnnxScorer(tmp_path / "absent.onnx")
