"""Nothing lost: exact resume, SIGTERM/SIGINT, SIGKILL at a random step, the NaN guard, atomic checkpoints."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from vitruvian.core.errors import ConfigError

from .engine_kit import make_pair_folder, tiny_config

CHECKPOINT_FILES = {"state.json", "lora.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.safetensors"}


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "progress.jsonl").read_text().splitlines())]


def assert_complete(ckpt: Path) -> None:
    """Every file present and loadable (what a resume reads)."""
    from vitruvian.trainers.checkpoint import load_checkpoint, load_torch_state
    from vitruvian.trainers.models import load_lora_state

    assert CHECKPOINT_FILES <= {p.name for p in ckpt.iterdir()}, ckpt
    c = load_checkpoint(ckpt)
    assert c.step == int(ckpt.name.split("-")[1])
    assert load_lora_state(ckpt / "lora.safetensors").step == c.step
    assert "state" in load_torch_state(ckpt / "optimizer.pt")
    load_torch_state(ckpt / "scheduler.pt")


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, then resume to 6 (grad accumulation, flips, prompt dropping, warm-up)."""
    from safetensors.torch import load_file

    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 6)
    common = dict(batch_size=2, grad_accum=2, checkpoint_every=3, proportion_empty_prompts=0.25,
                  random_flip=True, lr_warmup_steps=2, seed=3)
    straight = train(tiny_config(tmp_path, data, out=str(tmp_path / "a"), steps=6, **common))
    first = train(tiny_config(tmp_path, data, out=str(tmp_path / "b"), steps=3, **common))
    assert first.steps == 3 and first.checkpoints == (tmp_path / "b" / "checkpoints" / "step-3",)
    resumed = train(tiny_config(tmp_path, data, out=str(tmp_path / "b"), steps=6, resume="latest", **common))
    assert straight.steps == resumed.steps == 6

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    for (step, la), (_, lb) in zip(a, b):
        assert lb == pytest.approx(la, rel=1e-6, abs=1e-7), f"step {step}"
    assert len({round(v, 6) for _, v in a}) > 1  # the losses do move
    wa, wb = load_file(tmp_path / "a" / "vitruvian.safetensors"), load_file(tmp_path / "b" / "vitruvian.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)


def test_resume_refuses_changed_settings(tmp_path):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    train(tiny_config(tmp_path, data, steps=1))
    with pytest.raises(ConfigError, match=r"(?s)resume must use the settings of the run it continues.*rank: checkpoint 8, now 4"):
        train(tiny_config(tmp_path, data, steps=2, rank=4, resume="latest"))
    with pytest.raises(ConfigError, match=r"resume: must be '', 'latest' or a checkpoint folder"):
        train(tiny_config(tmp_path, data, steps=2, resume=str(tmp_path / "nowhere")))


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path, capsys):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    res = train(tiny_config(tmp_path, data, steps=1, resume="latest"))
    assert res.steps == 1
    assert "holds no checkpoint; starting fresh" in capsys.readouterr().out


@pytest.mark.slow
def test_partial_checkpoint_is_never_read(tmp_path):
    """What a kill during a save leaves (a .tmp folder, a stale pointer) is ignored, then cleaned."""
    from vitruvian.trainers import train
    from vitruvian.trainers.checkpoint import resolve_resume

    data = make_pair_folder(tmp_path / "data", 2)
    out = tmp_path / "out"
    train(tiny_config(tmp_path, data, steps=2, checkpoint_every=1))
    root = out / "checkpoints"
    partial = root / ".step-3.tmp"
    shutil.copytree(root / "step-2", partial)
    (partial / "state.json").unlink()  # killed before state.json and the rename
    (out / ".vitruvian-step3.safetensors.abc.tmp").write_bytes(b"partial")
    assert resolve_resume(out, "latest").step == 2
    (root / "latest").write_text("step-7\n")  # pointer to a folder that never got renamed into place
    assert resolve_resume(out, "latest").step == 2
    res = train(tiny_config(tmp_path, data, steps=3, checkpoint_every=1, resume="latest"))
    assert res.steps == 3 and not list(out.rglob("*.tmp"))
    assert (root / "latest").read_text().strip() == "step-3"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from vitruvian.trainers import train
    from vitruvian.trainers.loop import NonFiniteLossError
    from vitruvian.trainers.models import load_lora_state

    data = make_pair_folder(tmp_path / "data", 4)

    def poison(event):
        if event.step == 2:
            with torch.no_grad():
                next(p for n, p in event.unet.named_parameters() if "lora_A" in n).fill_(float("nan"))

    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=r"(?s)loss must be finite, got nan at step 3; .*last good checkpoint is "
                                                 r".*step-2"):
        train(tiny_config(tmp_path, data, steps=5, checkpoint_every=2), callbacks=[poison])
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step")] == ["step-2"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-2"
    assert all(torch.isfinite(t).all() for t in load_lora_state(out / "checkpoints" / "step-2" / "lora.safetensors").unet.values())
    assert not (out / "vitruvian.safetensors").exists()
    res = train(tiny_config(tmp_path, data, steps=4, checkpoint_every=2, resume="latest"))
    assert res.steps == 4 and res.lora_path.is_file()


def test_callback_stop(tmp_path):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    res = train(tiny_config(tmp_path, data, steps=10), callbacks=[lambda ev: ev.step == 2])
    assert (res.steps, res.interrupted) == (2, "callback")
    assert res.lora_path == tmp_path / "out" / "vitruvian-step2.safetensors" and res.lora_path.is_file()
    assert not (tmp_path / "out" / "vitruvian.safetensors").exists()


