"""Smoke tests of ``benchmarks/train_step.py``: its tiny configuration, our trainer only, 1 and 2 steps;
and its arithmetic and docs writer on hand-made runs.

The benchmark itself (both trainers, the mid-size model, repeats) is never run by the test suite; this
only checks that its machinery (model folder, parquet set, worker process, timing, report) still
works against the current trainer and produces a table row.
"""
from __future__ import annotations

import re

import pytest
from vitruvian.benchmarks.train_report import aggregate, render_section
from vitruvian.benchmarks.train_step import Options, run_benchmark


@pytest.mark.slow
def test_smoke_tiny_ours_dpo(tmp_path):
    opts = Options(models=("tiny",), variants=("dpo", "baseline"), steps=(1, 2), repeats=1, floor=False,
                   work_dir=tmp_path)
    messages: list[str] = []
    results = run_benchmark(opts, say=messages.append)

    assert any("skipping the diffusers baseline" in m for m in messages)  # no --baseline-script
    runs = results["runs"]
    assert [(r.variant, r.steps) for r in runs] == [("dpo", 1), ("dpo", 2)]
    assert all(r.ok for r in runs), [r.error for r in runs]
    assert all(r.maxrss_mib > 100 and r.wall > 0 for r in runs)
    assert sorted(runs[1].step_seconds) == [1, 2]  # read from the run's progress.jsonl

    a = aggregate(results)[("tiny", "dpo")]
    assert a["logged"] == pytest.approx(runs[1].step_seconds[2])
    assert a["diff"] == pytest.approx(runs[1].wall - runs[0].wall)

    section = render_section(results, command="python -m benchmarks.train_step --models tiny")
    assert section.startswith("## Trainer step time and memory\n")
    rows = [line for line in section.splitlines() if line.startswith("| ours · dpo · latents cached")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "2"  # pairs in the data set: SHORT (1) x 2 pairs per step
    assert re.fullmatch(r"-?\d+\.\d{3}", cells[2]), cells  # wall s/step by difference (noise may make it < 0)
    assert re.fullmatch(r"\*\*-?\d+\.\d{3}\*\*", cells[4]), cells  # CPU s/step by difference
    assert float(cells[6]) > 0 and float(cells[7]) > 100  # logged s/step, peak RSS MiB
    assert "diffusers `train_diffusion_dpo.py`" not in section


def test_aggregate_and_docs_section(tmp_path):
    """Difference method on hand-made runs, and the docs writer replacing only its own section."""
    from vitruvian.benchmarks.train_report import write_docs
    from vitruvian.benchmarks.train_step import VARIANTS, Run

    runs = []
    for rep, noise in enumerate((0.0, 3.0, 1.0)):  # start-up noise differs per round, per-step cost does not
        for key, per_step in (("sft", 1.0), ("dpo", 2.5)):
            for steps in (3, 13):
                runs.append(Run("mid", key, steps, rep, ok=True, wall=20 + noise * (steps == 13) + per_step * steps,
                                cpu=10 + per_step * steps, maxrss_mib=1000 + 100 * (key == "dpo"),
                                step_seconds={s: per_step for s in range(1, steps + 1)}))
    opts = Options(models=("mid",), variants=("sft", "dpo"), steps=(3, 13), repeats=3)
    results = {"runs": runs, "options": opts, "variants": [v for v in VARIANTS if v.key in ("sft", "dpo")],
               "floors": {"mid": [900.0]}, "profiles": {}, "info": {}}
    a = aggregate(results)
    assert a[("mid", "dpo")]["cpu"] == pytest.approx(2.5) and a[("mid", "sft")]["cpu"] == pytest.approx(1.0)
    assert a[("mid", "dpo")]["diff"] == pytest.approx(2.6)  # median of 2.5, 2.8, 2.6
    assert (a[("mid", "dpo")]["lo"], a[("mid", "dpo")]["hi"]) == pytest.approx((2.5, 2.8))
    assert a[("mid", "dpo")]["logged"] == pytest.approx(2.5) and a[("mid", "dpo")]["rss"] == 1100

    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Benchmarks: import cost\n\nkeep me\n", encoding="utf-8")
    write_docs("## Trainer step time and memory\n\nfirst\n", docs)
    write_docs("## Trainer step time and memory\n\nsecond\n\n### mid\n\nrow\n", docs)
    text = docs.read_text(encoding="utf-8")
    assert text == ("# Benchmarks\n\n## Benchmarks: import cost\n\nkeep me\n\n"
                    "## Trainer step time and memory\n\nsecond\n\n### mid\n\nrow\n")


@pytest.mark.slow
def test_smoke_flow_step():
    """``benchmarks/flow_step.py`` on the tiny Flux.1 preset, one step each: (fp32, fp8 + low_memory) × (sft, dpo)
    run in their own processes and give a time, a peak and a finite loss (the other families share the code path;
    ``--family chroma,sd3`` runs them)."""
    import json
    import subprocess
    import sys

    from .comfy_host import REPO_ROOT

    proc = subprocess.run([sys.executable, "-m", "benchmarks.flow_step", "--device", "cpu", "--family", "flux",
                           "--preset", "tiny", "--sizes", "64", "--steps", "1", "--warmup", "0"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert len(rows) == 4 and not [r for r in rows if "error" in r], rows
    assert all(r["s_per_step"] > 0 and r["peak_gib"] > 0 and r["loss"] == r["loss"] for r in rows)
    table = [line for line in proc.stdout.splitlines() if line.startswith(("| flux", "| chroma", "| sd3"))]
    assert len(table) == 4
