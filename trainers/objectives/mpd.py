"""``mpd``: FairHuman's multi-objective fine-tuning (global + face + hand), α-fair gradient combination.

Per image (methods.md §3): one forward, three per-sample losses on the same prediction::

    l_global = mean((ε̂ − ε)²)
    l_face   = mean(((ε̂ − ε) · M_f · s)²)      M_f: face boxes → latent rectangles, s = 5 (FairHuman)
    l_hand   = the same with the hand boxes

normalised over the whole latent (``mpd_norm = "all"``, as released) or over the mask
(``"mask"``). The tasks are combined by :meth:`MPD.backward`, which the loop calls instead of
``accelerator.backward``:

- ``mpd_combiner = "mpd"``: per-task gradients over the *trainable* parameters only (K autograd passes
  on the retained graph), A = GᵀG, w from :func:`~vitruvian.core.objectives.mpd.fair_weights`
  (α = ``mpd_alpha``, 2 = Minimum Potential Delay), then K·G·w is added to the gradients. Under the
  fp16 GradScaler G is computed on the scaled losses and divided by the scale *before* the solve (the
  solution is not scale-invariant, the official code solves on scaled gradients); a task whose mask is
  empty in the micro-batch has a zero gradient and gets no weight; each micro-batch is combined on its own
  and accumulated with the same 1/grad_accum as ``accelerator.backward``.
- ``mpd_empty_task``: the K of K·G·w when a task is empty in the micro-batch (e.g. no hand box).
  ``"official"`` (default): K = 3, the number of tasks, as FairHuman's code multiplies whatever the batch
  holds; ``"drop"``: K = the tasks present, so such a step is 2/3 of the official one (docs/methods.md).
- ``mpd_every = N`` > 1: the weights are re-solved every N optimizer steps; in between one backward of
  K·Σ w_k·l_k with the last weights (the cost of SFT plus two masked reductions).
- ``mpd_combiner = "sum"``: plain l_global + l_face + l_hand, for comparison.

Many processes (``accelerate launch``): the per-task gradients do not go through DDP's all-reduce, so
:meth:`MPD.backward` averages G over the processes itself before the solve; every process then holds
the same weights and writes the same gradient.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...core.objectives.losses import NORMS, denoise_error
from ...core.objectives.masks import box_masks, token_grid
from ...core.objectives.mpd import fair_weights, gram
from ..config_values import setting
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, sample_noise

__all__ = ["MPDOptions", "MPD", "MultiTaskOutput", "COMBINERS", "EMPTY_TASK_MODES", "TASKS", "region_masks"]

COMBINERS = ("mpd", "sum")
TASKS = ("global", "face", "hand")
EMPTY_TASK_MODES = ("official", "drop")


@dataclass(frozen=True, kw_only=True)
class MPDOptions:
    """mpd's settings, merged into ``TrainConfig`` (keys ``mpd_*``)."""

    mpd_combiner: str = setting("mpd", "How global/face/hand losses combine: mpd (alpha-fair gradient weights) or "
                                "sum.", group="mpd", choices=COMBINERS)
    mpd_alpha: float = setting(2.0, "alpha of the alpha-fair combination (2 = Minimum Potential Delay).",
                               group="mpd", gt=0)
    mpd_every: int = setting(1, "Re-solve the MPD weights every N steps; in between one backward of the weighted "
                             "sum with the last weights (1 = official cost).", group="mpd", ge=1)
    mpd_empty_task: str = setting("official", "When a micro-batch lacks a task (no face or no hand box): official "
                                  "(the combined gradient is still multiplied by 3, the number of tasks, as "
                                  "FairHuman's code does) or drop (multiplied by the tasks present).", group="mpd",
                                  choices=EMPTY_TASK_MODES)


@dataclass(frozen=True)
class MultiTaskOutput(ObjectiveOutput):
    """:class:`ObjectiveOutput` plus the task losses (with their graphs) for the combiner.

    Attributes:
        tasks: name → () loss, only the tasks present in the micro-batch (a task whose mask is empty
            everywhere is left out).
    """

    tasks: dict[str, torch.Tensor] = field(default_factory=dict)


def region_masks(batch: Mapping[str, Any], kind: str, image_size: int, latent_size: tuple[int, int], *,
                 dilate: float, device) -> torch.Tensor | None:
    """(B, 1, h, w) masks of the first image's ``kind`` boxes (``"face"``/``"hand"``), or None if the batch has none."""
    per_item = batch.get(f"{kind}_boxes")
    if per_item is None:
        return None
    boxes = [b[0] if isinstance(b, (list, tuple)) else b for b in per_item]
    masks = box_masks(boxes, image_size, latent_size, dilate=dilate, device=device)
    return masks if bool(masks.any()) else None


