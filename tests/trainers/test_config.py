"""TrainConfig: defaults, every validation rule, --set coercion, TOML files, precedence, paths."""
from __future__ import annotations

import dataclasses
import doctest
import json
import os
from pathlib import Path

import pytest

from vitruvian.core.errors import ConfigError
from vitruvian.trainers import config as config_module
from vitruvian.trainers.config import GROUPS, TrainConfig, config_keys, load_config

REQUIRED = {"objective": "dpo", "base": "/m/sd15", "data": "/d/pairs", "out": "/o/run"}


def make(**kw) -> TrainConfig:
    return TrainConfig(**{**REQUIRED, **kw})


def test_smoke_cli_example_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("dpo", overrides=["base=model", "data=pairs", "out=runs/a", "steps=3"])
    assert cfg.objective == "dpo" and cfg.steps == 3
    assert cfg.base == str(tmp_path / "model") and cfg.out == str(tmp_path / "runs" / "a")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key in set(config_keys()) - {"objective", "base", "data", "out", "steps"}:
        assert getattr(cfg, key) == defaults[key], key
    assert cfg.beta == 5000.0 and cfg.beta_convention == "official" and cfg.resolution == 512
    assert cfg.lora_targets == ("to_q", "to_k", "to_v", "to_out.0") and cfg.proportion_empty_prompts == 0.0


def test_every_field_documented():
    for f in dataclasses.fields(TrainConfig):
        assert len(f.metadata["help"]) > 10, f.name
        assert f.metadata["group"] in GROUPS, f.name


def test_doctest():
    assert doctest.testmod(config_module, raise_on_error=False).failed == 0


def test_exception_required_keys():
    with pytest.raises(ConfigError) as e:
        load_config("dpo")
    msg = str(e.value)
    for key in ("base", "data", "out"):
        assert f"{key} must be set" in msg and f"--set {key}=" in msg
    assert "3 invalid settings" in msg


