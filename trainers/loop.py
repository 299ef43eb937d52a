"""``train(config) -> TrainResult``: the training loop, top to bottom (setup → data → model → step → loop → save).

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` samples per process. Everything a
run needs to continue exactly is in its checkpoints (``trainers.checkpoint``); the losses of a resumed
run equal those of an uninterrupted one. SIGINT/SIGTERM finish the current step, save a checkpoint and
return; a second SIGINT aborts at once. A non-finite loss or gradient stops the run with
:class:`NonFiniteLossError` before the bad update reaches the weights or a checkpoint.

Callbacks are called after every optimizer step (after its checkpoint, if one is due) with a
:class:`StepEvent`; returning True asks the run to stop as a signal would.

What trains is a LoRA on the UNet, unless the objective owns trainable modules (``objectives.base.OwnsModules``,
e.g. ``pose-adapter``, ``train-scorer``): then those modules train instead (no LoRA unless the objective sets
``wants_lora``), they are prepared by accelerate, checkpointed and resumed through the objective's
``export``/``restore``, and the output file is the objective's export. ``trainers.run`` opens a run (everything
before the first step); this module steps and saves it. Recipes (``trainers.recipes``) compose several runs.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_write_text
from ..core.errors import VitruvianError
from ..core.signals import StopRequest
from .checkpoint import LORA_FILE, checkpoint_dirs, save_checkpoint
from .objectives.base import OwnsBackward
from .progress import PROGRESS_FILE, Progress, read_progress
from .run import RESUME_IDENTITY, Run, open_run

__all__ = ["train", "TrainResult", "StepEvent", "NonFiniteLossError", "RESUME_IDENTITY"]

class NonFiniteLossError(VitruvianError, FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite; the weights were not updated with it."""


@dataclass(frozen=True)
class TrainResult:
    """What a run produced.

    Attributes:
        lora_path: ``<out>/<name>.safetensors`` when the run completed, else the newest
            ``<out>/<name>-step<N>.safetensors`` (an interrupted run). For an objective with its own
            modules (``setup``) it is that objective's export (e.g. a pose adapter), not a LoRA.
        steps: optimizer steps done in total (including those before a resume).
        final_loss: loss of the last step run. metrics: that step's metrics.
        out_dir: the output folder. checkpoints: every checkpoint folder, oldest first.
        interrupted: "" when the run completed; else "SIGINT", "SIGTERM" or "callback".
    """

    lora_path: Path
    steps: int
    final_loss: float
    metrics: dict[str, float]
    out_dir: Path
    checkpoints: tuple[Path, ...]
    interrupted: str = ""
    output_kind: str = "LoRA"


@dataclass
class StepEvent:
    """Passed to callbacks after each optimizer step.

    Attributes:
        step: optimizer steps done. record: the progress.jsonl record of that step.
        unet: the unwrapped policy UNet (LoRA injected). keys: item keys this process trained on.
        rank: this process's index. checkpoint: the folder saved at this step, or None.
        extras: ``{"modules": {name: module}}``, the objective's own trained modules (unwrapped), if any.
    """

    step: int
    record: dict
    unet: torch.nn.Module
    keys: list[str]
    rank: int
    checkpoint: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def train(config, *, callbacks: Sequence[Callable[[StepEvent], bool | None]] = (), objective=None) -> TrainResult:
    """Train a LoRA (or the objective's own modules) with ``config`` (a ``TrainConfig``); see the module docstring.

    ``objective``: an objective instance to train instead of the registry's ``config.objective`` (recipes).
    """
    if objective is None:
        from .objectives import get_objective

        objective = get_objective(config.objective, config)
    run = open_run(config, objective)
    progress = Progress(run.out / PROGRESS_FILE, total=config.steps, start=run.step, enabled=run.is_main,
                        log_every=config.log_every, desc=f"{config.objective} {config.name}")
    if run.resume is not None:
        done = read_progress(run.out / PROGRESS_FILE)
        if done:
            run.loss, run.metrics = float(done[-1]["loss"]), dict(done[-1]["metrics"])
    stop, interrupted = StopRequest(), ""  # its handler only records; this loop reports and saves
    try:
        stop.install()
        while run.step < config.steps:
            t0, keys = time.perf_counter(), _step(run)
            record = progress.update(run.step, loss=run.loss, lr=run.lr,
                                     metrics=run.metrics, seconds=time.perf_counter() - t0)
            wants_stop = _agree(run.accelerator, stop.signum != 0)
            if wants_stop and run.step < config.steps:
                progress.write(f"train: {stop.name or 'SIGTERM'} received; saving a checkpoint at step {run.step} "
                               "(press Ctrl-C again to abort without saving)")
            saved = None
            if run.step % config.checkpoint_every == 0 or run.step == config.steps or wants_stop:
                saved = _save(run)
            event = StepEvent(step=run.step, record=record, unet=run.raw_unet, keys=keys, rank=run.accelerator.process_index,
                              checkpoint=saved, extras={"modules": run.modules} if run.modules else {})
            by_callback = _agree(run.accelerator, any([bool(cb(event)) for cb in callbacks]))
            if (wants_stop or by_callback) and run.step < config.steps:
                saved = saved or _save(run)
                interrupted = (stop.name or "SIGTERM") if wants_stop else "callback"
                progress.write(f"train: stopped by {interrupted} after step {run.step}/{config.steps}; checkpoint "
                               f"saved to {saved}; continue with --set resume=latest")
                break
    finally:
        stop.uninstall()
        progress.close()
    return _finish(run, interrupted)


