"""One training run's state (:class:`Run`) and how it is opened: accelerator, resume, data, model, optimizer.

:func:`open_run` does everything before the first step, in an order that never changes (the losses of a run
depend on it: seeds are set before the data, the objective's modules and the LoRA are built): checks that need
no model (objective, dataset, resume settings), then the data loader, the frozen base with the trainable
weights, the optimizer and scheduler, ``accelerator.prepare``, the latent cache and the objective's context,
and finally the restored state of a resumed run. ``trainers.loop`` steps it and saves it.

The latent cache is filled before the first step (:func:`_fill_cache`), in no-grad passes over the dataset,
when the augmentation is static or only flips (both flips are encoded); with ``random_crop`` the latents
depend on each epoch's crop and the cache fills lazily during training instead (said in the log).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError
from .checkpoint import CHECKPOINT_DIR, Checkpoint, checkpoint_dirs, clean_stale, load_torch_state, resolve_resume, restore_rng, restore_trainable
from .objectives.base import ChecksDataset, OwnsModules, PreparesBase
from .progress import PROGRESS_FILE, truncate_progress

__all__ = ["Run", "open_run", "RESUME_IDENTITY"]

#: Settings a resumed run must share with its checkpoint (they decide the data order and the LoRA shape).
RESUME_IDENTITY = ("objective", "rank", "alpha", "lora_targets", "seed", "batch_size", "grad_accum",
                   "resolution", "random_flip", "random_crop", "train_text_encoder")


@dataclass
class Run:
    """Everything a run holds between two steps.

    Attributes:
        config / cfg: the ``TrainConfig`` and its ``to_dict()``. out: the output folder.
        objective: the objective; ``owns_modules`` when it trains modules of its own (:class:`OwnsModules`),
            ``use_lora`` when a LoRA on the UNet trains (beside them or alone).
        accelerator: the ``accelerate.Accelerator``. resume: the checkpoint continued, or None.
        base: the frozen ``BaseModel`` (None for an objective with ``needs_base = False``).
        unet / raw_unet: the policy as prepared by accelerate and unwrapped (None without a base).
        modules / prepared: the objective's own modules, unwrapped and as prepared (same names).
        params: every trained parameter. optimizer, lr_scheduler: theirs.
        loader: endless iterator of collated batches. encoder: batch → model-ready batch (latent cache).
        cache: the ``LatentCache`` or None. generator: this process's noise generator. ctx: the objective's.
        step: optimizer steps done. samples: samples this process took from its loader.
        loss, lr, metrics: the last step's. last_checkpoint: the newest checkpoint folder, or None.
    """

    config: Any
    cfg: dict
    out: Path
    objective: Any
    accelerator: Any
    resume: Checkpoint | None
    base: Any
    unet: torch.nn.Module | None
    raw_unet: torch.nn.Module | None
    modules: dict[str, torch.nn.Module]
    prepared: dict[str, torch.nn.Module]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    loader: Any
    encoder: Any
    cache: Any
    generator: torch.Generator
    ctx: Any
    use_lora: bool
    dataset_len: int | None
    static_aug: bool
    step: int = 0
    samples: int = 0
    loss: float = float("nan")
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None

    @property
    def owns_modules(self) -> bool:
        return isinstance(self.objective, OwnsModules)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def synced(self) -> list[torch.nn.Module]:
        """The models whose gradients accelerate synchronises (``accelerator.accumulate``)."""
        return ([self.unet] if self.use_lora else []) + list(self.prepared.values())


def open_run(config, objective) -> Run:
    """Check, load and prepare everything for ``config``'s run of ``objective``; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .data import make_loader, open_dataset, validate_dataset

    if config.train_text_encoder:
        raise ConfigError("train: train_text_encoder must be false for now (text-encoder LoRA is not "
                          "implemented by the engine yet), got true; fix: --set train_text_encoder=false")
    records = validate_dataset(config.data)
    if isinstance(objective, ChecksDataset):
        objective.check_dataset(records)
    owns = isinstance(objective, OwnsModules)
    use_lora = not owns or bool(getattr(objective, "wants_lora", False))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.to_dict()

    mixed = config.mixed_precision
    if mixed != "no" and not torch.cuda.is_available():
        print(f"train: mixed_precision={mixed!r} needs a GPU; running in fp32 on the CPU "
              "(bf16/fp16 on the CPU turn DPO losses into noise)", flush=True)
        mixed = "no"
    # several processes (torchrun / accelerate launch) on a machine without CUDA: DDP over gloo on the CPU
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=cpu_ddp, mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum)
    rank, world = accelerator.process_index, accelerator.num_processes

    resume = resolve_resume(out, config.resume)
    if resume is None and config.resume == "latest" and accelerator.is_main_process:
        print(f"train: resume='latest' but {out / CHECKPOINT_DIR} holds no checkpoint; starting fresh",
              flush=True)
    _check_resume(config, cfg, resume, out, world, tuple(getattr(objective, "resume_identity", ())))
    accelerator.wait_for_everyone()  # everyone has read the checkpoint list before the main process cleans
    if accelerator.is_main_process:
        clean_stale(out)
        truncate_progress(out / PROGRESS_FILE, resume.step if resume else 0)
    samples = resume.samples_consumed if resume else 0
    set_seed(config.seed)

    # -- data
    dataset = open_dataset(config.data, resolution=config.resolution, random_flip=config.random_flip,
                           random_crop=config.random_crop, seed=config.seed)
    _check_images_per_sample(dataset, objective)
    loader = make_loader(dataset, batch_size=config.batch_size, seed=config.seed, start_index=samples,
                         rank=rank, world_size=world, num_workers=config.num_workers)

    # -- model: frozen base + fp32 LoRA and/or the objective's modules; the frozen VAE/text encoders feed the cache
    base, unet, own_params, modules = _load_frozen_base(config, objective, accelerator, mixed), None, [], {}
    if owns:
        torch.manual_seed(config.seed)  # the objective's new weights
        own_params = list(objective.setup(base.unet if base is not None else None))  # before any LoRA layer
        modules = dict(objective.modules)
        if not own_params or not modules:
            raise ConfigError(f"train: objective {objective.name!r} setup must return trainable parameters and "
                              f"expose their modules, got {len(own_params)} parameters in {len(modules)} modules")
    lora_params = []
    if base is not None:
        unet, lora_params = _with_lora(base.unet, config) if use_lora else (base.unet, [])
        if config.gradient_checkpointing or config.low_memory:
            unet.enable_gradient_checkpointing()
    params = lora_params + own_params
    optimizer = _make_optimizer(params, config, accelerator)
    from diffusers.optimization import get_constant_schedule_with_warmup

    lr_scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.lr_warmup_steps)
    unet, prepared, optimizer = _prepare(accelerator, unet, use_lora and base is not None, modules, optimizer)
    raw_unet = accelerator.unwrap_model(unet, keep_fp32_wrapper=True) if unet is not None else None

    cache, encoder = _encoder(config, base, accelerator.device, out)
    generator = torch.Generator(device=accelerator.device).manual_seed(_rank_seed(config.seed, rank))
    from .objectives import ObjectiveContext

    ctx = ObjectiveContext(unet=unet, scheduler=base.scheduler if base is not None else None, generator=generator,
                           empty_cond=encoder.text("") if config.proportion_empty_prompts > 0 and base is not None else None,
                           modules=prepared, process=base.family.process(base.scheduler, config) if base is not None else None)
    _fill_cache(config, dataset, encoder, accelerator, keep_vae=isinstance(objective, PreparesBase))
    run = Run(config=config, cfg=cfg, out=out, objective=objective, accelerator=accelerator, resume=resume,
              base=base, unet=unet, raw_unet=raw_unet, modules=modules, prepared=prepared, params=params,
              optimizer=optimizer, lr_scheduler=lr_scheduler, loader=loader, encoder=encoder, cache=cache,
              generator=generator, ctx=ctx, use_lora=use_lora and base is not None,
              dataset_len=len(dataset) if hasattr(dataset, "__len__") else None,  # (ranks draw new shards)
              static_aug=not (config.random_flip or config.random_crop), step=resume.step if resume else 0,
              samples=samples, last_checkpoint=resume.path if resume else None)
    if resume is not None:
        _restore(run, resume)
    return run


