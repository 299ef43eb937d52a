"""``train-scorer``: fine-tune a FaceScore-style crop scorer on (good, bad) crop pairs (FaceScore recipe).

The dataset is a pair folder whose chosen image is the good crop and whose rejected image the bad one
(e.g. the same face inpainted at low quality; methods.md §4 b). Each crop is resized to the scorer's
input size and CLIP-normalised; the loss is ImageReward's ``−log σ(r(good) − r(bad))``
(:func:`~vitruvian.core.scoring.finetune.pairwise_loss`) on the head (plus the last
``scorer_text_layers`` / ``scorer_vision_blocks`` layers). It trains no UNet: the objective owns its module
(the scorer, :class:`~.base.OwnsModules`) and needs no diffusion model (``needs_base = False``), so the common
loop runs it with checkpoints, resume, callbacks, signals and the NaN guard. Output:
``<out>/<name>-scorer.safetensors``, the full scorer state that ``core.scoring.facescore.load_facescore`` reads.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..config_values import setting
from .base import ObjectiveOutput

__all__ = ["TrainScorerOptions", "TrainScorer", "tiny_scorer_config", "prepare_crops"]


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainScorerOptions:
    """train-scorer's settings, merged into ``TrainConfig`` (keys ``scorer_*``)."""

    scorer_weights: str = setting("", "FaceScore weights (FS_model.pt / .safetensors) to fine-tune; '' = a small "
                                  "random-initialised model (tests).", group="scorer", path=True)
    scorer_text_layers: int = setting(0, "Last text-encoder layers of the scorer that train besides its head.",
                                      group="scorer", ge=0)
    scorer_vision_blocks: int = setting(0, "Last image-encoder blocks of the scorer that train besides its head.",
                                        group="scorer", ge=0)


@dataclasses.dataclass
class TrainScorer:
    """The ``train-scorer`` objective (see the module docstring).

    Args:
        weights: a scorer file to start from ("" = a small random scorer, :func:`tiny_scorer_config`).
        text_layers, vision_blocks: how many of the last text / vision layers train beside the head.
        model: the scorer (set by :meth:`setup`).
    """

    weights: str = ""
    text_layers: int = 0
    vision_blocks: int = 0
    model: Any = None

    name = "train-scorer"
    images_per_sample = 2
    needs_reference = False
    needs_base = False
    wants_lora = False
    export_name = "scorer.safetensors"
    output_kind = "scorer"
    output_file = "{name}-scorer.safetensors"
    resume_identity = ("scorer_weights", "scorer_text_layers", "scorer_vision_blocks")

    @classmethod
    def from_config(cls, config: Any = None) -> TrainScorer:
        """Fine-tune a FaceScore-style crop scorer on (good, bad) crop pairs."""
        if config is None:
            return cls()
        return cls(weights=config.scorer_weights, text_layers=config.scorer_text_layers,
                   vision_blocks=config.scorer_vision_blocks)

    # -- the loop's hooks (OwnsModules) -------------------------------------------------------------------

    def setup(self, unet=None) -> list[torch.nn.Parameter]:
        """Load (or create) the scorer; return the parameters that train."""
        from ...core.scoring.facescore import FaceScoreModel, load_facescore
        from ...core.scoring.finetune import trainable_parameters

        self.model = load_facescore(self.weights) if self.weights else FaceScoreModel(tiny_scorer_config())
        params = trainable_parameters(self.model, text_layers=self.text_layers, vision_blocks=self.vision_blocks)
        self.model.train()
        return params

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"scorer": self.model} if self.model is not None else {}

    def export(self, path, *, config: dict, step: int) -> Path:
        """The full scorer state (fp32), atomically, with the run's config in the metadata."""
        from ...core.atomic import atomic_save_safetensors

        state = {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.model.state_dict().items()}
        return atomic_save_safetensors(state, path, {"vitruvian_config": json.dumps(config, sort_keys=True),
                                                     "vitruvian_scorer": "facescore", "vitruvian_step": str(step)})

    def restore(self, path) -> None:
        """Load an exported scorer back into :attr:`model` in place (bit-exact)."""
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(path), device=str(next(self.model.parameters()).device)))

    # -- the loss -------------------------------------------------------------------------------------------

    def __call__(self, batch, ctx) -> ObjectiveOutput:
        """``batch["pixels"]`` (B, 2, 3, R, R) [good, bad] → the pairwise loss; metric ``pair_acc``."""
        from ...core.scoring.finetune import pair_accuracy, pairwise_loss

        model = ctx.modules["scorer"]
        pixels = batch["pixels"]
        B = pixels.shape[0]
        scores = model(prepare_crops(pixels.flatten(0, 1), self.model.config.image_size)).view(B, 2)
        per_sample = pairwise_loss(scores[:, 0], scores[:, 1])
        acc = pair_accuracy(scores[:, 0].detach(), scores[:, 1].detach())
        return ObjectiveOutput(loss=per_sample.mean(), per_sample=per_sample.detach(),
                               metrics={"pair_acc": torch.as_tensor(acc, dtype=torch.float32)})
