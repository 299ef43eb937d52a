"""Per-region quality scores: every scorer gives one number per region, aligned with the regions,
and per-image aggregates as lists, never one number for a batch.

Modules: :mod:`.score` (``score_regions``, the scorer protocol), :mod:`.aggregate` (attaching
scores, per-image ``min`` / ``mean`` / ``max`` / ``count``, JSON report), :mod:`.crops` (batched
crops), and the scorers: :mod:`.sharpness` (Laplacian variance), :mod:`.confidence` (detector
confidence, FairHuman's metric), :mod:`.hands` (hand plausibility from 21 keypoints),
:mod:`.facescore` (the FaceScore model; :mod:`.weights` reads its file safely), :mod:`.onnx_scorer`
(any crop → scalar ONNX model), :mod:`.finetune` (pairwise loss and parameter choice for
fine-tuning a scorer on good/bad pairs), :mod:`.preview` (drawing). Heavy libraries (kornia, onnxruntime) load on first use.
"""

from .aggregate import AGGREGATES, ImageAggregates, aggregate, attach_scores, read_scores, scores_report
from .confidence import ConfidenceScorer
from .crops import crop_boxes, square_boxes
from .face_scorer import FaceScorer
from .facescore import FaceScoreConfig, FaceScoreModel, load_facescore
from .finetune import pair_accuracy, pairwise_loss, trainable_parameters
from .hands import HAND_SCORE_NAMES, HandPriors, HandScorer, score_hand
from .onnx_scorer import NORMALIZATIONS, OnnxScorer
from .score import RegionScorer, ScoreResult, score_regions
from .sharpness import SharpnessScorer, laplacian_variance
from .weights import WeightsError, read_state_dict

__all__ = [
    "score_regions", "ScoreResult", "RegionScorer",
    "AGGREGATES", "ImageAggregates", "aggregate", "attach_scores", "read_scores", "scores_report",
    "crop_boxes", "square_boxes",
    "SharpnessScorer", "laplacian_variance", "ConfidenceScorer",
    "HandScorer", "HandPriors", "score_hand", "HAND_SCORE_NAMES",
    "FaceScoreConfig", "FaceScoreModel", "FaceScorer", "load_facescore",
    "OnnxScorer", "NORMALIZATIONS",
    "pairwise_loss", "pair_accuracy", "trainable_parameters",
    "WeightsError", "read_state_dict",
]
