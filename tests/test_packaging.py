"""Packaging facts a user relies on: requirements.txt installs, never touches torch, ships every subpackage."""
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in (x.split("#")[0].strip() for x in lines) if line]


def test_requirements_parse_and_leave_torch_alone():
    reqs = _requirements()  # an invalid marker raises here, as it would in pip
    names = {r.name.lower() for r in reqs}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert {"kornia", "networkx", "safetensors", "diffusers", "peft"} <= names


def test_exactly_one_onnxruntime_per_platform():
    envs = [{"platform_machine": m, "sys_platform": p} for m in ("x86_64", "aarch64", "arm64")
            for p in ("linux", "win32", "darwin")]
    ort = [r for r in _requirements() if r.name.startswith("onnxruntime")]
    for env in envs:
        chosen = [r.name for r in ort if r.marker is None or r.marker.evaluate(env)]
        assert len(chosen) == 1, (env, chosen)


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    skip = {"tests", "benchmarks", "tools", "docs", "workflows", "example_workflows", ".venv", ".git"}
    found = {"vitruvian"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if not rel.parts or rel.parts[0] in skip or any(p.startswith(".") for p in rel.parts):
            continue
        found.add(".".join(("vitruvian",) + rel.parts))
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_trainer_cli_runs_as_module_from_elsewhere(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vitruvian.trainers", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "dpo" in out.stdout and "sft" in out.stdout


def test_data_files_the_code_reads_are_package_data():
    """Shipped configs, TOMLs and the CLIP tokenizer files are in the wheel (a glob in package-data matches each)."""
    from fnmatch import fnmatch

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vitruvian"]
    data = [p for d in ("trainers/assets", "trainers/model_configs", "trainers/configs")
            for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "vocab.json" for p in data)
    missing = [p.relative_to(ROOT).as_posix() for p in data
               if not any(fnmatch(p.relative_to(ROOT).as_posix(), g.replace("**/", "*")) for g in globs)]
    assert not missing, f"add to pyproject [tool.setuptools.package-data]: {missing}"
