"""A dpo step of our trainer ÷ its own UNet work, measured in the same run; where the rest goes.

    python -m benchmarks.step_overhead [--models tiny,mid] [--steps tiny=40,mid=8] [--warmup 3]
                                       [--threads 1] [--pairs 64] [--device cpu|cuda] [--profile-steps 5]

Per model (``benchmarks.train_inputs`` presets: a diffusers folder with seeded random weights and a Pick-a-Pic
parquet set of ``--pairs`` pairs), one ``vitruvian.trainers.train`` run of dpo in this process (rank 8, fp32,
no flip, centre crop, latent cache on: it is filled before step 1). After ``--warmup`` steps:

- **step** = time between two consecutive step callbacks: the whole loop iteration (batch, encoder, objective,
  backward, clipping, optimizer, scheduler, progress.jsonl, stop/checkpoint checks, callbacks);
- **UNet work** = inside that step, the time spent in the UNet's forward calls (policy with grad and reference
  without; forward pre/post hooks on the UNet) plus ``accelerator.backward`` (the UNet's backward; the loss's
  own graph is a handful of element-wise ops). On CUDA the hooks synchronise the device.

Both on the wall clock and on the process CPU clock (``time.process_time``; with one torch thread it is the
wall time without the other processes of a shared machine); medians over the measured steps. Then
``--profile-steps`` more steps run under cProfile (CPU clock) and the per-step cumulative CPU seconds of the
named parts of a step are listed (cProfile slows Python-heavy parts: compare shares, not totals). Peak memory:
the process's peak RSS (CPU) or ``torch.cuda.max_memory_allocated``. Prints a markdown table.

``--baseline-script PATH`` (diffusers' ``train_diffusion_dpo.py``, run unmodified) adds, per model, one epoch of
the same ``--pairs`` set (pairs ÷ pairs-per-step steps) by both trainers in fresh processes
(``benchmarks/train_worker.py`` with ``--python``, the settings of ``benchmarks.train_step``): the whole process
wall time of that epoch (ours: start-up, the up-front latent-cache pass, the steps; the script: start-up and the
steps, encoding every step), and s/step from the difference of an epoch run and a 1-step run (start-up, loading
and ours' cache pass cancel).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["measure", "main"]

#: (label, path fragment, function) of the parts of a step listed from the cProfile run
PARTS = (
    ("batch: loader (decode, resize, collate)", "torch/utils/data/dataloader.py", "__next__"),
    ("batch: latent cache → model-ready batch", "trainers/latent_cache.py", "__call__"),
    ("objective (noise, UNet forwards, loss)", "trainers/objectives/dpo.py", "__call__"),
    ("  of which UNet forward (policy + reference)", "diffusers/models/unets/unet_2d_condition.py", "forward"),
    ("  of which adapters off/on (reference)", "trainers/lora_layers.py", "adapters_disabled"),
    ("backward", "torch/_tensor.py", "backward"),
    ("gradient clipping", "accelerate/accelerator.py", "clip_grad_norm_"),
    ("optimizer step", "accelerate/optimizer.py", "step"),
    ("zero_grad", "torch/optim/optimizer.py", "zero_grad"),
    ("metrics/loss reduce", "accelerate/accelerator.py", "reduce"),
    ("lr scheduler", "torch/optim/lr_scheduler.py", "step"),
    ("progress.jsonl / log", "trainers/progress.py", "update"),
    ("one loop step (trainers.loop._step)", "trainers/loop.py", "_step"),
)


def _config(preset, base: Path, data: Path, out: Path, steps: int):
    from vitruvian.trainers.config import TrainConfig

    return TrainConfig(objective="dpo", base=str(base), data=str(data), out=str(out), steps=steps,
                       batch_size=preset.batch, rank=8, alpha=8, resolution=preset.resolution, learning_rate=1e-4,
                       lr_warmup_steps=0, seed=0, beta=2500, beta_convention="diffusers", random_flip=False,
                       random_crop=False, checkpoint_every=10**6, log_every=10**6, mixed_precision="no",
                       num_workers=0, max_grad_norm=1.0)


def measure(name: str, work: Path, *, steps: int, warmup: int, pairs: int, profile_steps: int) -> dict:
    """One dpo run of preset ``name``; per-step wall/CPU seconds of the step and of its UNet work, parts, memory."""
    import torch
    from accelerate import Accelerator

    from vitruvian.trainers import train

    from .train_inputs import MODELS, make_model_folder, make_pair_parquet

    preset = MODELS[name]
    base = make_model_folder(preset, work / "models" / name)
    # at most the pairs the run draws, so the up-front pass caches every latent the measured steps read (a run
    # shorter than an epoch would encode lazily, and the steps would carry VAE work)
    pairs = min(pairs, (warmup + steps + profile_steps) * preset.batch)
    data = make_pair_parquet(work / "data" / f"{name}-{pairs}", pairs, resolution=preset.resolution)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = {"on": False, "wall": 0.0, "cpu": 0.0}

    def timed(fn):
        def call(*args, **kwargs):
            if not clock["on"]:
                return fn(*args, **kwargs)
            sync()
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                clock["wall"] += time.perf_counter() - w
                clock["cpu"] += time.process_time() - c
        return call

    real_backward = Accelerator.backward
    Accelerator.backward = timed(real_backward)  # this process only: the benchmark's instrument
    rows: list[tuple[float, float, float, float]] = []  # (step wall, step cpu, unet wall, unet cpu)
    state = {"t": None, "hooked": False, "prof": None}
    total = warmup + steps + profile_steps
    profile = cProfile.Profile(time.process_time)

    def on_step(event) -> None:
        now = (time.perf_counter(), time.process_time())
        if not state["hooked"]:
            unet = event.unet

            def pre(module, args):
                if clock["on"]:
                    sync()
                    state["fw"] = (time.perf_counter(), time.process_time())

            def post(module, args, out):
                if clock["on"]:
                    sync()
                    clock["wall"] += time.perf_counter() - state["fw"][0]
                    clock["cpu"] += time.process_time() - state["fw"][1]

            unet.register_forward_pre_hook(pre)
            unet.register_forward_hook(post)
            state["hooked"] = True
        if warmup < event.step <= warmup + steps:
            rows.append((now[0] - state["t"][0], now[1] - state["t"][1], clock["wall"], clock["cpu"]))
        if event.step == warmup + steps:
            clock["on"] = False
            profile.enable()
        clock["wall"] = clock["cpu"] = 0.0
        if warmup <= event.step < warmup + steps:
            clock["on"] = True
        state["t"] = (time.perf_counter(), time.process_time())

    out = work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        train(_config(preset, base, data, out, total), callbacks=[on_step])
    finally:
        profile.disable()
        Accelerator.backward = real_backward
    seconds = time.perf_counter() - t0
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    stats = pstats.Stats(profile).stats
    parts = {label: max((st[3] for (f, _, fn), st in stats.items() if frag in f.replace("\\", "/") and fn == func),
                        default=0.0) / max(1, profile_steps) for label, frag, func in PARTS}
    return {"model": name, "note": preset.note, "pairs_per_step": preset.batch, "resolution": preset.resolution,
            "steps": steps, "step_wall": med[0], "step_cpu": med[1], "unet_wall": med[2], "unet_cpu": med[3],
            "ratio_wall": statistics.median(r[0] / r[2] for r in rows),
            "ratio_cpu": statistics.median(r[1] / r[3] for r in rows), "run_seconds": seconds,
            "peak_mib": (torch.cuda.max_memory_allocated() if cuda else
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20,
            "parts": parts, "profile_steps": profile_steps}


def epoch_vs_script(name: str, work: Path, *, script: Path, python: str, pairs: int, threads: int) -> dict:
    """One epoch of ``pairs`` pairs, ours (dpo) and the script, whole processes; s/step by difference with 1 step."""
    from .train_inputs import MODELS, make_model_folder, make_pair_parquet
    from .train_step import VARIANTS, WORKER, _baseline_args, _env, _ours_args, run_process

    preset = MODELS[name]
    base = make_model_folder(preset, work / "models" / name)
    data = make_pair_parquet(work / "data" / f"{name}-{pairs}", pairs, resolution=preset.resolution)
    epoch = pairs // preset.batch
    dpo = next(v for v in VARIANTS if v.key == "dpo")
    wall: dict[tuple[str, int], float] = {}
    for steps in (1, epoch):
        for who in ("ours", "script"):
            run_dir = work / "epoch" / f"{name}-{who}-{steps}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            common = dict(base=base, data=data, out=run_dir / "out", steps=steps, batch=preset.batch,
                          res=preset.resolution, mp="no")
            args = _ours_args(dpo, **common) if who == "ours" else _baseline_args(script, **common)
            cmd = [python, str(WORKER), "--result", str(run_dir / "result.json"), *args]
            status, wall[(who, steps)], _, _ = run_process(cmd, env=_env(run_dir, threads, "cpu"),
                                                           log=run_dir / "log.txt", timeout=3600)
            if status != 0:
                raise RuntimeError(f"step_overhead: {who} {name} {steps} steps failed, see {run_dir / 'log.txt'}")
            print(f"step_overhead: {name} {who} {steps} steps: {wall[(who, steps)]:.1f} s", file=sys.stderr)
    per_step = {who: (wall[(who, epoch)] - wall[(who, 1)]) / (epoch - 1) for who in ("ours", "script")}
    return {"model": name, "epoch_steps": epoch, "ours_epoch": wall[("ours", epoch)],
            "script_epoch": wall[("script", epoch)], "ours_step": per_step["ours"], "script_step": per_step["script"]}


def render_epochs(rows: list[dict], pairs: int) -> str:
    lines = [f"One epoch of {pairs} pairs, whole processes (wall s):", "",
             "| model | steps | ours epoch s | script epoch s | ours ÷ script (epoch) | ours s/step | script s/step "
             "| per-step speed-up (script ÷ ours) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['epoch_steps']} | {r['ours_epoch']:.1f} | {r['script_epoch']:.1f} | "
                     f"**{r['ours_epoch'] / r['script_epoch']:.2f}** | {r['ours_step']:.3f} | {r['script_step']:.3f} | "
                     f"**{r['script_step'] / r['ours_step']:.2f}** |")
    return "\n".join(lines)


def render(results: list[dict], *, command: str, threads: int) -> str:
    lines = [f"`{command}` ({threads} torch thread(s); medians over the measured steps):", "",
             "| model | pairs/step | step wall s | UNet work wall s | step ÷ UNet work (wall) | step CPU s | "
             "UNet work CPU s | step ÷ UNet work (CPU) | peak memory MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} ({r['resolution']} px) | {r['pairs_per_step']} | {r['step_wall']:.4f} | "
                     f"{r['unet_wall']:.4f} | **{r['ratio_wall']:.3f}** | {r['step_cpu']:.4f} | {r['unet_cpu']:.4f} | "
                     f"**{r['ratio_cpu']:.3f}** | {r['peak_mib']:.0f} |")
    lines += ["", "Parts of a step under cProfile (cumulative CPU s per step; nested rows are inside the row above):",
              "", "| part | " + " | ".join(r["model"] for r in results) + " |",
              "|---|" + "---|" * len(results)]
    for label, _, _ in PARTS:
        lines.append(f"| {label} | " + " | ".join(f"{r['parts'][label]:.4f}" for r in results) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,mid")
    p.add_argument("--steps", default="tiny=40,mid=8", help="measured steps per model, NAME=N,...")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--baseline-script", type=Path, default=None, help="diffusers' train_diffusion_dpo.py: also "
                   "one epoch by ours and by it")
    p.add_argument("--python", default=sys.executable, help="Python of the epoch runs (needs the script's "
                   "dependencies: torchvision, datasets, wandb, tensorboard)")
    p.add_argument("--skip-overhead", action="store_true", help="only the epoch runs")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    steps = dict(kv.split("=") for kv in a.steps.split(","))
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="vitruvian-overhead-"))
    results, epochs = [], []
    for name in a.models.split(","):
        if a.baseline_script:
            epochs.append(epoch_vs_script(name, work, script=a.baseline_script.resolve(), python=a.python,
                                          pairs=a.pairs, threads=a.threads))
        if a.skip_overhead:
            continue
        r = measure(name, work, steps=int(steps.get(name, 10)), warmup=a.warmup, pairs=a.pairs,
                    profile_steps=a.profile_steps)
        print(f"step_overhead: {name}: step {r['step_wall']:.4f} s wall / UNet work {r['unet_wall']:.4f} s = "
              f"{r['ratio_wall']:.3f}; CPU {r['ratio_cpu']:.3f}; run {r['run_seconds']:.1f} s", file=sys.stderr)
        results.append(r)
    command = "python -m benchmarks.step_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    if results:
        print(render(results, command=command, threads=a.threads))
    if epochs:
        print("\n" + render_epochs(epochs, a.pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
