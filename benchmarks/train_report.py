"""Report of ``benchmarks.train_step``: machine facts, the markdown tables, the profile breakdown, the docs.

Targets (issue 4 item 9): ``dpo`` step time ≤ 1.5 x ``sft``; ``dpo`` peak memory ≤ 1.15 x ``sft``; our
``dpo`` ≥ 1.6 x the optimizer steps per second of diffusers' ``train_diffusion_dpo.py``.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import pstats
import re
import statistics
import subprocess
from pathlib import Path

__all__ = ["SECTION", "machine_info", "profile_breakdown", "aggregate", "render_section", "write_docs"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Trainer step time and memory"
TARGET_DPO_TIME, TARGET_DPO_MEMORY, TARGET_SPEEDUP = 1.5, 1.15, 1.6

_VERSIONS = r"""
import importlib.metadata as m, json, platform, torch
out = {"python": platform.python_version(), "torch_threads": torch.get_num_threads()}
for name in ("torch", "diffusers", "peft", "accelerate", "transformers", "datasets", "torchvision"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = "-"
if torch.cuda.is_available():
    out["gpu"] = torch.cuda.get_device_name(0)
print(json.dumps(out))
"""

# A step's parts, found in cProfile by (path fragment, function name): cumulative seconds of the outermost
# match. They do not nest inside one another in either trainer; "other" is the rest of the step.
OTHER = "other (loss, noise, adapters on/off, latent cache, Python)"
CATEGORIES = (
    ("data loading (decode, resize, collate)", (("torch/utils/data/dataloader.py", "__next__"),)),
    ("VAE encode", (("diffusers/models/autoencoders/autoencoder_kl.py", "encode"),)),
    ("text encoder", (("transformers/models/clip/modeling_clip.py", "forward"),)),
    ("UNet forward (policy + reference)", (("diffusers/models/unets/unet_2d_condition.py", "forward"),)),
    ("backward", (("torch/_tensor.py", "backward"),)),
    ("gradient clipping", (("accelerate/accelerator.py", "clip_grad_norm_"),)),
    ("optimizer step", (("accelerate/optimizer.py", "step"),)),
    ("logging (progress.jsonl / TensorBoard)", (("trainers/progress.py", "update"),
                                                ("accelerate/accelerator.py", "log"))),
)


WHY = (
    "Why these models: `tiny` is the test kit's model (every per-step cost is Python and framework overhead). "
    "`mid` keeps SD1.5's UNet layout (4 levels, the same block types, 8 heads, 768-wide cross attention) at "
    "half width and one layer per block, so a dpo step takes about a second of CPU time at 128 px; its VAE and "
    "text encoder are shrunk with it so that their cost *relative to one UNet forward* stays near SD1.5 at "
    "512 px (`torch.utils.flop_counter`: SD1.5's VAE encode of one 512 px image is 1117 GFLOP = 1.39 UNet "
    "forwards of 803 GFLOP, CLIP-L 13 GFLOP = 0.017; `mid`: VAE 9.2 GFLOP = 1.13 forwards of 8.1 GFLOP, text "
    "encoder 1.1 GFLOP = 0.14). With SD1.5's full VAE at 128 px (68 GFLOP = 8.3 forwards) the benefit of "
    "cached latents would be overstated several times; with the VAE slightly lighter than SD1.5's it is, if "
    "anything, understated. The full SD1.5 shapes (`--models sd15`) are for a GPU."
)
BOUNDS = (
    "What bounds the ratios. Per pair, dpo runs the policy forward + backward on 2 images and the reference "
    "(adapters off, no grad) forward on 2 images; sft on the same pairs runs forward + backward on 1 image. "
    "With gradients for the LoRA weights only, a backward costs about one forward, so by FLOPs dpo ÷ sft is "
    "about 3 for the same pairs and 1.5 for the same number of images per step (`sft-2x`): a target of 1.5 can "
    "only be met per image. Ours and the baseline do the same UNet work per step; the baseline also "
    "VAE-encodes 2 images and text-encodes 1 prompt per pair, which our latent cache skips after the first "
    "epoch. At SD1.5 512 px in fp32 that is 2 × 1.39 + 0.02 ≈ 2.8 UNet forwards on top of ≈ 6, so caching "
    "alone can make ours at most ≈ 1.46× faster; ≥ 1.6× needs the UNet work itself to get cheaper."
)


def machine_info(python: str, threads: int, device: str) -> dict:
    """Versions in the benchmark's Python, CPU model, cores, load, date, repo commit."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run([python, "-c", _VERSIONS], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    info = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"versions": "unknown"}
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    info.update(cpu=cpu, cores=os.cpu_count(), load_start=os.getloadavg()[0], date=datetime.date.today().isoformat(),
                commit=commit or "?", threads=threads, device=device, os=f"{platform.system()} {platform.release()}")
    return info


def profile_breakdown(short_profile: Path, long_profile: Path, steps: int, step_seconds: float) -> dict:
    """Per-step seconds by category: (cumulative in the long run - in the short run) / ``steps``.

    The profiles use the CPU clock; ``step_seconds`` (the CPU s/step of the two profiled processes) is
    the total and "other" what the categories leave of it. Differences cancel start-up and loading.
    """
    def categories(path: Path) -> dict[str, float]:
        stats = pstats.Stats(str(path)).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)
        out = {}
        for name, matchers in CATEGORIES:
            out[name] = sum(max((st[3] for (f, _, fn), st in stats.items() if frag in f.replace("\\", "/")
                                 and fn == func), default=0.0) for frag, func in matchers)
        return out

    a, b = categories(short_profile), categories(long_profile)
    parts = {k: (b[k] - a[k]) / steps for k in a}
    parts[OTHER] = step_seconds - sum(parts.values())
    return {"total": step_seconds, "parts": parts}