# ---------------------------------------------------------------------------------------------------
# the parts of open_run, in its order


def _check_resume(config, cfg_dict: dict, resume, out: Path, world: int, extra_identity: tuple = ()) -> None:
    if resume is None:
        existing = checkpoint_dirs(out)
        if existing:
            raise ConfigError(
                f"train: out must not hold another run's checkpoints when starting fresh, got "
                f"{len(existing)} in {out / CHECKPOINT_DIR} (newest step {existing[-1].step}); "
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


def _load_frozen_base(config, objective, accelerator, mixed: str):
    """The frozen base model in the run's weight dtype, prepared by the objective; None when it needs none."""
    if not getattr(objective, "needs_base", True):
        return None
    from .models import load_base

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    base = load_base(config.base, tokenizer=config.tokenizer, device=accelerator.device, dtype=weight_dtype,
                     text_encoders=config.text_encoders, vae=config.vae)
    if weight_dtype == torch.float16:
        base.vae.to(torch.float32)  # SD/SDXL VAEs overflow in fp16
    if config.text_tokens and "t5_tokens" in base.configs:
        base.configs["t5_tokens"] = config.text_tokens
    if config.base_storage == "fp8" or config.low_memory:
        # before the LoRA layers exist, so only base weights are stored in fp8 (diffusers keeps norms and
        # embeddings in the compute dtype); each layer is up-cast when it runs
        base.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=weight_dtype)
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
        m.eval()
    if isinstance(objective, PreparesBase):
        objective.prepare_base(base)
    return base


