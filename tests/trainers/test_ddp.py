"""DDP on the CPU: two processes (gloo) train the tiny model; disjoint data, one synchronised LoRA.

``accelerate launch --cpu --num_processes 2`` needs MPI to start several processes (accelerate 1.15
starts one otherwise), so the test uses accelerate's torchrun launcher (``--multi_gpu``); with no CUDA
device the loop puts that run on the CPU with the gloo backend.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .engine_kit import make_pair_folder, tiny_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, cfg) -> None:
    """Train ``cfg`` in two DDP processes (gloo) with ddp_driver.py; fail with the output if it fails."""
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the loop must pick the CPU by itself
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(Path(__file__).with_name("ddp_driver.py")), str(tmp_path / "cfg.json")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_processes(tmp_path):
    from vitruvian.trainers.models import load_lora_state

    data = make_pair_folder(tmp_path / "data", 8)
    launch(tmp_path, tiny_config(tmp_path, data, steps=2, batch_size=2, checkpoint_every=1))

    out = tmp_path / "out"
    ranks = [json.loads((out / f"keys-rank{r}.json").read_text()) for r in (0, 1)]
    keys = [set(k for step in r["keys"].values() for k in step) for r in ranks]
    assert all(len(step) == 2 for r in ranks for step in r["keys"].values())
    assert keys[0] and keys[1] and not keys[0] & keys[1]  # each rank its own shard
    assert ranks[0]["lora"] == ranks[1]["lora"]  # gradients were all-reduced: one model
    state = load_lora_state(out / "vitruvian.safetensors")
    assert state.step == 2 and state.unet
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors"} <= {p.name for p in (out / "checkpoints" / "step-2").iterdir()}
    assert json.loads((out / "checkpoints" / "step-2" / "state.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_two_processes_mpd(tmp_path):
    """FairHuman MPD under DDP: the per-task gradients are averaged over the processes before the solve, so
    both ranks keep one model even when only one rank's image has hands; solves and between-solve steps
    alternate (mpd_every=2) without a hang."""
    from .objective_kit import region_singles

    data = region_singles(tmp_path / "data", n=4)
    lines = [json.loads(x) for x in (data / "metadata.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines):
        if i % 2:
            rec.pop("hand_boxes", None)  # ranks see different task sets
    (data / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    launch(tmp_path, tiny_config(tmp_path, data, objective="mpd", steps=3, batch_size=1, mpd_every=2))

    out = tmp_path / "out"
    ranks = [json.loads((out / f"keys-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["lora"] == ranks[1]["lora"]
    records = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    weights = [{k: r["metrics"][k] for k in ("w_global", "w_face", "w_hand")} for r in records]
    assert all(w["w_global"] > 0 and w["w_face"] > 0 for w in weights), weights


@pytest.mark.slow
def test_two_processes_flux(tmp_path):
    """A flow-matching family under DDP: Flux.1 from its ComfyUI files, dpo over gloo, one synchronised LoRA in
    the diffusers key style."""
    from vitruvian.trainers.models import load_lora_state

    from .test_flux_train import flux_config

    cfg = flux_config(tmp_path, "dpo", steps=2, batch_size=1, checkpoint_every=1)
    launch(tmp_path, cfg)
    out = tmp_path / "out"
    ranks = [json.loads((out / f"keys-rank{r}.json").read_text()) for r in (0, 1)]
    keys = [set(k for step in r["keys"].values() for k in step) for r in ranks]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert ranks[0]["lora"] == ranks[1]["lora"]
    state = load_lora_state(out / "vitruvian.safetensors")
    assert state.step == 2 and state.metadata["vitruvian_lora_keys"] == "diffusers"