def cli(tmp_path: Path, data: Path, *sets: str) -> subprocess.Popen:
    from ..tiny import tiny_diffusers_folder

    args = [sys.executable, "-m", "vitruvian.trainers", "dpo", "--set", f"base={tiny_diffusers_folder()}",
            "--set", f"data={data}", "--set", f"out={tmp_path / 'out'}", "--set", "resolution=64",
            "--set", "log_every=1", "--set", "learning_rate=1e-3", *[x for s in sets for x in ("--set", s)]]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)


def wait_for_step(proc: subprocess.Popen, step: int, timeout: float = 120) -> list[str]:
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
            return lines
    proc.kill()
    raise AssertionError("the run never reached step %d:\n%s" % (step, "".join(lines)))


# As a user runs it: PYTHONUNBUFFERED unset, stdout a pipe (a scheduler, ``accelerate launch``) or a file
# (``> log.txt``, nohup). A handler that printed into a buffered stdout in the middle of a print crashed here.
# Two runs at a time, one thread each (two 2-thread runs on 2 cores spin against each other).
USER_ENV = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")},
            "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
SIGNAL_RUNS = [(sig, sink, k) for sig in (signal.SIGTERM, signal.SIGINT) for sink in ("pipe", "file") for k in range(10)]


def _signalled_run(root: Path, data: Path, sig: int, sink: str, rng: random.Random) -> tuple[Path, str]:
    """One CLI run signalled at a random moment after its first step; returns (out folder, its output)."""
    out = root / "out"
    args = [sys.executable, "-m", "vitruvian.trainers", "dpo", *[x for s in _cli_sets(data, out) for x in ("--set", s)],
            "--set", "steps=10000", "--set", f"checkpoint_every={rng.choice([1, 2, 10000])}"]
    log = root / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE if sink == "pipe" else f, stderr=subprocess.STDOUT,
                                text=True, cwd=root, env=USER_ENV)
    chunks: list[str] = []
    reader = None
    if sink == "pipe":  # drain it, as a scheduler would
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
    deadline = time.monotonic() + 120
    while not (out / "progress.jsonl").is_file() or not (out / "progress.jsonl").read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 1"
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.0))  # somewhere in a step, a print or a checkpoint save
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    finally:
        proc.kill()
    if reader is not None:
        reader.join(timeout=30)
        proc.stdout.close()
    text = "".join(chunks) if sink == "pipe" else log.read_text()
    assert proc.returncode == 0, text
    return out, text


def _cli_sets(data: Path, out: Path) -> list[str]:
    from ..tiny import tiny_diffusers_folder

    return [f"base={tiny_diffusers_folder()}", f"data={data}", f"out={out}", "resolution=64", "log_every=1",
            "learning_rate=1e-3"]


@pytest.mark.slow
def test_signals_at_random_moments_always_save(tmp_path):
    """SIGTERM and SIGINT, 20 runs each, half to a pipe and half to a file, at random moments: every run exits 0
    with a complete checkpoint at its last step and that step's LoRA, and the last one resumes."""
    from concurrent.futures import ThreadPoolExecutor

    from vitruvian.trainers import train

    from ..tiny import tiny_diffusers_folder

    data = make_pair_folder(tmp_path / "data", 4)
    tiny_diffusers_folder()  # built once here, not by two threads at once
    seed = random.randrange(1 << 30)
    print(f"signal runs seeded with {seed}")

    def one(i: int):
        sig, sink, _ = SIGNAL_RUNS[i]
        root = tmp_path / f"run{i:02d}"
        root.mkdir()
        return _signalled_run(root, data, sig, sink, random.Random(seed + i))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(len(SIGNAL_RUNS))))
    for (sig, sink, _), (out, text) in zip(SIGNAL_RUNS, results):
        name = signal.Signals(sig).name
        assert f"stopped by {name} after step" in text, (name, sink, text)
        assert "reentrant call" not in text and "Traceback" not in text, text
        step = int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
        assert step >= 1 and [s for s, _ in losses(out)] == list(range(1, step + 1)), (name, sink, text)
        assert_complete(out / "checkpoints" / f"step-{step}")
        assert f"vitruvian-train: saved LoRA to {out / f'vitruvian-step{step}.safetensors'}" in text
        assert (out / f"vitruvian-step{step}.safetensors").is_file()
        assert not list(out.rglob("*.tmp")), (name, sink, list(out.rglob("*.tmp")))
    out, _ = results[-1]
    step = int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    res = train(tiny_config(tmp_path, data, out=str(out), steps=step + 1, checkpoint_every=10000, resume="latest"))
    assert res.steps == step + 1 and res.lora_path == out / "vitruvian.safetensors"


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    """Killed at a random step (checkpointing every step, so often mid-save): the last complete
    checkpoint loads, training completes, and no partial file is left."""
    from vitruvian.trainers import train
    from vitruvian.trainers.checkpoint import checkpoint_dirs, resolve_resume

    data = make_pair_folder(tmp_path / "data", 4)
    proc = cli(tmp_path, data, "steps=10000", "checkpoint_every=1")
    wait_for_step(proc, random.randint(2, 6))
    time.sleep(random.uniform(0.0, 0.3))
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    out = tmp_path / "out"
    latest = resolve_resume(out, "latest")
    assert latest is not None and latest.step >= 1
    for c in checkpoint_dirs(out):  # every visible checkpoint is complete; partial ones stay hidden (.tmp)
        assert_complete(c.path)
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    res = train(tiny_config(tmp_path, data, steps=latest.step + 2, checkpoint_every=1, resume="latest"))
    assert res.steps == latest.step + 2 and res.lora_path.is_file()
    assert [s for s, _ in losses(out)] == list(range(1, res.steps + 1))
    assert not list(out.rglob("*.tmp"))
