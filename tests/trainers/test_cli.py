"""vitruvian-train CLI: --help generated from the fields, --print-config, exit codes and messages."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vitruvian.trainers.cli import main
from vitruvian.trainers.config import TrainConfig, config_keys, load_config
from vitruvian.trainers.objectives import objective_names

REQUIRED = ["--set", "base=model", "--set", "data=pairs", "--set", "out=runs/a"]


def test_help_lists_objectives_and_every_setting(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in objective_names():
        assert f"\n    {name}" in text
    for f in dataclasses.fields(TrainConfig):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {f.name} "))
        assert f.metadata["help"] in line, f.name
        assert ("(required)" if f.metadata["required"] else "(default: ") in line, f.name
    assert "(default: 5000.0)" in text and "(default: to_q,to_k,to_v,to_out.0)" in text
    for title in ("run:", "LoRA:", "optimisation:", "DPO:"):
        assert f"\n{title}\n" in text


@pytest.mark.parametrize("objective", objective_names())
def test_subcommand_help_has_the_same_options(objective, capsys):
    assert main([objective, "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--config FILE.toml", "--set key=value", "--resume PATH|latest", "--print-config"):
        assert option in text
    assert all(f"  {key} " in text for key in config_keys())


@pytest.mark.parametrize("launcher", ["module", "console_script"])
def test_entry_points(launcher):
    script = Path(sys.executable).with_name("vitruvian-train")
    if launcher == "console_script" and not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not pip-installed there)")
    cmd = [sys.executable, "-m", "vitruvian.trainers"] if launcher == "module" else [str(script)]
    proc = subprocess.run([*cmd, "dpo", "--print-config", "json", *REQUIRED, "--set", "steps=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["steps"] == 3 and printed["objective"] == "dpo" and set(printed) == set(config_keys())
    if launcher == "module":  # the exit status reaches the shell
        bad = subprocess.run([*cmd, "dpo", "--set", "steps=0"], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "steps must be an integer >= 1" in bad.stderr and "Traceback" not in bad.stderr


def test_print_config_toml_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["dpo", *REQUIRED, "--set", "steps=3", "--set", "lora_targets=to_q,to_v", "--set", "learning_rate=1e-4",
            "--resume", "latest", "--print-config"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    doc = tomllib.loads(text)["train"]
    assert doc["steps"] == 3 and doc["resume"] == "latest" and doc["base"] == str(tmp_path / "model")
    assert "# Optimizer steps to train." in text
    saved = tmp_path / "resolved.toml"
    saved.write_text(text)
    expected = load_config("dpo", None, [*REQUIRED[1::2], "steps=3", "lora_targets=to_q,to_v",
                                         "learning_rate=1e-4", "resume=latest"])
    assert load_config("dpo", saved) == expected


def test_config_file_and_set(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\nbase = "m"\ndata = "d"\nout = "o"\nsteps = 5\nrank = 16\n')
    assert main(["sft", "--config", str(cfg), "--set", "steps=7", "--print-config", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 7 and printed["rank"] == 16 and printed["objective"] == "sft"
    assert printed["base"] == str(tmp_path / "m")


@pytest.mark.parametrize("argv, expect", [
    (["dpo", *REQUIRED, "--set", "steps=0"], "steps must be an integer >= 1, got 0"),
    (["dpo", *REQUIRED, "--set", "stpes=3"], "unknown key(s) 'stpes' (from --set), did you mean 'steps'?"),
    (["dpo", "--set", "steps=3"], "base must be set"),
    (["dpo", *REQUIRED, "--set", "resolution=513"], "resolution must be a multiple of 8, got 513"),
    (["dpo", "--config", "/nonexistent/x.toml"], "config_file must be an existing TOML file"),
])
def test_exception_bad_config_exits_2(argv, expect, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vitruvian-train: error: ") and expect in captured.err
    assert "Traceback" not in captured.err


def test_exception_unknown_key_lists_valid_keys(capsys):
    assert main(["dpo", *REQUIRED, "--set", "lr=1"]) == 2
    assert "valid keys: " + ", ".join(config_keys()) in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["nope"], ["dpo", "--bogus"]])
def test_exception_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: vitruvian-train" in capsys.readouterr().err


def test_exception_bad_dataset_exits_2_before_training(tmp_path, capsys):
    data = tmp_path / "pairs"
    data.mkdir()
    (data / "metadata.jsonl").write_text('{"prompt": "a", "chosen": "missing.png", "rejected": "gone.png"}\n')
    code = main(["dpo", "--set", f"base={tmp_path / 'no_model'}", "--set", f"data={data}",
                 "--set", f"out={tmp_path / 'out'}", "--set", "steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and "line 1: chosen: file not found 'missing.png'" in err and "Traceback" not in err