def _with_lora(unet: torch.nn.Module, config) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    from .models import add_lora

    torch.manual_seed(config.seed)  # LoRA A init
    unet = add_lora(unet, rank=config.rank, alpha=config.alpha, targets=config.lora_targets)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"train: lora_targets must match some UNet modules, got {config.lora_targets!r} "
                          "which matched none; fix: --set lora_targets=to_q,to_k,to_v,to_out.0")
    return unet, params


def _make_optimizer(params: list[torch.nn.Parameter], config, accelerator) -> torch.optim.Optimizer:
    if config.use_8bit_adam or (config.low_memory and torch.cuda.is_available()):
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=config.learning_rate)
        except ImportError:
            if accelerator.is_main_process:
                print("train: 8-bit AdamW (use_8bit_adam or low_memory) needs bitsandbytes, which does not import; using torch AdamW "
                      "(pip install bitsandbytes on a CUDA machine)", flush=True)
    # foreach: one fused kernel per step over all LoRA tensors; torch picks it only for CUDA by default, and on the
    # CPU the per-tensor loop costs ≈ 2 ms per step over 64 small tensors (the same arithmetic: pinned losses agree)
    return torch.optim.AdamW(params, lr=config.learning_rate, foreach=True)


def _prepare(accelerator, unet, lora: bool, modules: dict, optimizer):
    """``accelerator.prepare``: the LoRA UNet with the modules and the optimizer; a frozen UNet gets autocast only
    (a DDP wrapper needs parameters with gradients). Returns (unet, prepared modules by name, optimizer)."""
    if lora:
        unet, *prepared, optimizer = accelerator.prepare(unet, *modules.values(), optimizer)
    else:
        if unet is not None:
            unet = accelerator.prepare_model(unet, evaluation_mode=True)
        *prepared, optimizer = accelerator.prepare(*modules.values(), optimizer)
    return unet, dict(zip(modules, prepared)), optimizer


def _encoder(config, base, device, out: Path):
    """(cache or None, batch encoder): latents and text conditioning from the frozen base, cached."""
    from .latent_cache import BatchEncoder, LatentCache, PixelBatch

    if base is None:
        return None, PixelBatch(device)
    cache = LatentCache(Path(config.cache_dir) if config.cache_dir else out / "cache") if config.cache_latents else None
    return cache, BatchEncoder(base, device=device, cache=cache)


