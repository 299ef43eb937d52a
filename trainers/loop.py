"""``train(config) -> TrainResult``: the training loop, top to bottom (setup → data → model → step → loop → save).

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` samples per process. Everything a
run needs to continue exactly is in its checkpoints (``trainers.checkpoint``); the losses of a resumed
run equal those of an uninterrupted one. SIGINT/SIGTERM finish the current step, save a checkpoint and
return; a second SIGINT aborts at once. A non-finite loss or gradient stops the run with
:class:`NonFiniteLossError` before the bad update reaches the weights or a checkpoint.

Callbacks are called after every optimizer step (after its checkpoint, if one is due) with a
:class:`StepEvent`; returning True asks the run to stop as a signal would.

What trains is a LoRA on the UNet, unless the objective owns trainable modules (an optional ``setup``
hook, e.g. ``pose-adapter``; see ``objectives.base``): then those modules train instead (no LoRA unless
the objective sets ``wants_lora``), they are prepared by accelerate, checkpointed and resumed through the
objective's ``export``/``restore``, and the output file is the objective's export.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_write_text
from ..core.errors import ConfigError, VitruvianError
from ..core.signals import StopRequest
from . import checkpoint as ckpt_io
from .progress import PROGRESS_FILE, Progress, read_progress, truncate_progress

__all__ = ["train", "TrainResult", "StepEvent", "NonFiniteLossError", "RESUME_IDENTITY"]

#: Settings a resumed run must share with its checkpoint (they decide the data order and the LoRA shape).
RESUME_IDENTITY = ("objective", "rank", "alpha", "lora_targets", "seed", "batch_size", "grad_accum",
                   "resolution", "random_flip", "random_crop", "train_text_encoder")


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


def train(config, *, callbacks: Sequence[Callable[[StepEvent], bool | None]] = ()) -> TrainResult:
    """Train a LoRA (or the objective's own modules) with ``config`` (a ``TrainConfig``); see the module docstring."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .data import make_loader, open_dataset, validate_dataset
    from .latent_cache import BatchEncoder, LatentCache
    from .models import add_lora, load_base, save_lora
    from .objectives import ObjectiveContext, get_objective

    # -- setup: objective and dataset are checked before anything heavy loads ---------------------------
    objective = get_objective(config.objective, config)
    drive = getattr(objective, "drive", None)  # an objective that runs its own stages/loop (hg-dpo, train-scorer)
    if drive is not None:
        return drive(config, callbacks=callbacks)
    if config.train_text_encoder:
        raise ConfigError("train: train_text_encoder must be false for now (text-encoder LoRA is not "
                          "implemented by the engine yet), got true; fix: --set train_text_encoder=false")
    records = validate_dataset(config.data)
    check_dataset = getattr(objective, "check_dataset", None)  # e.g. pose-adapter: every record has a pose
    if check_dataset is not None:
        check_dataset(records)
    setup = getattr(objective, "setup", None)  # the objective trains modules of its own (pose-adapter)
    use_lora = setup is None or bool(getattr(objective, "wants_lora", False))
    output_kind = getattr(objective, "output_kind", "LoRA") if setup is not None else "LoRA"
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = config.to_dict()

    mixed = config.mixed_precision
    if mixed != "no" and not torch.cuda.is_available():
        print(f"train: mixed_precision={mixed!r} needs a GPU; running in fp32 on the CPU "
              "(bf16/fp16 on the CPU turn DPO losses into noise)", flush=True)
        mixed = "no"
    # several processes (torchrun / accelerate launch) on a machine without CUDA: DDP over gloo on the CPU
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum)
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device

    resume = ckpt_io.resolve_resume(out, config.resume)
    if resume is None and config.resume == "latest" and accelerator.is_main_process:
        print(f"train: resume='latest' but {out / ckpt_io.CHECKPOINT_DIR} holds no checkpoint; starting fresh",
              flush=True)
    _check_resume(config, cfg_dict, resume, out, world, tuple(getattr(objective, "resume_identity", ())))
    accelerator.wait_for_everyone()  # everyone has read the checkpoint list before the main process cleans
    if accelerator.is_main_process:
        ckpt_io.clean_stale(out)
        truncate_progress(out / PROGRESS_FILE, resume.step if resume else 0)
    start_step = resume.step if resume else 0
    samples_consumed = resume.samples_consumed if resume else 0
    set_seed(config.seed)

    # -- data -------------------------------------------------------------------------------------------
    dataset = open_dataset(config.data, resolution=config.resolution, random_flip=config.random_flip,
                           random_crop=config.random_crop, seed=config.seed)
    _check_images_per_sample(dataset, objective)
    loader = make_loader(dataset, batch_size=config.batch_size, seed=config.seed, start_index=samples_consumed,
                         rank=rank, world_size=world, num_workers=config.num_workers)

    # -- model: frozen base + fp32 LoRA (or the objective's modules); frozen VAE/text encoders feed the cache
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    base = load_base(config.base, tokenizer=config.tokenizer, device=device, dtype=weight_dtype)
    if weight_dtype == torch.float16:
        base.vae.to(torch.float32)  # SD/SDXL VAEs overflow in fp16
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
        m.eval()
    prepare_base = getattr(objective, "prepare_base", None)  # e.g. hg-dpo: merge the previous stages' LoRAs
    if prepare_base is not None:
        prepare_base(base)
    own_params, modules = [], {}
    if setup is not None:
        torch.manual_seed(config.seed)  # the objective's new weights
        own_params = list(setup(base.unet))  # from the plain frozen UNet (before any LoRA layer)
        modules = dict(objective.modules)
        if not own_params or not modules:
            raise ConfigError(f"train: objective {objective.name!r} setup must return trainable parameters and "
                              f"expose their modules, got {len(own_params)} parameters in {len(modules)} modules")
    unet = base.unet
    lora_params = []
    if use_lora:
        torch.manual_seed(config.seed)  # LoRA A init
        unet = add_lora(base.unet, rank=config.rank, alpha=config.alpha, targets=config.lora_targets)
        unet.train()
        lora_params = [p for p in unet.parameters() if p.requires_grad]
        if not lora_params:
            raise ConfigError(f"train: lora_targets must match some UNet modules, got {config.lora_targets!r} "
                              "which matched none; fix: --set lora_targets=to_q,to_k,to_v,to_out.0")
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = lora_params + own_params
    optimizer = _make_optimizer(params, config, accelerator)
    from diffusers.optimization import get_constant_schedule_with_warmup

    lr_scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.lr_warmup_steps)
    # the scheduler is stepped once per step by us
    if use_lora:
        unet, *prepared, optimizer = accelerator.prepare(unet, *modules.values(), optimizer)
    else:  # a frozen UNet gets autocast only (a DDP wrapper needs parameters with gradients)
        unet = accelerator.prepare_model(unet, evaluation_mode=True)
        *prepared, optimizer = accelerator.prepare(*modules.values(), optimizer)
    prepared = dict(zip(modules, prepared))
    raw_unet = accelerator.unwrap_model(unet, keep_fp32_wrapper=True)
    synced = ([unet] if use_lora else []) + list(prepared.values())  # the models gradients are synced for
    trained = {"lora": use_lora, "objective": objective if setup is not None else None, "modules": modules}

    cache = None
    if config.cache_latents:
        cache = LatentCache(Path(config.cache_dir) if config.cache_dir else out / "cache")
    encoder = BatchEncoder(base, device=device, cache=cache)
    generator = torch.Generator(device=device).manual_seed(_rank_seed(config.seed, rank))
    ctx = ObjectiveContext(unet=unet, scheduler=base.scheduler, generator=generator,
                           empty_cond=encoder.text("") if config.proportion_empty_prompts > 0 else None,
                           modules=prepared)
    static_aug = not (config.random_flip or config.random_crop)
    dataset_len = len(dataset) if hasattr(dataset, "__len__") else None  # (ranks draw new shards each epoch)

    if resume is not None:
        if use_lora:
            ckpt_io.restore_trainable(raw_unet, resume)
        if setup is not None:
            objective.restore(resume.path / objective.export_name)
        optimizer.load_state_dict(ckpt_io.load_torch_state(resume.path / "optimizer.pt", device))
        lr_scheduler.load_state_dict(ckpt_io.load_torch_state(resume.path / "scheduler.pt"))
        if accelerator.scaler is not None and (resume.path / "scaler.pt").is_file():
            accelerator.scaler.load_state_dict(ckpt_io.load_torch_state(resume.path / "scaler.pt"))
        ckpt_io.restore_rng(resume, rank, generator)
        if accelerator.is_main_process:
            print(f"train: resumed from {resume.path} (step {resume.step})", flush=True)

    # -- the loop ---------------------------------------------------------------------------------------
    progress = Progress(out / PROGRESS_FILE, total=config.steps, start=start_step,
                        enabled=accelerator.is_main_process, log_every=config.log_every,
                        desc=f"{config.objective} {config.name}")
    stop_signal = StopRequest()  # its handler only records; this loop reports and saves
    step, last_ckpt = start_step, (resume.path if resume else None)
    final_loss, final_metrics, interrupted = math.nan, {}, ""
    if resume is not None:
        done = read_progress(out / PROGRESS_FILE)
        if done:
            final_loss, final_metrics = float(done[-1]["loss"]), dict(done[-1]["metrics"])
    try:
        stop_signal.install()
        while step < config.steps:
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            metric_sums: dict[str, torch.Tensor] = {}
            keys: list[str] = []
            for _ in range(config.grad_accum):
                inputs = encoder(next(loader))
                keys += inputs["keys"]
                with accelerator.accumulate(*synced):
                    ctx.step = step
                    result = objective(inputs, ctx)
                    loss = accelerator.reduce(result.loss.detach().float(), "mean")  # same on every process
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(_nan_message("loss", loss.item(), step + 1, last_ckpt))
                    metrics = dict(result.metrics)
                    owns_backward = getattr(objective, "backward", None)  # e.g. mpd: per-task gradients
                    if owns_backward is None:
                        accelerator.backward(result.loss)
                    else:
                        metrics.update(owns_backward(result, params, accelerator, step=step) or {})
                    if accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                        if mixed != "fp16" and not torch.isfinite(norm):  # fp16: the GradScaler skips it
                            raise NonFiniteLossError(_nan_message("gradient norm", float(norm), step + 1, last_ckpt))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss
                if metrics:  # averaged over processes in one all-reduce
                    logged = accelerator.reduce(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device)
                                                             .detach().reshape(()) for v in metrics.values()]), "mean")
                    for k, v in zip(metrics, logged):
                        metric_sums[k] = metric_sums.get(k, 0) + v
            lr = lr_scheduler.get_last_lr()[0]
            lr_scheduler.step()
            step += 1
            samples_consumed += config.grad_accum * config.batch_size
            if static_aug and dataset_len is not None and encoder.items_seen >= dataset_len:
                encoder.offload()  # every latent is cached: the VAE/text encoders can leave the GPU

            final_loss = loss_sum.item() / config.grad_accum
            final_metrics = {k: v.item() / config.grad_accum for k, v in metric_sums.items()}
            record = progress.update(step, loss=final_loss, lr=lr, metrics=final_metrics,
                                     seconds=time.perf_counter() - t0)
            wants_stop = _agree(accelerator, stop_signal.signum != 0)
            if wants_stop and step < config.steps:
                progress.write(f"train: {stop_signal.name or 'SIGTERM'} received; saving a checkpoint at step {step} "
                               "(press Ctrl-C again to abort without saving)")
            saved = None
            if step % config.checkpoint_every == 0 or step == config.steps or wants_stop:
                saved = last_ckpt = _save(accelerator, out, step, samples_consumed, raw_unet, optimizer,
                                          lr_scheduler, generator, cfg_dict, config.name, cache, base.kind, trained)
            event = StepEvent(step=step, record=record, unet=raw_unet, keys=keys, rank=rank, checkpoint=saved,
                              extras={"modules": modules} if modules else {})
            by_callback = _agree(accelerator, any([bool(cb(event)) for cb in callbacks]))
            if (wants_stop or by_callback) and step < config.steps:
                if saved is None:
                    saved = last_ckpt = _save(accelerator, out, step, samples_consumed, raw_unet, optimizer,
                                              lr_scheduler, generator, cfg_dict, config.name, cache, base.kind,
                                              trained)
                interrupted = (stop_signal.name or "SIGTERM") if wants_stop else "callback"
                progress.write(f"train: stopped by {interrupted} after step {step}/{config.steps}; checkpoint "
                               f"saved to {saved}; continue with --set resume=latest")
                break
    finally:
        stop_signal.uninstall()
        progress.close()

    # -- save -------------------------------------------------------------------------------------------
    if cache is not None:
        cache.flush()
    lora_path = out / f"{config.name}.safetensors"
    if interrupted:
        lora_path = out / f"{config.name}-step{step}.safetensors"
    elif accelerator.is_main_process:
        if setup is not None:  # the objective's file is the output; a LoRA trained beside it gets its own name
            objective.export(lora_path, config=cfg_dict, step=step)
        if use_lora:
            lora_file = lora_path if setup is None else out / f"{config.name}-lora.safetensors"
            save_lora(lora_file, raw_unet, config=cfg_dict, step=step, base_kind=base.kind)
        atomic_write_text(out / "config.json", json.dumps(cfg_dict, indent=2) + "\n")
    accelerator.wait_for_everyone()
    checkpoints = tuple(c.path for c in ckpt_io.checkpoint_dirs(out))
    return TrainResult(lora_path=lora_path, steps=step, final_loss=final_loss, metrics=final_metrics,
                       out_dir=out, checkpoints=checkpoints, interrupted=interrupted, output_kind=output_kind)


