"""Scorer fine-tuning pieces: the pairwise loss (value, gradient sign, gradcheck), the parameter choice,
and a few steps on (sharp, blurred) crop pairs that teach a narrow FaceScore to rank sharp first."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vitruvian.core.scoring import FaceScoreConfig, FaceScoreModel
from vitruvian.core.scoring.finetune import pair_accuracy, pairwise_loss, trainable_parameters


def test_value_pairwise_loss():
    assert torch.allclose(pairwise_loss(torch.zeros(3), torch.zeros(3)), torch.full((3,), math.log(2)))
    assert pairwise_loss(torch.tensor([1000.0]), torch.tensor([0.0])).item() == 0.0  # stable, no overflow
    assert pairwise_loss(torch.tensor([0.0]), torch.tensor([1000.0])).item() == pytest.approx(1000.0)
    good = torch.zeros(2, requires_grad=True)
    pairwise_loss(good, torch.zeros(2)).sum().backward()
    assert (good.grad < 0).all()  # raising the good score lowers the loss
    assert pair_accuracy(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(0.5)


def test_gradcheck():
    good, bad = torch.randn(2, dtype=torch.float64, requires_grad=True), torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pairwise_loss, (good, bad))


def test_value_trainable_parameters():
    model = FaceScoreModel(FaceScoreConfig(vision_width=16, vision_depth=2, vision_heads=1, vision_mlp=32,
                                           text_width=16, text_depth=2, text_heads=1, text_intermediate=32))
    head = trainable_parameters(model)
    assert {id(p) for p in head} == {id(p) for p in model.mlp.parameters()}
    assert sum(p.requires_grad for p in model.parameters()) == len(head)
    more = trainable_parameters(model, text_layers=1, vision_blocks=1)
    assert len(more) == len(head) + len(list(model.blip.text_encoder.encoder.layer[1].parameters())) + len(
        list(model.blip.visual_encoder.blocks[1].parameters()))
    assert not any(p.requires_grad for p in model.blip.text_encoder.encoder.layer[0].parameters())
    with pytest.raises(ValueError, match=r"text_layers must be in \[0, 2\]"):
        trainable_parameters(model, text_layers=3)


def test_value_training_steps_rank_sharp_above_blurred():
    torch.manual_seed(0)
    model = FaceScoreModel(FaceScoreConfig(image_size=32, patch_size=8, vision_width=32, vision_depth=1, vision_heads=2,
                                           vision_mlp=64, text_width=32, text_depth=1, text_heads=2, text_intermediate=64,
                                           max_positions=8)).train()
    sharp = torch.rand(8, 3, 32, 32) * 2 - 1
    blurred = F.avg_pool2d(sharp, 5, stride=1, padding=2)
    params = trainable_parameters(model, text_layers=1, vision_blocks=1)
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(25):
        loss = pairwise_loss(model(sharp), model(blurred)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = pair_accuracy(model(sharp), model(blurred))
    assert losses[-1] < 0.5 * losses[0] and accuracy == 1.0
