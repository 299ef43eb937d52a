"""trainers.loop.train on the tiny diffusers model: sft and dpo end to end, outputs, early failures."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from vitruvian.core.errors import ConfigError, DatasetError

from ..tiny import tiny_diffusers_folder
from .engine_kit import make_pair_folder, make_single_folder, tiny_config


def lora_snapshot(unet) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_smoke(tmp_path, objective):
    from vitruvian.trainers import train
    from vitruvian.trainers.models import load_base, load_lora_state

    data = (make_single_folder if objective == "sft" else make_pair_folder)(tmp_path / "data", 4)
    cfg = tiny_config(tmp_path, data, objective, batch_size=2, checkpoint_every=2)
    seen = []
    res = train(cfg, callbacks=[lambda ev: seen.append((ev.step, lora_snapshot(ev.unet), ev.unet)) and None])

    # losses finite, one progress line per step with the documented fields
    records = [json.loads(line) for line in (tmp_path / "out" / "progress.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["seconds"] > 0 and r["eta"] >= 0 and r["lr"] == 1e-3 for r in records)
    assert res.steps == 3 and res.final_loss == records[-1]["loss"] and res.interrupted == ""
    assert set(res.metrics) == ({"mse"} if objective == "sft" else
                                {"implicit_acc", "reward_margin", "logit", "policy_err_w", "policy_err_l",
                                 "ref_err_w", "ref_err_l"})

    # LoRA changed step by step; the frozen base did not change at all
    first, last = seen[0][1], seen[-1][1]
    assert any(not torch.equal(first[n], last[n]) for n in first)
    unet = seen[-1][2]
    fresh = load_base(tiny_diffusers_folder()).unet.state_dict()
    base_params = {n.replace(".base_layer", ""): p for n, p in unet.named_parameters() if "lora_" not in n}
    assert base_params.keys() == fresh.keys()
    assert all(torch.equal(p, fresh[n]) for n, p in base_params.items())

    # files: final LoRA (with the config in its metadata), config.json, versioned checkpoint LoRAs
    out = tmp_path / "out"
    assert res.lora_path == out / "vitruvian.safetensors"
    state = load_lora_state(res.lora_path)
    assert state.config["objective"] == objective and state.config["steps"] == 3 and state.step == 3
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    assert res.checkpoints == (out / "checkpoints" / "step-2", out / "checkpoints" / "step-3")
    assert (out / "vitruvian-step2.safetensors").is_file() and (out / "vitruvian-step3.safetensors").is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-3"
    saved_b = {k: v for k, v in state.unet.items() if "lora_B" in k}
    assert any(v.abs().sum() > 0 for v in saved_b.values())  # B moved away from its zero init
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_sdxl_dpo(tmp_path):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    cfg = tiny_config(tmp_path, data, "dpo", base=str(tiny_diffusers_folder("sdxl")), steps=2,
                      proportion_empty_prompts=0.5)
    res = train(cfg)
    assert res.steps == 2 and math.isfinite(res.final_loss) and res.lora_path.is_file()


def test_bad_dataset_fails_before_any_model_loads(tmp_path):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    with open(data / "metadata.jsonl", "a") as f:
        f.write('{"prompt": "x", "chosen": "img/missing.png", "rejected": "img/0000_l.png"}\n')
    # the base path does not exist: had a model been loaded first, this would be ModelNotFoundError
    cfg = tiny_config(tmp_path, data, base=str(tmp_path / "no-such-model"))
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match=r"line 3: chosen: file not found 'img/missing.png'"):
        train(cfg)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "out").exists()


def test_dpo_needs_pairs(tmp_path):
    from vitruvian.trainers import train

    data = make_single_folder(tmp_path / "data", 2)
    cfg = tiny_config(tmp_path, data, "dpo", base=str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match=r"objective 'dpo' needs 2 images per sample .* got a dataset with 1"):
        train(cfg)


def test_fresh_start_refuses_to_overwrite_a_run(tmp_path):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 2)
    train(tiny_config(tmp_path, data, steps=1))
    with pytest.raises(ConfigError, match=r"out must not hold another run's checkpoints .* --set resume=latest"):
        train(tiny_config(tmp_path, data, steps=2))


@pytest.mark.slow
def test_options_gradient_checkpointing_8bit_fallback_grad_accum(tmp_path, capsys):
    from vitruvian.trainers import train

    data = make_pair_folder(tmp_path / "data", 4)
    cfg = tiny_config(tmp_path, data, steps=2, gradient_checkpointing=True, use_8bit_adam=True, grad_accum=2,
                      lr_warmup_steps=2, cache_latents=False)
    res = train(cfg)
    assert res.steps == 2 and math.isfinite(res.final_loss)
    records = [json.loads(line) for line in (tmp_path / "out" / "progress.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [0.0, 5e-4]  # linear warm-up over 2 steps
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        assert "needs bitsandbytes, which does not import; using torch AdamW" in capsys.readouterr().out
    assert not (tmp_path / "out" / "cache").exists()


def test_progress_file(tmp_path):
    from vitruvian.trainers.progress import Progress, read_progress, truncate_progress

    path = tmp_path / "progress.jsonl"
    p = Progress(path, total=4, enabled=True, log_every=2)
    for step in (1, 2, 3):
        p.update(step, loss=0.5 / step, lr=1e-4, metrics={"acc": 0.5, "bad": float("nan")}, seconds=2.0)
    p.close()
    with open(path, "a") as f:
        f.write('{"step": 4, "loss": 0.1')  # a line torn by a kill
    records = read_progress(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0] == {"step": 1, "loss": 0.5, "lr": 1e-4, "metrics": {"acc": 0.5, "bad": "nan"}, "seconds": 2.0,
                          "eta": 6.0}
    truncate_progress(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    quiet = Progress(tmp_path / "other.jsonl", total=1, enabled=False)
    quiet.update(1, loss=1.0, lr=0.0, metrics={}, seconds=1.0)
    assert not (tmp_path / "other.jsonl").exists()