@pytest.mark.parametrize("key, value, expect", [
    ("steps", 0, "steps must be an integer >= 1, got 0"),
    ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
    ("grad_accum", 0, "grad_accum must be an integer >= 1"),
    ("rank", 0, "rank must be an integer >= 1"),
    ("alpha", 0.0, "alpha must be a number > 0"),
    ("resolution", 100, "resolution must be a multiple of 8, got 100"),
    ("resolution", 56, "resolution must be an integer >= 64, got 56"),
    ("proportion_empty_prompts", 1.0, "proportion_empty_prompts must be a number in [0, 1), got 1.0"),
    ("proportion_empty_prompts", -0.1, "proportion_empty_prompts must be a number in [0, 1)"),
    ("beta", 0.0, "beta must be a number > 0, got 0.0"),
    ("beta", -5000.0, "beta must be a number > 0"),
    ("beta", float("nan"), "beta must be a number"),
    ("checkpoint_every", 0, "checkpoint_every must be an integer >= 1"),
    ("log_every", 0, "log_every must be an integer >= 1"),
    ("learning_rate", 0.0, "learning_rate must be a number > 0, got 0.0"),
    ("max_grad_norm", 0.0, "max_grad_norm must be a number > 0"),
    ("lr_warmup_steps", -1, "lr_warmup_steps must be an integer >= 0"),
    ("num_workers", -1, "num_workers must be an integer >= 0"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("mixed_precision", "fp32", "mixed_precision must be one of 'no', 'fp16', 'bf16', got 'fp32'"),
    ("beta_convention", "trl", "beta_convention must be one of 'official', 'diffusers'"),
    ("name", "a/b", "name must be a file name stem"),
    ("name", "n" * 201, "name must be at most 200 bytes"),
    ("lora_targets", (), "lora_targets must be a non-empty list"),
    ("lora_targets", ("to_q", ""), "lora_targets must be a non-empty list"),
    ("steps", "3", "steps must be an integer, got str '3'"),
    ("steps", True, "steps must be an integer, got bool True"),
    ("random_flip", 1, "random_flip must be true or false, got int 1"),
    ("lora_targets", "to_q", "lora_targets must be a list of strings"),
])
def test_exception_rule(key, value, expect):
    with pytest.raises(ConfigError) as e:
        make(**{key: value})
    msg = str(e.value)
    assert msg.startswith("TrainConfig: ") and expect in msg
    assert "fix:" in msg


def test_exception_cross_field_warmup():
    with pytest.raises(ConfigError, match=r"lr_warmup_steps must be <= steps \(10\), got 11; fix"):
        make(steps=10, lr_warmup_steps=11)
    assert make(steps=10, lr_warmup_steps=10).lr_warmup_steps == 10


def test_exception_unknown_objective():
    with pytest.raises(ConfigError, match=r"objective must be one of .*dpo.*got 'nope'"):
        make(objective="nope")


def test_exception_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        make(steps=0, rank=0, beta=-1.0)
    msg = str(e.value)
    assert "3 invalid settings" in msg and all(k in msg for k in ("steps must", "rank must", "beta must"))


@pytest.mark.parametrize("key, value", [("resolution", 64), ("proportion_empty_prompts", 0.0),
                                        ("proportion_empty_prompts", 0.99), ("mixed_precision", "bf16"),
                                        ("beta_convention", "diffusers"), ("name", "my-lora_v1.2")])
def test_valid_edges(key, value):
    assert getattr(make(**{key: value}), key) == value


def test_normalisation_frozen_and_dict_round_trip():
    cfg = make(learning_rate=1, alpha=4, lora_targets=["to_q", "to_k"])
    assert isinstance(cfg.learning_rate, float) and cfg.alpha == 4.0 and cfg.lora_targets == ("to_q", "to_k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 5
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d and d["lora_targets"] == ["to_q", "to_k"]
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="unknown key.*'stepz'.*did you mean 'steps'"):
        TrainConfig.from_dict({**d, "stepz": 1})


@pytest.mark.parametrize("raw, key, expect", [
    ("steps=3", "steps", 3), ("steps=1_000", "steps", 1000), ("learning_rate=1e-5", "learning_rate", 1e-5),
    ("alpha=4", "alpha", 4.0), ("beta=2500.5", "beta", 2500.5),
    ("random_flip=true", "random_flip", True), ("random_flip=False", "random_flip", False),
    ("random_flip=1", "random_flip", True), ("random_flip=0", "random_flip", False),
    ("random_flip=yes", "random_flip", True), ("random_flip=NO", "random_flip", False),
    ("lora_targets=to_q, to_k,to_out.0", "lora_targets", ("to_q", "to_k", "to_out.0")),
    ("name=my_run", "name", "my_run"), ("mixed_precision= bf16 ", "mixed_precision", "bf16"),
    # lists as TOML / JSON arrays too (the spelling a user tries first)
    ("hg_stage_steps=[1,1,1]", "hg_stage_steps", (1, 1, 1)), ("hg_stage_steps=[2, 3, 4]", "hg_stage_steps", (2, 3, 4)),
    ("hg_stage_steps=1,1,1", "hg_stage_steps", (1, 1, 1)),
    ('lora_targets=["to_q", "to_k"]', "lora_targets", ("to_q", "to_k")),
    ("lora_targets=['to_q', 'to_v']", "lora_targets", ("to_q", "to_v")),
    ("lora_targets=[to_q, to_out.0]", "lora_targets", ("to_q", "to_out.0")),
])
def test_set_coercion(raw, key, expect):
    cfg = load_config("dpo", overrides=[*(f"{k}={v}" for k, v in REQUIRED.items() if k != "objective"), raw])
    assert getattr(cfg, key) == expect and type(getattr(cfg, key)) is type(expect)


@pytest.mark.parametrize("raw, expect", [
    ("steps=3.5", "--set steps=3.5: steps must be an integer, got '3.5'"),
    ("steps=abc", "steps must be an integer, got 'abc'"),
    ("random_flip=maybe", "random_flip must be true or false, got 'maybe'"),
    ("learning_rate=fast", "learning_rate must be a number, got 'fast'"),
    ("steps", "--set must be key=value, got 'steps'"),
    ("hg_stage_steps=[1,x]", "hg_stage_steps must be a list of integers, got '[1,x]'; write it as 1,2,3 or [1, 2, 3]"),
    ("hg_stage_steps=[1.5]", "write it as 1,2,3 or [1, 2, 3] (TOML/JSON)"),
    ("hg_stage_steps=[[1]]", "hg_stage_steps must be a list of integers, got '[[1]]'"),
    ("lora_targets=[{}]", """write it as a,b or ["a", "b"]"""),
])
def test_set_coercion_errors(raw, expect):
    with pytest.raises(ConfigError) as e:
        load_config("dpo", overrides=["base=m", "data=d", "out=o", raw])
    assert str(e.value).startswith("load_config: ") and expect in str(e.value)


def test_unknown_keys_from_file_and_set(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('base = "m"\nlr = 1e-4\n')
    with pytest.raises(ConfigError) as e:
        load_config("dpo", cfg_file, ["stpes=3", "data=d"])
    msg = str(e.value)
    assert "'lr' (from run.toml)" in msg and "'stpes' (from --set), did you mean 'steps'?" in msg
    assert "valid keys: " + ", ".join(config_keys()) in msg


def test_file_then_set_precedence(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('base = "m"\ndata = "d"\nout = "o"\nsteps = 5\nrank = 4\nlearning_rate = 2e-5\n'
                        'lora_targets = ["to_q"]\nrandom_flip = false\n')
    cfg = load_config("dpo", cfg_file, ["steps=7", "steps=9"])
    assert cfg.steps == 9 and cfg.rank == 4 and cfg.learning_rate == 2e-5
    assert cfg.lora_targets == ("to_q",) and cfg.random_flip is False


def test_train_table_and_paths(tmp_path, monkeypatch):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    cfg_file = folder / "run.toml"
    cfg_file.write_text('[train]\nbase = "../models/sd15"\ndata = "~/pairs"\nout = "/abs/out"\nresume = "latest"\n'
                        'cache_dir = "cache"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("dpo", cfg_file, ["tokenizer=tok"])
    assert cfg.base == str(tmp_path / "models" / "sd15")  # relative to the file's folder
    assert cfg.data == str(tmp_path / "home" / "pairs")  # ~ expanded
    assert cfg.out == "/abs/out" and cfg.resume == "latest" and cfg.cache_dir == str(folder / "cache")
    assert cfg.tokenizer == str(tmp_path / "tok")  # --set paths: relative to the working directory
    assert load_config("dpo", cfg_file, ["resume=ckpt/step_10"]).resume == str(tmp_path / "ckpt" / "step_10")
    assert load_config("dpo", cfg_file, ["resume="]).resume == ""


def test_exception_file(tmp_path):
    with pytest.raises(ConfigError, match="config_file must be an existing TOML file, got .*nope.toml"):
        load_config("dpo", tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    with pytest.raises(ConfigError, match="config_file must be valid TOML, got .*bad.toml.*line 1"):
        load_config("dpo", bad)
    mixed = tmp_path / "mixed.toml"
    mixed.write_text('steps = 3\n[train]\nrank = 4\n')
    with pytest.raises(ConfigError, match=r"every setting inside \[train\].*got top-level key\(s\) 'steps'"):
        load_config("dpo", mixed)
    typed = tmp_path / "typed.toml"
    typed.write_text('base = "m"\ndata = "d"\nout = "o"\nsteps = "3"\nlora_targets = "to_q"\n')
    with pytest.raises(ConfigError) as e:
        load_config("dpo", typed)
    assert "steps must be an integer, got str '3'" in str(e.value) and "lora_targets must be a list" in str(e.value)


def test_exception_objective_mismatch(tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('objective = "sft"\nbase = "m"\ndata = "d"\nout = "o"\n')
    with pytest.raises(ConfigError, match="objective must match the subcommand 'dpo', got 'sft' from run.toml"):
        load_config("dpo", cfg_file)
    assert load_config("sft", cfg_file).objective == "sft"
    assert load_config(None, cfg_file).objective == "sft"


def test_paths_from_set_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("dpo", overrides=["base=./a/../m", "data=d", "out=o"])
    assert all(os.path.isabs(p) for p in (cfg.base, cfg.data, cfg.out)) and cfg.base == str(tmp_path / "m")
    assert Path(cfg.out).parent == tmp_path


@pytest.mark.parametrize("key, value, expect", [
    ("data", "d" * 100_000, r"data must be a path the system accepts, got '[^']*d'… \(\d+ characters\) which is too long"),
    ("base", "m\x00odel", "base must be a path the system accepts, got .* which contains a NUL character"),
    ("out", "README.md/run", "out must be a path the system accepts, got .* which goes through a file as if it were a folder"),
])
def test_paths_the_os_refuses_are_named(key, value, expect, monkeypatch):
    """What the OS refuses (too long, NUL, a file used as a folder) is a ConfigError naming the key, before any
    work — not ``OSError [Errno 36]`` from deep inside the dataset reader."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    with pytest.raises(ConfigError, match=expect) as e:
        load_config("dpo", overrides=[f"{k}={v}" for k, v in {**REQUIRED, key: value}.items() if k != "objective"])
    assert len(str(e.value)) < 1000 and f"fix: --set {key}=" in str(e.value)


def test_os_path_problem_doctests():
    import doctest

    from vitruvian.core import paths

    assert doctest.testmod(paths).failed == 0