@dataclass
class MPD:
    """FairHuman's global/face/hand losses with an α-fair (MPD) or summed combination.

    Args:
        combiner: ``"mpd"`` or ``"sum"``. alpha: α of the fairness (2 = MPD).
        every: re-solve the weights every N optimizer steps (1 = every micro-batch, the official cost).
        mask_scale: s, the residual's factor inside a mask (FairHuman: 5, i.e. 25 on the squared error).
        norm: ``"all"`` (official) or ``"mask"``. dilate: box dilation in pixels (FairHuman: 16).
        resolution: R, the side of the training image the boxes are in (None: 8 × latent side).
        proportion_empty_prompts: CFG dropout.
    """

    combiner: str = "mpd"
    alpha: float = 2.0
    every: int = 1
    mask_scale: float = 5.0
    norm: str = "all"
    dilate: float = 16.0
    resolution: int | None = None
    proportion_empty_prompts: float = 0.0
    empty_task: str = "official"
    weights: dict[str, float] | None = field(default=None, repr=False)  # the last solve's weights

    name = "mpd"
    images_per_sample = 1
    needs_reference = False

    def __post_init__(self):
        if self.combiner not in COMBINERS:
            raise ValueError(f"MPD: combiner must be one of {COMBINERS}, got {self.combiner!r}")
        if self.empty_task not in EMPTY_TASK_MODES:
            raise ValueError(f"MPD: empty_task must be one of {EMPTY_TASK_MODES}, got {self.empty_task!r}")
        if self.norm not in NORMS:
            raise ValueError(f"MPD: norm must be one of {NORMS}, got {self.norm!r}")
        if not self.alpha > 0 or self.every < 1 or self.mask_scale <= 0 or self.dilate < 0:
            raise ValueError(f"MPD: alpha must be > 0, every >= 1, mask_scale > 0 and dilate >= 0, got "
                             f"{self.alpha}, {self.every}, {self.mask_scale}, {self.dilate}")

    @classmethod
    def from_config(cls, config: Any = None) -> MPD:
        if config is None:
            return cls()
        return cls(combiner=config.mpd_combiner, alpha=config.mpd_alpha, every=config.mpd_every,
                   mask_scale=config.mask_scale, norm=config.mask_norm, dilate=config.mask_dilate,
                   resolution=config.resolution, proportion_empty_prompts=config.proportion_empty_prompts,
                   empty_task=config.mpd_empty_task)

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> MultiTaskOutput:
        x0 = batch["latents"][:, 0]  # (B, C, h, w); pairs: the chosen image
        B, _, h, w = x0.shape
        t = ctx.process.sample_t(B, ctx.generator)
        noise = sample_noise(x0, ctx.generator)
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        x_t, target = ctx.process.add_noise(x0, noise, t)
        pred = ctx.process.predict(ctx.unet, x_t, t, cond)
        size = self.resolution or 8 * h
        per = {"global": denoise_error(pred, target)}
        for kind in ("face", "hand"):
            m = region_masks(batch, kind, size, (h, w), dilate=self.dilate, device=x0.device)
            if m is not None:
                m = token_grid(m, getattr(ctx.process, "patch", 1), "max")
                per[kind] = denoise_error(pred, target, m * self.mask_scale**2, norm=self.norm)
        tasks = {k: v.mean() for k, v in per.items()}
        loss = sum(tasks.values())
        # every task's loss is logged (0 where the micro-batch has no such region), so that all processes
        # of a distributed run log the same metric names
        metrics = {f"loss_{k}": tasks[k].detach() if k in tasks else torch.zeros((), device=x0.device) for k in TASKS}
        return MultiTaskOutput(loss=loss, per_sample=sum(per.values()).detach(), metrics=metrics, tasks=tasks)

    # -- the combiner: called by the loop instead of accelerator.backward ---------------------------
    def backward(self, result: ObjectiveOutput, params: list[torch.nn.Parameter], accelerator,
                 step: int = 0) -> dict[str, torch.Tensor]:
        """Write this micro-batch's combined gradient into ``params``' ``.grad``; return the weights as metrics."""
        tasks = getattr(result, "tasks", None) or {"global": result.loss}
        if self.combiner == "sum":
            accelerator.backward(sum(tasks.values()))
            return {}
        names = list(tasks)
        distributed = accelerator.num_processes > 1
        # Every process must take the same branch (a solve is no DDP backward, a between-solves step is).
        if self.weights is not None and step % self.every != 0 and (distributed or set(names) <= set(self.weights)):
            k = self._k(len(names))  # between solves: one backward of K·Σ w_k·l_k with the last weights
            accelerator.backward(sum(k * self.weights.get(n, 0.0) * tasks[n] for n in names))
            return {f"w_{n}": torch.tensor(self.weights.get(n, 0.0)) for n in (TASKS if distributed else names)}
        scaler = getattr(accelerator, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        G = task_gradients([tasks[n] * scale for n in names], params) / scale  # (K, P) fp32, unscaled
        if distributed:
            # The per-task gradients bypass DDP's all-reduce: average them over the processes here, one
            # row per task of TASKS (zeros where this process's micro-batch lacks the task), so every
            # process solves the same weights on the whole batch and writes the same gradient.
            full = torch.zeros(len(TASKS), G.shape[1], dtype=G.dtype, device=G.device)
            full[[TASKS.index(n) for n in names]] = G
            G, names = accelerator.reduce(full, "mean"), list(TASKS)
        if not bool(torch.isfinite(G).all()):  # fp16 overflow: let the scaler skip this step
            for p in params:
                p.grad = torch.full_like(p, float("inf"))
            return {}
        keep = [i for i in range(len(names)) if bool(G[i].abs().max() > 0)]  # zero gradient: drop
        w = torch.zeros(len(names), dtype=torch.float64, device=G.device)
        w[keep] = fair_weights(gram(G[keep]), self.alpha)
        direction = self._k(len(keep)) * (w.to(G.dtype) @ G)  # (P,) = K·G·w
        _add_to_grads(params, direction * (scale / accelerator.gradient_accumulation_steps))
        self.weights = {n: float(w[i]) for i, n in enumerate(names)}
        return {f"w_{n}": w[i].float() for i, n in enumerate(names)}

    def _k(self, present: int) -> int:
        """The K of K·G·w: every task (official) or the ``present`` ones (drop)."""
        return len(TASKS) if self.empty_task == "official" else present


def task_gradients(losses: list[torch.Tensor], params: list[torch.nn.Parameter]) -> torch.Tensor:
    """(K, P) float32: row k = ∂losses[k]/∂params flattened (zeros where a parameter is unused)."""
    rows = []
    for k, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                               for g, p in zip(grads, params)]))
    return torch.stack(rows)


def _add_to_grads(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p).to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        offset += n