# ---------------------------------------------------------------------------------------------------
# one step, a checkpoint, the end


def _step(run: Run) -> list[str]:
    """One optimizer step of ``grad_accum`` micro-batches; sets ``run.loss``/``metrics``/``lr``; returns the keys."""
    config, accelerator = run.config, run.accelerator
    device = accelerator.device
    loss_sum = torch.zeros((), device=device)
    metric_sums: dict[str, torch.Tensor] = {}
    keys: list[str] = []
    for _ in range(config.grad_accum):
        inputs = run.encoder(next(run.loader))
        keys += inputs["keys"]
        with accelerator.accumulate(*run.synced):
            run.ctx.step = run.step
            result = run.objective(inputs, run.ctx)
            loss = accelerator.reduce(result.loss.detach().float(), "mean")  # same on every process
            if not torch.isfinite(loss):
                raise NonFiniteLossError(_nan_message("loss", loss.item(), run.step + 1, run.last_checkpoint))
            metrics = dict(result.metrics)
            if isinstance(run.objective, OwnsBackward):  # e.g. mpd: per-task gradients
                metrics.update(run.objective.backward(result, run.params, accelerator, step=run.step) or {})
            else:
                accelerator.backward(result.loss)
            if accelerator.sync_gradients:
                norm = accelerator.clip_grad_norm_(run.params, config.max_grad_norm)
                if accelerator.mixed_precision != "fp16" and not torch.isfinite(norm):  # fp16: the scaler skips it
                    raise NonFiniteLossError(_nan_message("gradient norm", float(norm), run.step + 1,
                                                          run.last_checkpoint))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss
        if metrics:  # averaged over processes in one all-reduce
            logged = accelerator.reduce(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device)
                                                     .detach().reshape(()) for v in metrics.values()]), "mean")
            for k, v in zip(metrics, logged):
                metric_sums[k] = metric_sums.get(k, 0) + v
    run.lr = run.lr_scheduler.get_last_lr()[0]
    run.lr_scheduler.step()
    run.step += 1
    run.samples += config.grad_accum * config.batch_size
    run.loss = loss_sum.item() / config.grad_accum
    run.metrics = {k: v.item() / config.grad_accum for k, v in metric_sums.items()}
    return keys


def _save(run: Run) -> Path:
    """Checkpoint ``run.step`` (every process); refuses non-finite trained weights."""
    named = [(n, p) for n, p in run.raw_unet.named_parameters() if p.requires_grad] if run.raw_unet is not None else []
    named += [(f"{m}.{n}", p) for m, module in run.modules.items() for n, p in module.named_parameters()
              if p.requires_grad]
    bad = [n for n, p in named if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(f"train: trained weights must be finite to checkpoint, got NaN/inf in {bad[:3]} "
                                 f"at step {run.step}; the previous checkpoint is kept")
    if run.cache is not None:
        run.cache.flush()
    exports, publish, step = {}, LORA_FILE, run.step
    if run.use_lora:  # in the family's key format
        exports[LORA_FILE] = lambda path: run.base.family.save_lora(path, run.raw_unet, config=run.cfg, step=step,
                                                                     kind=run.base.kind)
    if run.owns_modules:
        objective = run.objective
        publish = objective.export_name
        exports[publish] = lambda path: objective.export(path, config=run.cfg, step=step)
    run.last_checkpoint = save_checkpoint(
        run.accelerator, run.out, step=run.step, samples_consumed=run.samples,
        optimizer=run.optimizer, lr_scheduler=run.lr_scheduler, generator=run.generator, config=run.cfg,
        name=run.config.name, exports=exports, publish=publish)
    return run.last_checkpoint


def _finish(run: Run, interrupted: str) -> TrainResult:
    """Write the final output (the LoRA, or the objective's export) unless interrupted; the result."""
    config, out = run.config, run.out
    if run.cache is not None:
        run.cache.flush()
    lora_path = out / (run.objective.output_file if run.owns_modules else "{name}.safetensors").format(name=config.name)
    if interrupted:
        lora_path = out / f"{config.name}-step{run.step}.safetensors"
    elif run.is_main:
        if run.owns_modules:  # the objective's file is the output; a LoRA trained beside it gets its own name
            run.objective.export(lora_path, config=run.cfg, step=run.step)
        if run.use_lora:
            lora_file = lora_path if not run.owns_modules else out / f"{config.name}-lora.safetensors"
            run.base.family.save_lora(lora_file, run.raw_unet, config=run.cfg, step=run.step, kind=run.base.kind,
                                      final=True)
        atomic_write_text(out / "config.json", json.dumps(run.cfg, indent=2) + "\n")
    run.accelerator.wait_for_everyone()
    kind = getattr(run.objective, "output_kind", "LoRA") if run.owns_modules else "LoRA"
    return TrainResult(lora_path=lora_path, steps=run.step, final_loss=run.loss, metrics=run.metrics, out_dir=out,
                       checkpoints=tuple(c.path for c in checkpoint_dirs(out)), interrupted=interrupted,
                       output_kind=kind)


def _nan_message(what: str, value: float, step: int, last_ckpt: Path | None) -> str:
    kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    return (f"train: {what} must be finite, got {value} at step {step}; the update was not applied and {kept}; "
            "fix: lower learning_rate or beta, use mixed_precision=no or bf16, and resume with --set resume=latest")


def _agree(accelerator, flag: bool) -> bool:
    """True on every process when it is True on any (a signal may reach only some ranks)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, "sum").item() > 0)
