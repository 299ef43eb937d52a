"""``train-scorer``: fine-tune a FaceScore-style crop scorer on (good, bad) crop pairs (FaceScore recipe).

The dataset is a pair folder whose chosen image is the good crop and whose rejected image the bad one
(e.g. the same face inpainted at low quality; methods.md §4 b). Each crop is resized to the scorer's
input size and CLIP-normalised; the loss is ImageReward's ``−log σ(r(good) − r(bad))``
(:func:`~vitruvian.core.scoring.finetune.pairwise_loss`) on the head (plus the last
``scorer_text_layers`` / ``scorer_vision_blocks`` layers). This trains no UNet, so it owns its loop
(``drive``, called by ``train``). Output: ``<out>/<name>-scorer.safetensors``, the full scorer state
that ``core.scoring.facescore.load_facescore`` reads back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ConfigError

__all__ = ["TrainScorer", "tiny_scorer_config", "prepare_crops"]


def tiny_scorer_config():
    """A small random scorer (tests, smoke runs): 32 px input, 16-wide encoders."""
    from ...core.scoring.facescore import FaceScoreConfig

    return FaceScoreConfig(image_size=32, vision_width=16, vision_depth=1, vision_heads=2, vision_mlp=32,
                           text_width=16, text_depth=1, text_heads=2, text_intermediate=32, max_positions=8)


def prepare_crops(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, R, R) in [-1, 1] → (B, 3, size, size) CLIP-normalised (bicubic, antialiased)."""
    from ...core.scoring.facescore import CLIP_MEAN, CLIP_STD

    x = ((pixels.float() + 1) / 2).clamp(0, 1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x.clamp(0, 1) - mean) / std


@dataclasses.dataclass(frozen=True)
class TrainScorer:
    """The ``train-scorer`` registry entry (see the module docstring)."""

    config: Any = None

    name = "train-scorer"
    images_per_sample = 2
    needs_reference = False
    output_kind = "scorer"
    output_file = "{name}-scorer.safetensors"

    @classmethod
    def from_config(cls, config: Any = None) -> TrainScorer:
        return cls(config=config)

    def __call__(self, batch, ctx):
        raise ConfigError("train-scorer: runs its own loop through TrainScorer.drive (train() calls it)")

    def drive(self, config, *, callbacks=()):
        from ...core.scoring.facescore import FaceScoreModel, load_facescore
        from ...core.scoring.finetune import pair_accuracy, pairwise_loss, trainable_parameters
        from ...core.atomic import atomic_save_safetensors, atomic_write_text
        from ..data import make_loader, open_dataset, validate_dataset
        from ..loop import TrainResult
        from ..progress import PROGRESS_FILE, Progress

        validate_dataset(config.data)
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(config.seed)
        if config.scorer_weights:
            model = load_facescore(config.scorer_weights, device=device)
        else:
            model = FaceScoreModel(tiny_scorer_config()).to(device)
        params = trainable_parameters(model, text_layers=config.scorer_text_layers,
                                      vision_blocks=config.scorer_vision_blocks)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
        dataset = open_dataset(config.data, resolution=config.resolution, random_flip=config.random_flip,
                               random_crop=config.random_crop, seed=config.seed)
        item = dataset[0] if hasattr(dataset, "__len__") else next(iter(dataset))
        if item["pixels"].shape[0] != 2:
            raise ConfigError("train-scorer: data must be a pair folder (chosen = good crop, rejected = bad crop), "
                              "got single images; fix: {\"prompt\", \"chosen\", \"rejected\"} records")
        loader = make_loader(dataset, batch_size=config.batch_size, seed=config.seed, num_workers=config.num_workers)
        progress = Progress(out / PROGRESS_FILE, total=config.steps, log_every=config.log_every,
                            desc=f"train-scorer {config.name}")
        size = model.config.image_size
        loss_v, metrics = math.nan, {}
        try:
            for step in range(1, config.steps + 1):
                t0 = time.perf_counter()
                pixels = next(loader)["pixels"].to(device)  # (B, 2, 3, R, R)
                B = pixels.shape[0]
                scores = model(prepare_crops(pixels.flatten(0, 1), size)).view(B, 2)
                loss = pairwise_loss(scores[:, 0], scores[:, 1]).mean()
                if not torch.isfinite(loss):
                    raise ConfigError(f"train-scorer: loss must be finite, got {loss.item()} at step {step}; "
                                      "fix: lower learning_rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                loss_v = loss.item()
                metrics = {"pair_acc": pair_accuracy(scores[:, 0].detach(), scores[:, 1].detach())}
                progress.update(step, loss=loss_v, lr=config.learning_rate, metrics=metrics,
                                seconds=time.perf_counter() - t0)
        finally:
            progress.close()
        path = out / f"{config.name}-scorer.safetensors"
        state = {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in model.state_dict().items()}
        atomic_save_safetensors(state, path, {"vitruvian_config": json.dumps(config.to_dict(), sort_keys=True),
                                   "vitruvian_scorer": "facescore"})
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        return TrainResult(lora_path=path, steps=config.steps, final_loss=loss_v, metrics=metrics, out_dir=out,
                           checkpoints=())
