"""Trainer step time and peak memory: ``sft`` vs ``dpo``, and ours vs diffusers' Diffusion-DPO script.

    python -m benchmarks.train_step [--baseline-script PATH/train_diffusion_dpo.py] [--models tiny,mid]
                                    [--repeats 3] [--threads 1] [--profile] [--write-docs]
    python -m benchmarks.train_step --from-results WORK/results.json [--write-docs]   # re-render only

Every configuration runs in fresh processes (``benchmarks/train_worker.py``), twice: for ``short`` and
``long`` optimizer steps. Seconds per step = (wall time of the long run - wall time of the short run) /
(long - short), so start-up, model loading and the final save cancel; the same is done for both
trainers. Cross-checks: the median of the logged per-step times of steps short+1..long (ours:
``progress.jsonl``; the baseline: the wall times of its TensorBoard events) and CPU seconds per step
(user + system of the process, less sensitive to other load on a shared machine). Peak memory on a
CPU is the process's peak RSS (``ru_maxrss`` of the long run, via ``os.wait4``), also shown above the
RSS of a process that only imports the libraries and loads the same model (the "load floor"); on a
GPU it is ``torch.cuda.max_memory_allocated``. Medians over ``--repeats`` interleaved rounds.

Variants per model (same model folder, resolution, rank, learning rate, beta, no flip, centre crop):
``sft`` (our trainer, same pairs and batch; sft trains on the chosen image of each pair), ``sft-2x``
(sft with twice the pairs: as many images per step as dpo), ``dpo`` (ours; a dataset of short x batch
pairs, so the timed steps all read cached latents, as every epoch after the first does), ``dpo-cold``
(ours; long x batch pairs, a single epoch over a larger set: since issue 14 every latent is encoded in
the up-front cache pass before step 1, the same in the SHORT and LONG runs, so it cancels in s/step; the whole
epoch is compared in ``benchmarks/step_overhead.py``),
``baseline`` (diffusers ``examples/research_projects/diffusion_dpo/train_diffusion_dpo.py``, run
unmodified from ``--baseline-script``; it VAE- and text-encodes every step, so its time does not
depend on the epoch; it reads the ``dpo`` data set). Without ``--baseline-script`` that part is skipped.

``--device cuda`` runs the same on a GPU (adding the full ``sd15`` shapes at 512 px). UNTESTED: it was
written on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .train_inputs import MODELS, ModelPreset, make_model_folder, make_pair_parquet
from .train_report import machine_info, profile_breakdown, render_section, write_docs

__all__ = ["Variant", "VARIANTS", "Run", "run_benchmark", "main"]

WORKER = Path(__file__).resolve().parent / "train_worker.py"
RANK, LEARNING_RATE, BETA_DIFFUSERS = 8, 1e-4, 2500  # diffusers' beta 2500 = official 5000


@dataclass(frozen=True)
class Variant:
    key: str
    trainer: str  # "ours" | "baseline"
    objective: str
    batch_factor: int  # batch = factor x the preset's pairs per step
    cold: bool  # True: a data set of long x batch pairs (nothing cached), else short x batch
    label: str


VARIANTS = (
    Variant("sft", "ours", "sft", 1, False, "ours · sft · same pairs (trains on each chosen image)"),
    Variant("sft-2x", "ours", "sft", 2, False, "ours · sft · 2x pairs = as many images per step as dpo"),
    Variant("dpo", "ours", "dpo", 1, False, "ours · dpo · latents cached (epoch ≥ 2)"),
    Variant("dpo-cold", "ours", "dpo", 1, True, "ours · dpo · first epoch (cache pass before step 1)"),
    Variant("baseline", "baseline", "dpo", 1, False, "diffusers `train_diffusion_dpo.py` · dpo"),
)


@dataclass
class Run:
    """One process: a variant of a model at ``steps`` optimizer steps."""

    model: str
    variant: str
    steps: int
    repeat: int
    ok: bool = False
    wall: float = 0.0  # the whole process, seconds
    cpu: float = 0.0  # user + system seconds of the process
    maxrss_mib: float = 0.0
    inner_seconds: float = 0.0  # measured inside the worker (imports excluded)
    cuda_peak_mib: float | None = None
    step_seconds: dict[int, float] = field(default_factory=dict)  # logged per-step durations
    log: str = ""
    error: str = ""


# ---------------------------------------------------------------------------------------------------
# one process


def _env(run_dir: Path, threads: int, device: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled",
               HF_HOME=str(run_dir / "hf"), TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_process(cmd: list[str], *, env: dict[str, str], log: Path, timeout: float) -> tuple[int, float, float, float]:
    """Run ``cmd`` (output to ``log``); returns (exit status, wall s, CPU s, peak RSS MiB) of that process."""
    with open(log, "w", encoding="utf-8") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024


def _ours_args(v: Variant, *, base: Path, data: Path, out: Path, steps: int, batch: int, res: int, mp: str):
    sets = dict(base=base, data=data, out=out, steps=steps, batch_size=batch, rank=RANK, alpha=RANK,
                resolution=res, learning_rate=LEARNING_RATE, lr_warmup_steps=0, seed=0, beta=BETA_DIFFUSERS,
                beta_convention="diffusers", random_flip="false", random_crop="false", checkpoint_every=10**6,
                log_every=1, mixed_precision=mp, num_workers=0, max_grad_norm=1.0)
    return ["ours", v.objective, *[a for k, val in sets.items() for a in ("--set", f"{k}={val}")]]


def _baseline_args(script: Path, *, base: Path, data: Path, out: Path, steps: int, batch: int, res: int, mp: str):
    return ["baseline", str(script), "--pretrained_model_name_or_path", str(base), "--dataset_name", str(data),
            "--dataset_split_name", "train", "--output_dir", str(out), "--resolution", str(res),
            "--train_batch_size", str(batch), "--max_train_steps", str(steps), "--rank", str(RANK),
            "--learning_rate", str(LEARNING_RATE), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
            "--beta_dpo", str(BETA_DIFFUSERS), "--seed", "0", "--no_hflip", "--checkpointing_steps", str(10**6),
            "--dataloader_num_workers", "0", "--max_grad_norm", "1.0", "--mixed_precision", mp,
            "--report_to", "tensorboard"]


def _logged_step_seconds(v: Variant, out: Path, result: dict) -> dict[int, float]:
    if v.trainer == "ours":
        path = out / "progress.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        return {r["step"]: float(r["seconds"]) for r in map(json.loads, lines)}
    wall = {int(k): t for k, t in result.get("event_wall_times", {}).items()}
    return {s: wall[s] - wall[s - 1] for s in wall if s - 1 in wall}


# ---------------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Options:
    models: tuple[str, ...] = ("tiny", "mid")
    variants: tuple[str, ...] = tuple(v.key for v in VARIANTS)
    baseline_script: Path | None = None
    baseline_ref: str = ""  # where the script came from, for the report (e.g. "diffusers@58eb52c")
    python: str = sys.executable
    repeats: int = 3
    threads: int = 1
    device: str = "cpu"
    mixed_precision: str = "no"
    steps: tuple[int, int] | None = None  # overrides every preset's (short, long)
    profile: bool = False
    floor: bool = True
    work_dir: Path | None = None
    timeout: float = 3600.0


def run_benchmark(opts: Options, *, say=print, command: str = "") -> dict:
    """Run every (model, variant, steps, repeat); returns ``{"runs", "floors", "profiles", ...}`` for the report."""
    variants = [v for v in VARIANTS if v.key in opts.variants]
    if opts.baseline_script is None and any(v.trainer == "baseline" for v in variants):
        say("train_step: no --baseline-script given: skipping the diffusers baseline (extract it with `git -C "
            "<diffusers clone> show HEAD:examples/research_projects/diffusion_dpo/train_diffusion_dpo.py > FILE`)")
        variants = [v for v in variants if v.trainer != "baseline"]
    work = Path(opts.work_dir or tempfile.mkdtemp(prefix="vitruvian-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    floors: dict[str, list[float]] = {}
    profiles: dict[tuple[str, str], dict] = {}
    info = dict(machine_info(opts.python, opts.threads, opts.device), command=command)
    for name in opts.models:
        preset = MODELS[name]
        short, long = opts.steps or preset.steps
        t = time.perf_counter()
        base = make_model_folder(preset, work / "models" / name)
        say(f"train_step: {name}: model folder written in {time.perf_counter() - t:.1f} s ({base})")
        data_for = _DataSets(work / "data", preset, short, long)
        for r in range(opts.repeats):
            if opts.floor:
                floors.setdefault(name, []).append(_floor(opts, work, base, name, r, say))
            order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate: spread slow phases
            for v in order:
                for steps in (short, long):
                    runs.append(_one(opts, work, preset, v, base, data_for(v), steps, r, say=say))
        if opts.profile:
            for v in variants:
                if v.key in ("dpo", "baseline"):
                    profiles[(name, v.key)] = _profile(opts, work, preset, v, base, data_for(v), short, long, say)
    info["load_end"] = os.getloadavg()[0]
    results = {"runs": runs, "floors": floors, "profiles": profiles, "info": info, "options": opts,
               "variants": variants, "work": work}
    save_results(results, work / "results.json")
    return results


class _DataSets:
    """The parquet set of a variant: SHORT x batch pairs (all cached after SHORT steps) or LONG x batch (cold)."""

    def __init__(self, root: Path, preset: ModelPreset, short: int, long: int):
        self.root, self.preset, self.short, self.long = root, preset, short, long
        self.made: dict[int, Path] = {}

    def __call__(self, v: Variant) -> Path:
        n = (self.long if v.cold else self.short) * self.preset.batch * v.batch_factor
        if n not in self.made:
            self.made[n] = make_pair_parquet(self.root / f"{self.preset.name}-{n}", n,
                                             resolution=self.preset.resolution)
        return self.made[n]


def save_results(results: dict, path: Path) -> None:
    """Everything the report needs, as JSON (``--from-results`` renders it again without running)."""
    opts = dataclasses.asdict(results["options"])
    opts.update(baseline_script=str(opts["baseline_script"] or ""), work_dir=str(opts["work_dir"] or ""))
    data = {"runs": [dataclasses.asdict(r) for r in results["runs"]], "floors": results["floors"],
            "profiles": [[m, v, p] for (m, v), p in results["profiles"].items()], "info": results["info"],
            "options": opts, "variants": [v.key for v in results["variants"]], "work": str(results["work"])}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load_results(path: Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    o = {k: v for k, v in data["options"].items() if k in {f.name for f in dataclasses.fields(Options)}}
    o.update(models=tuple(o["models"]), variants=tuple(o["variants"]), steps=tuple(o["steps"]) if o["steps"] else None,
             baseline_script=Path(o["baseline_script"]) if o["baseline_script"] else None,
             work_dir=Path(o["work_dir"]) if o["work_dir"] else None)
    runs = []
    for r in data["runs"]:
        r["step_seconds"] = {int(k): t for k, t in r["step_seconds"].items()}
        runs.append(Run(**r))
    return {"runs": runs, "floors": data["floors"], "profiles": {(m, v): p for m, v, p in data["profiles"]},
            "info": data["info"], "options": Options(**o), "work": Path(data["work"]),
            "variants": [v for v in VARIANTS if v.key in data["variants"]]}


def _one(opts: Options, work: Path, preset: ModelPreset, v: Variant, base: Path, data: Path, steps: int, r: int,
         *, say, profile: Path | None = None) -> Run:
    tag = f"{preset.name}-{v.key}-{steps}-r{r}" + ("-prof" if profile else "")
    run_dir = work / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out, result_path = run_dir / "out", run_dir / "result.json"
    batch = preset.batch * v.batch_factor
    common = dict(base=base, data=data, out=out, steps=steps, batch=batch, res=preset.resolution,
                  mp=opts.mixed_precision)
    args = (_ours_args(v, **common) if v.trainer == "ours" else
            _baseline_args(opts.baseline_script, **common))
    cmd = [opts.python, str(WORKER), "--result", str(result_path)]
    if profile:
        cmd += ["--profile", str(profile)]
    run = Run(preset.name, v.key, steps, r, log=str(run_dir / "log.txt"))
    status, run.wall, run.cpu, run.maxrss_mib = run_process(cmd + args, env=_env(run_dir, opts.threads, opts.device),
                                                            log=run_dir / "log.txt", timeout=opts.timeout)
    if status != 0 or not result_path.is_file():
        tail = Path(run.log).read_text(encoding="utf-8", errors="replace")[-1500:]
        run.error = f"exit status {status}; log {run.log}:\n{tail}"
        say(f"train_step: {tag} FAILED ({run.error})")
        return run
    result = json.loads(result_path.read_text(encoding="utf-8"))
    run.ok, run.inner_seconds = True, result["seconds"]
    if "cuda_peak_bytes" in result:
        run.cuda_peak_mib = result["cuda_peak_bytes"] / 2**20
    run.step_seconds = _logged_step_seconds(v, out, result)
    say(f"train_step: {tag}: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU, peak RSS {run.maxrss_mib:.0f} MiB")
    if not profile:
        shutil.rmtree(out, ignore_errors=True)  # LoRA files, caches, checkpoints: not needed any more
    return run


def _floor(opts: Options, work: Path, base: Path, name: str, r: int, say) -> float:
    run_dir = work / "runs" / f"{name}-floor-r{r}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [opts.python, str(WORKER), "--result", str(run_dir / "result.json"), "load", str(base)]
    status, _, _, rss = run_process(cmd, env=_env(run_dir, opts.threads, opts.device), log=run_dir / "log.txt",
                                    timeout=opts.timeout)
    if status != 0:
        say(f"train_step: {name} load floor FAILED, see {run_dir / 'log.txt'}")
        return float("nan")
    return rss


def _profile(opts, work, preset, v, base, data, short, long, say) -> dict:
    """cProfile (CPU clock) the short and the long run; per-step CPU s by category = difference / (long - short)."""
    profiles, cpu = [], []
    for steps in (short, long):
        prof = work / "runs" / f"{preset.name}-{v.key}-{steps}.prof"
        run = _one(opts, work, preset, v, base, data, steps, 0, say=say, profile=prof)
        if not run.ok:
            return {"error": run.error}
        profiles.append(prof)
        cpu.append(run.cpu)
    return profile_breakdown(profiles[0], profiles[1], long - short, (cpu[1] - cpu[0]) / (long - short))


# ---------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-script", type=Path, default=None,
                   help="a copy of diffusers' examples/research_projects/diffusion_dpo/train_diffusion_dpo.py "
                        "(run unmodified); without it the baseline is skipped")
    p.add_argument("--baseline-ref", default="", help="where the script came from, printed in the report "
                   "(e.g. diffusers@58eb52c)")
    p.add_argument("--models", default=None, help=f"comma-separated, of {', '.join(MODELS)} "
                   "(default: tiny,mid on cpu; tiny,mid,sd15 on cuda)")
    p.add_argument("--variants", default=",".join(v.key for v in VARIANTS), help="comma-separated subset of "
                   f"{', '.join(v.key for v in VARIANTS)}")
    p.add_argument("--python", default=sys.executable, help="Python that runs both trainers (default: this one); "
                   "it needs vitruvian installed, and torchvision, datasets, wandb, tensorboard for the baseline")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; numbers are medians (default 3)")
    p.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each run (default 1: on a shared "
                   "2-core machine 2 threads make small models several times slower whenever others run)")
    p.add_argument("--steps", default=None, help="SHORT,LONG optimizer steps for every model (default per model)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: UNTESTED path for a GPU machine (peak memory = torch.cuda.max_memory_allocated)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="both trainers (GPU)")
    p.add_argument("--profile", action="store_true", help="also cProfile ours and the baseline (dpo) and break "
                   "a step down into data, VAE, text encoder, UNet, backward, optimizer")
    p.add_argument("--work-dir", type=Path, default=None, help="keep models, data and logs here (default: a "
                   "temporary folder, removed at the end)")
    p.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    p.add_argument("--from-results", type=Path, default=None, metavar="RESULTS.json",
                   help="render the report of an earlier run (its <work-dir>/results.json) instead of running")
    a = p.parse_args(argv)
    models = tuple(a.models.split(",")) if a.models else (("tiny", "mid", "sd15") if a.device == "cuda"
                                                           else ("tiny", "mid"))
    bad = [m for m in models if m not in MODELS] + [x for x in a.variants.split(",")
                                                   if x not in {v.key for v in VARIANTS}]
    if bad:
        p.error(f"--models/--variants: unknown {bad}; models are {list(MODELS)}, variants "
                f"{[v.key for v in VARIANTS]}")
    if a.baseline_script is not None and not a.baseline_script.is_file():
        print(f"train_step: --baseline-script {a.baseline_script} does not exist: skipping the baseline")
        a.baseline_script = None
    steps = tuple(int(s) for s in a.steps.split(",")) if a.steps else None
    if steps is not None and not (len(steps) == 2 and 1 <= steps[0] < steps[1]):
        p.error(f"--steps must be SHORT,LONG with 1 <= SHORT < LONG, got {a.steps!r}")
    opts = Options(models=models, variants=tuple(a.variants.split(",")), python=a.python, repeats=a.repeats,
                   baseline_ref=a.baseline_ref,
                   baseline_script=a.baseline_script.resolve() if a.baseline_script else None, threads=a.threads,
                   device=a.device, mixed_precision=a.mixed_precision, steps=steps, profile=a.profile,
                   work_dir=a.work_dir)
    python = sys.executable.replace(str(Path.home()), "~", 1)
    command = f"{python} -m benchmarks.train_step " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.from_results:
        results = load_results(a.from_results)
        command = results["info"].get("command", command)
        if a.baseline_ref:
            results["options"].baseline_ref = a.baseline_ref
    else:
        results = run_benchmark(opts, command=command)
    section = render_section(results, command=command)
    print(section)
    if a.write_docs:
        write_docs(section)
        print("train_step: written to docs/benchmarks.md")
    if a.work_dir is None and not a.from_results:
        shutil.rmtree(results["work"], ignore_errors=True)
    return 1 if any(not r.ok for r in results["runs"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