# ---------------------------------------------------------------------------------------------------
# helpers of the loop (in the order the loop uses them)


def _check_resume(config, cfg_dict: dict, resume, out: Path, world: int, extra_identity: tuple = ()) -> None:
    if resume is None:
        existing = ckpt_io.checkpoint_dirs(out)
        if existing:
            raise ConfigError(
                f"train: out must not hold another run's checkpoints when starting fresh, got "
                f"{len(existing)} in {out / ckpt_io.CHECKPOINT_DIR} (newest step {existing[-1].step}); "
                "fix: --set resume=latest to continue that run, or choose another out folder"
            )
        return
    diffs = [f"{k}: checkpoint {resume.config.get(k)!r}, now {cfg_dict.get(k)!r}"
             for k in RESUME_IDENTITY + extra_identity if resume.config.get(k) != cfg_dict.get(k)]
    if resume.world_size != world:
        diffs.append(f"processes: checkpoint {resume.world_size}, now {world}")
    if diffs:
        raise ConfigError(f"train: resume must use the settings of the run it continues, got differences in "
                          f"{resume.path}:\n  " + "\n  ".join(diffs) + "\nfix: use the checkpoint's values")


def _check_images_per_sample(dataset, objective) -> None:
    """A single-image dataset given to dpo fails here, before any model loads."""
    n = getattr(dataset, "images_per_sample", None)
    if n is None:  # read one item
        item = dataset[0] if hasattr(dataset, "__len__") else next(iter(dataset))
        n = item["pixels"].shape[0]
    if n < objective.images_per_sample:
        raise ConfigError(
            f"train: objective {objective.name!r} needs {objective.images_per_sample} images per sample "
            f"(chosen + rejected pairs), got a dataset with {n}; fix: use a pair dataset "
            '({"prompt", "chosen", "rejected"} lines) or --objective sft'
        )


