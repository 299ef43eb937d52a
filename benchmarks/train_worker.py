"""One benchmark run in a fresh process: our trainer, the diffusers DPO script, or a model load only.

    python benchmarks/train_worker.py --result R.json [--profile P.prof] ours <vitruvian-train args...>
    python benchmarks/train_worker.py --result R.json [--profile P.prof] baseline SCRIPT <script args...>
    python benchmarks/train_worker.py --result R.json load BASE_FOLDER

Run by ``benchmarks/train_step.py`` as a plain script (it may be a different venv's Python), so it
imports nothing from this folder. ``ours`` calls ``vitruvian.trainers.cli.main``; ``baseline`` runs the
user's copy of ``train_diffusion_dpo.py`` unmodified with ``runpy`` (as ``__main__``, its own
``sys.argv``); ``load`` only imports the libraries and loads the base model (the memory floor).

The result JSON holds ``seconds`` (in-process, from before the run to after it), ``maxrss_kb`` (this
process's peak RSS), on CUDA ``cuda_peak_bytes`` (``torch.cuda.max_memory_allocated``) and, for the
baseline, ``event_wall_times`` (step -> wall time of its TensorBoard "loss" event: it logs once per
optimizer step). The parent measures the whole process's wall time and CPU time itself.
"""
from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time


def _run(mode: str, args: list[str]) -> None:
    if mode == "ours":
        from vitruvian.trainers.cli import main

        status = main(args)
        if status:
            raise SystemExit(status)
    elif mode == "baseline":
        script, *rest = args
        sys.argv = [script, *rest]
        runpy.run_path(script, run_name="__main__")
    elif mode == "load":
        import torch
        from vitruvian.trainers.models import add_lora, load_base

        base = load_base(args[0], device="cuda" if torch.cuda.is_available() else "cpu")
        add_lora(base.unet, rank=8, alpha=8.0, targets=("to_q", "to_k", "to_v", "to_out.0"))
    else:
        raise SystemExit(f"train_worker: mode must be ours, baseline or load, got {mode!r}")


def _event_wall_times(args: list[str]) -> dict[int, float]:
    """Step -> wall time of the baseline's TensorBoard "loss" events under its ``--output_dir``."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = Path(args[args.index("--output_dir") + 1])
    times: dict[int, float] = {}
    for path in sorted(out.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and any(v.tag == "loss" for v in event.summary.value):
                times[int(event.step)] = float(event.wall_time)
    return times


def main(argv: list[str]) -> int:
    result_path, profile_path = None, None
    while argv and argv[0].startswith("--"):
        flag, value, *argv = argv
        if flag == "--result":
            result_path = value
        elif flag == "--profile":
            profile_path = value
        else:
            raise SystemExit(f"train_worker: unknown option {flag!r}; options are --result and --profile")
    if result_path is None or not argv:
        raise SystemExit("usage: train_worker.py --result R.json [--profile P.prof] ours|baseline|load ARGS...")
    mode, args = argv[0], argv[1:]
    t0 = time.perf_counter()
    if profile_path:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU seconds: what other processes do is not counted
        profiler.runcall(_run, mode, args)
        profiler.dump_stats(profile_path)
    else:
        _run(mode, args)
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        result["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    if mode == "baseline":
        result["event_wall_times"] = _event_wall_times(args)
    tmp = f"{result_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