# ---------------------------------------------------------------------------------------------------
# aggregation


def _median(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def aggregate(results: dict) -> dict[tuple[str, str], dict]:
    """(model, variant) -> medians over repeats: s/step by difference, logged, CPU; peak memory."""
    from .train_inputs import MODELS

    opts = results["options"]
    out = {}
    for name in opts.models:
        short, long = opts.steps or MODELS[name].steps
        for v in results["variants"]:
            runs = [r for r in results["runs"] if r.model == name and r.variant == v.key]
            per_repeat = []
            for rep in sorted({r.repeat for r in runs}):
                pair = {r.steps: r for r in runs if r.repeat == rep and r.ok}
                if short in pair and long in pair:
                    s, lo = pair[short], pair[long]
                    logged = [t for k, t in lo.step_seconds.items() if short < k <= long]
                    per_repeat.append(dict(diff=(lo.wall - s.wall) / (long - short),
                                           cpu=(lo.cpu - s.cpu) / (long - short),
                                           logged=statistics.median(logged) if logged else None,
                                           rss=lo.maxrss_mib, cuda=lo.cuda_peak_mib))
            failed = [r for r in runs if not r.ok]
            if not per_repeat:
                out[(name, v.key)] = {"failed": failed[0].error if failed else "no runs"}
                continue
            diffs, cpus = [p["diff"] for p in per_repeat], [p["cpu"] for p in per_repeat]
            keys = ("diff", "cpu", "logged", "rss", "cuda")
            out[(name, v.key)] = {k: _median(p[k] for p in per_repeat) for k in keys}
            out[(name, v.key)].update(lo=min(diffs), hi=max(diffs), cpu_lo=min(cpus), cpu_hi=max(cpus),
                                      n=len(per_repeat), failed=len(failed))
    return out


# ---------------------------------------------------------------------------------------------------
# markdown


def _f(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def _ratio(agg, num, den, key):
    a, b = agg.get(num, {}).get(key), agg.get(den, {}).get(key)
    return None if a is None or b is None or b == 0 else a / b


def _verdict(x, target, at_most=True):
    if x is None:
        return "—"
    return "met" if (x <= target if at_most else x >= target) else "**missed**"


def render_section(results: dict, *, command: str) -> str:
    """The docs section: set-up, then per model the runs, the ratios and (``--profile``) the breakdown."""
    from .train_inputs import MODELS

    opts, info, agg = results["options"], results["info"], aggregate(results)
    floors = {m: _median(v) for m, v in results["floors"].items()}
    gpu = opts.device == "cuda"
    mem_key, mem_name = ("cuda", "peak CUDA MiB") if gpu else ("rss", "peak RSS MiB")
    script = opts.baseline_script
    sha = hashlib.sha256(script.read_bytes()).hexdigest()[:12] if script else None
    lines = [
        SECTION, "",
        f"Measured {info['date']} at commit `{info['commit']}` on {info.get('gpu') or info['cpu']}, {info['cores']} "
        f"cores, {info['os']}, Python {info.get('python')}, torch {info.get('torch')}, diffusers "
        f"{info.get('diffusers')}, peft {info.get('peft')}, accelerate {info.get('accelerate')}, transformers "
        f"{info.get('transformers')}, datasets {info.get('datasets')}, torchvision {info.get('torchvision')}; "
        f"{opts.threads} torch thread(s) per run; load average {info['load_start']:.1f} at the start and "
        f"{info.get('load_end', os.getloadavg()[0]):.1f} at the end.", "",
        f"Reproduce from the repository root, in a venv with this package and the baseline's dependencies: "
        f"`{command}`" + (". The baseline is diffusers' `train_diffusion_dpo.py`"
                           + (f" from {opts.baseline_ref}" if opts.baseline_ref else "")
                           + f" (sha256 `{sha}`…), run unmodified; extract it with `git -C <diffusers clone> show "
                           "HEAD:examples/research_projects/diffusion_dpo/train_diffusion_dpo.py > FILE`."
                           if sha else ". The baseline was not run (no `--baseline-script`)."), "",
        "How: each configuration runs in fresh processes for SHORT and LONG optimizer steps; **s/step = (LONG "
        "run − SHORT run) / (LONG − SHORT)**, so start-up, model loading and the final save cancel, the same "
        "way for both trainers. *Wall* is the brief's measure; *CPU* (user + system seconds of the process) is "
        "the same difference in CPU time, " + ("which does not count GPU work: use wall on a GPU. " if gpu else
        "which other processes on a shared machine do not inflate (one torch thread per run): when the two "
        "disagree, trust CPU. ") + "*Logged* is the median logged time of steps "
        "SHORT+1..LONG (ours: `progress.jsonl`; the baseline: its TensorBoard event times), wall clock. "
        "Memory: peak RSS of the LONG run (`ru_maxrss`), and that minus a process that only imports the "
        "libraries and loads the model (the load floor)" + (", and `torch.cuda.max_memory_allocated`" if gpu else "")
        + f". Medians over {opts.repeats} interleaved round(s); a range is min–max over the rounds.", "",
        "Same for every run: LoRA rank 8 (alpha 8) on to_q/to_k/to_v/to_out.0, AdamW lr 1e-4 constant, no "
        "warm-up, max grad norm 1, beta 2500 (diffusers convention = 5000 official), "
        + (f"mixed precision {opts.mixed_precision}" if opts.mixed_precision != "no" else "fp32")
        + ", no flip, centre crop, 0 data workers, seed 0. Data: parquet files with the Pick-a-Pic columns "
        "(`jpg_0`, `jpg_1`, `label_0`, `caption`), JPEGs of 1.25 R × 1.5 R px, a unique caption per pair; "
        "ours reads them as a Pick-a-Pic stream, the baseline through `datasets.load_dataset`. sft trains on "
        "the chosen image of each pair; dpo on both.", "", WHY, "", BOUNDS, "",
    ]
    for name in opts.models:
        preset = MODELS[name]
        short, long = opts.steps or preset.steps
        lines += [f"### {name}: {preset.note}", "",
                  f"{preset.batch} pairs per step (sft-2x: {2 * preset.batch}), {preset.resolution} px, "
                  f"SHORT = {short}, LONG = {long} steps; load floor {_f(floors.get(name), 0)} MiB RSS.", "",
                  f"| run | pairs in data set | wall s/step | range | CPU s/step | range | logged s/step | {mem_name} "
                  "| RSS over load floor |", "|---|---|---|---|---|---|---|---|---|"]
        for v in results["variants"]:
            a = agg.get((name, v.key), {})
            n_pairs = (long if v.cold else short) * preset.batch * v.batch_factor
            if "diff" not in a:
                lines.append(f"| {v.label} | {n_pairs} | failed | | | | | | |")
                continue
            over = None if a["rss"] is None or floors.get(name) is None else a["rss"] - floors[name]
            lines.append(f"| {v.label} | {n_pairs} | {_f(a['diff'])} | {_f(a['lo'])}–{_f(a['hi'])} | "
                         f"**{_f(a['cpu'])}** | {_f(a['cpu_lo'])}–{_f(a['cpu_hi'])} | {_f(a['logged'])} | "
                         f"{_f(a[mem_key], 0)} | {_f(over, 0)} |")
        lines += [""] + _ratio_rows(agg, name, floors.get(name), mem_key) + [""]
        if results["profiles"].get((name, "dpo")) or results["profiles"].get((name, "baseline")):
            lines += _profile_rows(results["profiles"], name) + [""]
    failed = [r for r in results["runs"] if not r.ok]
    if failed:
        lines += [f"{len(failed)} run(s) failed, e.g. {failed[0].model}/{failed[0].variant}: "
                  f"`{failed[0].error.splitlines()[0]}`", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _ratio_rows(agg, name, floor, mem_key) -> list[str]:
    def k(v):
        return name, v

    time_rows = [("ours dpo ÷ ours sft, same pairs", "dpo", "sft", TARGET_DPO_TIME, True),
                 ("ours dpo ÷ ours sft-2x, same images per step", "dpo", "sft-2x", TARGET_DPO_TIME, True),
                 ("speed-up: baseline ÷ ours dpo, latents cached", "baseline", "dpo", TARGET_SPEEDUP, False),
                 ("speed-up: baseline ÷ ours dpo, first epoch", "baseline", "dpo-cold", TARGET_SPEEDUP, False)]
    rows = ["| step-time ratio | wall | CPU | logged | target | verdict: wall · CPU |", "|---|---|---|---|---|---|"]
    for what, num, den, target, at_most in time_rows:
        w, c, lg = (_ratio(agg, k(num), k(den), key) for key in ("diff", "cpu", "logged"))
        if w is None and c is None:
            continue
        rows.append(f"| {what} | {_f(w, 2)} | **{_f(c, 2)}** | {_f(lg, 2)} | {'≤' if at_most else '≥'} {target} | "
                    f"{_verdict(w, target, at_most)} · {_verdict(c, target, at_most)} |")

    def over(v):
        a = agg.get(k(v), {})
        return None if a.get("rss") is None or floor is None else a["rss"] - floor

    mem_rows = [("ours dpo ÷ ours sft, same pairs", "dpo", "sft", TARGET_DPO_MEMORY),
                ("ours dpo ÷ ours sft-2x, same images per step", "dpo", "sft-2x", TARGET_DPO_MEMORY),
                ("ours dpo ÷ baseline", "dpo", "baseline", None),
                ("ours dpo (first epoch) ÷ baseline", "dpo-cold", "baseline", None)]
    rows += ["", f"| memory ratio | {'peak CUDA' if mem_key == 'cuda' else 'peak RSS'} | RSS over load floor | target "
             "| verdict (peak) |", "|---|---|---|---|---|"]
    for what, num, den, target in mem_rows:
        m = _ratio(agg, k(num), k(den), mem_key)
        if m is None:
            continue
        o = None if over(num) is None or not over(den) else over(num) / over(den)
        rows.append(f"| {what} | **{_f(m, 2)}** | {_f(o, 2)} | {'≤ ' + str(target) if target else '—'} | "
                    f"{_verdict(m, target) if target else '—'} |")
    return rows


def _profile_rows(profiles: dict, name: str) -> list[str]:
    ours, base = profiles.get((name, "dpo"), {}), profiles.get((name, "baseline"), {})
    rows = ["Where a dpo step's CPU time goes (cProfile on the CPU clock, SHORT and LONG runs: each part = its "
            "cumulative CPU seconds in LONG − in SHORT, / (LONG − SHORT); total = the CPU s/step of those two "
            "runs; cProfile slows Python-heavy parts, so compare shares):", "",
            "| part of a step | ours dpo, cached | share | baseline | share |", "|---|---|---|---|---|"]
    for key in [c for c, _ in CATEGORIES] + [OTHER]:
        cells = []
        for p in (ours, base):
            s = p.get("parts", {}).get(key)
            cells += [_f(s), "—" if s is None or not p.get("total") else f"{100 * s / p['total']:.0f} %"]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    rows.append(f"| **total** | **{_f(ours.get('total'))}** | | **{_f(base.get('total'))}** | |")
    parts = base.get("parts", {})
    encode = parts.get("VAE encode", 0.0) + parts.get("text encoder", 0.0)
    if base.get("total") and encode < base["total"]:
        rows += ["", f"The baseline spends {100 * encode / base['total']:.0f} % of its step encoding images and "
                 f"prompts; removing exactly that (what cached latents do) bounds the speed-up at "
                 f"{base['total'] / (base['total'] - encode):.2f}× for this model. A small negative value is "
                 "noise (the parts come from two processes)."]
    return rows


def write_docs(section: str, path: Path = DOCS) -> None:
    """Replace (or append) this section of ``path`` atomically; other sections are kept as they are."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.train_step.tmp")
    tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, path)