def _fill_cache(config, dataset, encoder, accelerator, *, keep_vae: bool) -> None:
    """Encode every item's latents (both flips with ``random_flip``) and prompt before the first step, then move
    the encoders off the accelerator; no training step encodes. Nothing without a cache, with ``random_crop``, or
    when the run takes less than one epoch (a few hundred steps over Pick-a-Pic must not encode a million pairs).

    Each item goes through ``encoder.encode_item``: the per-item calls a step would make, so the cached bits
    are the lazy path's. Several processes: process r encodes items r, r + W, …, writes them to the cache's
    shards, and after a barrier every process indexes all shards (the others' items are read from disk).
    """
    cache = getattr(encoder, "cache", None)
    if cache is None:
        return
    main = accelerator.is_main_process
    if config.random_crop:
        if main:
            print("train: random_crop=true: each epoch crops anew, so latents are encoded during training as "
                  "their crops appear (no up-front latent-cache pass)", flush=True)
        return
    rank, world = accelerator.process_index, accelerator.num_processes
    size = len(dataset) if hasattr(dataset, "__len__") else sum(u.rows for u in getattr(dataset, "units", ()))
    drawn = config.steps * config.grad_accum * config.batch_size * world  # samples the whole run takes
    if size and drawn < size:  # a short run over a large set: encoding every item up front would cost more
        if main:
            print(f"train: the run takes {drawn} of the {size} samples (less than one epoch); latents are encoded "
                  "as items first appear (no up-front latent-cache pass)", flush=True)
        return
    items, total = _dataset_items(dataset, rank, world, config.num_workers)
    if items is None:
        if main:
            print(f"train: {type(dataset).__name__} cannot be listed ahead of training; the latent cache fills "
                  "during the first epoch", flush=True)
        return
    from .progress import PassProgress

    flips = bool(config.random_flip)
    bar = PassProgress(total, desc="train: latent cache" + (" (both flips)" if flips else ""), enabled=main)
    with torch.no_grad():
        for item in items:
            encoder.encode_item(item, both_flips=flips)
            bar.update()
    seconds = bar.close()
    if world > 1:
        cache.persist()
        accelerator.wait_for_everyone()
        cache.refresh()
    encoder.offload(keep_vae=keep_vae)
    if hasattr(dataset, "decode_pixels"):  # every item's latents are cached: steps read only headers and the cache
        dataset.decode_pixels = False
    if main:
        print(f"train: latent cache: {len(cache)} entries (latents and prompts) ready in {seconds:.1f} s before "
              f"the first step{f' (this process encoded 1/{world} of them)' if world > 1 else ''}", flush=True)


def _dataset_items(dataset, rank: int, world: int, num_workers: int):
    """(iterator of this process's share of the items, how many at most), or (None, 0) for an unknown kind.

    A map-style dataset: items ``(0, i)`` for i = rank, rank + W, … through a DataLoader with the run's workers
    (decoding in parallel, items un-batched). A Pick-a-Pic stream: every kept row of row groups rank, rank + W,
    … of epoch 0, read in this process (the augmentation is static, so epoch 0's pixels are every epoch's).
    """
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        from torch.utils.data import DataLoader

        indices = [(0, i) for i in range(rank, len(dataset), world)]
        return iter(DataLoader(dataset, batch_size=None, sampler=indices, num_workers=num_workers,  # own generator:
                               collate_fn=_identity, generator=torch.Generator())), len(indices)  # global RNG kept
    units = getattr(dataset, "units", None)
    if units is None or not hasattr(dataset, "_iter_unit"):
        return None, 0
    mine = range(rank, len(units), world)
    return (load() for u in mine for load in dataset._iter_unit(u, 0)), sum(units[u].rows for u in mine)


def _identity(item):
    return item


def _rank_seed(seed: int, rank: int) -> int:
    """Independent noise streams per process, reproducible from (seed, rank)."""
    return int.from_bytes(hashlib.sha256(f"noise:{seed}:{rank}".encode()).digest()[:8], "little") >> 1


def _restore(run: Run, resume: Checkpoint) -> None:
    """Put a checkpoint's trained weights, optimizer, scheduler, scaler and noise stream back into ``run``."""
    device = run.accelerator.device
    if run.use_lora:
        restore_trainable(run.raw_unet, resume)
    if run.owns_modules:
        run.objective.restore(resume.path / run.objective.export_name)
    run.optimizer.load_state_dict(load_torch_state(resume.path / "optimizer.pt", device))
    run.lr_scheduler.load_state_dict(load_torch_state(resume.path / "scheduler.pt"))
    if run.accelerator.scaler is not None and (resume.path / "scaler.pt").is_file():
        run.accelerator.scaler.load_state_dict(load_torch_state(resume.path / "scaler.pt"))
    restore_rng(resume, run.accelerator.process_index, run.generator)
    if run.is_main:
        print(f"train: resumed from {resume.path} (step {resume.step})", flush=True)