def _make_optimizer(params: list[torch.nn.Parameter], config, accelerator) -> torch.optim.Optimizer:
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=config.learning_rate)
        except ImportError:
            if accelerator.is_main_process:
                print("train: use_8bit_adam=true but bitsandbytes does not import; using torch AdamW "
                      "(pip install bitsandbytes on a CUDA machine)", flush=True)
    return torch.optim.AdamW(params, lr=config.learning_rate)


def _rank_seed(seed: int, rank: int) -> int:
    """Independent noise streams per process, reproducible from (seed, rank)."""
    return int.from_bytes(hashlib.sha256(f"noise:{seed}:{rank}".encode()).digest()[:8], "little") >> 1


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


def _save(accelerator, out, step, samples, raw_unet, optimizer, lr_scheduler, generator, cfg_dict, name, cache,
          base_kind, trained):
    """Checkpoint ``step``; ``trained`` = {"lora": bool, "objective": one with ``setup`` or None, "modules": ...}."""
    named = [(n, p) for n, p in raw_unet.named_parameters() if p.requires_grad]
    named += [(f"{m}.{n}", p) for m, module in trained["modules"].items() for n, p in module.named_parameters()
              if p.requires_grad]
    bad = [n for n, p in named if not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(f"train: trained weights must be finite to checkpoint, got NaN/inf in {bad[:3]} "
                                 f"at step {step}; the previous checkpoint is kept")
    if cache is not None:
        cache.flush()
    objective, exports, publish = trained["objective"], {}, ckpt_io.LORA_FILE
    if objective is not None:
        publish = objective.export_name
        exports[publish] = lambda path: objective.export(path, config=cfg_dict, step=step)
    return ckpt_io.save_checkpoint(accelerator, out, step=step, samples_consumed=samples, unet=raw_unet,
                                   optimizer=optimizer, lr_scheduler=lr_scheduler, generator=generator,
                                   config=cfg_dict, name=name, base_kind=base_kind, lora=trained["lora"],
                                   exports=exports, publish=publish)
