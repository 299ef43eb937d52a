"""Pieces for fine-tuning a crop scorer on (good, bad) pairs, the FaceScore recipe: ImageReward's
pairwise loss ``−log σ(r(good) − r(bad))`` and the choice of which parameters train.

The trainer's ``train-scorer`` objective owns the loop; this module holds the math so it exists once
and is tested here. FaceScore fine-tunes ImageReward on face crops where the bad half of each pair
is the same photo with the face inpainted at low quality (methods.md §4 b).

Shape:
    - scores: ``(B,)`` float for the good and the bad crop of each pair → loss ``(B,)``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .facescore import FaceScoreModel

__all__ = ["pairwise_loss", "pair_accuracy", "trainable_parameters"]


def pairwise_loss(good: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """Per-pair ranking loss ``−log σ(good − bad)`` (Bradley–Terry; ImageReward / FaceScore). ``(B,), (B,) -> (B,)``.

    ``log 2`` when the two scores are equal; → 0 as ``good`` wins by a margin. Reduce it yourself.

    Example:
        >>> pairwise_loss(torch.zeros(2), torch.zeros(2))
        tensor([0.6931, 0.6931])
    """
    if good.shape != bad.shape or good.ndim != 1:
        raise ValueError(
            f"pairwise_loss: good and bad must both be (B,), got {tuple(good.shape)} and {tuple(bad.shape)}"
        )
    return F.softplus(bad - good)  # = −log σ(good − bad), stable for large margins


def pair_accuracy(good: torch.Tensor, bad: torch.Tensor) -> float:
    """Fraction of pairs where the good crop scores higher (ties count half)."""
    wins = (good > bad).float() + 0.5 * (good == bad).float()
    return float(wins.mean()) if len(wins) else float("nan")


def trainable_parameters(model: FaceScoreModel, *, text_layers: int = 0, vision_blocks: int = 0) -> list[nn.Parameter]:
    """Freeze the model except the score head, the last ``text_layers`` text-encoder layers and the last
    ``vision_blocks`` image-encoder blocks; return the parameters left trainable.

    ImageReward trains its head with most of the backbone frozen; the head alone (the default) is
    the cheapest way to adapt a scorer to a new kind of crop.
    """
    blip = model.blip
    n_text, n_vision = len(blip.text_encoder.encoder.layer), len(blip.visual_encoder.blocks)
    if not 0 <= text_layers <= n_text or not 0 <= vision_blocks <= n_vision:
        raise ValueError(
            f"trainable_parameters: text_layers must be in [0, {n_text}] and vision_blocks in [0, {n_vision}], "
            f"got {text_layers} and {vision_blocks}"
        )
    model.requires_grad_(False)
    train = [model.mlp]
    train += list(blip.text_encoder.encoder.layer[n_text - text_layers :]) if text_layers else []
    train += list(blip.visual_encoder.blocks[n_vision - vision_blocks :]) if vision_blocks else []
    params = []
    for module in train:
        module.requires_grad_(True)
        params += list(module.parameters())
    return params
