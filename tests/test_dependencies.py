"""Every third-party module the pack imports at run time is declared, in pyproject.toml and in
requirements.txt alike, or is provided by ComfyUI, or is optional with a fallback (listed below, with it)."""
import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
#: What the pack's run-time code is: the ComfyUI entry, the library, the nodes, the trainer, the demo.
RUNTIME = ["__init__.py", "core", "nodes", "trainers", "demo.py"]
#: Modules ComfyUI itself provides to the nodes (never installed by the pack).
HOST = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "aiohttp", "nodes"}
#: Optional imports and their fallback.
OPTIONAL = {
    "onnxruntime": "an extra ([cpu] / [gpu]; requirements.txt picks one by platform); core/onnx_runtime.py says how to install it",
    "bitsandbytes": "use_8bit_adam falls back to torch AdamW with a message (trainers/loop.py)",
    "open_clip": "only searched for its tokenizer file (core/tokenizer_files.py); absent means 'not found'",
    "tests": "demo.py takes the tiny model from the repository's test kit",
}
#: Import name → distribution name where they differ and the installed metadata may not say.
DISTRIBUTION = {"PIL": "pillow", "tomli": "tomli"}


def _imported() -> dict[str, set[str]]:
    """Top-level module names of absolute imports → the files importing them."""
    found: dict[str, set[str]] = {}
    files = [p for entry in RUNTIME for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _declared(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def _distribution(module: str) -> str:
    if module in DISTRIBUTION:
        return DISTRIBUTION[module]
    names = packages_distributions().get(module, [module])
    return names[0].lower().replace("_", "-")


def test_every_runtime_import_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    in_pyproject = _declared(project["dependencies"]) | {"onnxruntime", "onnxruntime-gpu"}
    lines = (x.split("#")[0].strip() for x in (ROOT / "requirements.txt").read_text().splitlines())
    in_requirements = _declared([line for line in lines if line]) | {"torch"}  # torch: ComfyUI's own build
    third_party = {m: files for m, files in _imported().items()
                   if m not in sys.stdlib_module_names and m not in HOST and m not in OPTIONAL and m != "__future__"}
    assert {"torch", "psutil", "filelock", "safetensors"} <= set(third_party)  # the scan sees the pack's imports
    missing = []
    for module, files in sorted(third_party.items()):
        dist = _distribution(module)
        where = [name for name, declared in (("pyproject.toml", in_pyproject), ("requirements.txt", in_requirements))
                 if dist not in declared]
        if where:
            missing.append(f"{module} (distribution {dist}, imported in {', '.join(sorted(files)[:3])}) is not in "
                           f"{' or '.join(where)}")
    assert not missing, "declare these run-time imports (or list them in OPTIONAL with their fallback):\n  " + \
        "\n  ".join(missing)


def test_tomli_only_where_tomllib_is_missing():
    """The trainer reads --config TOML files with tomllib (3.11+), or tomli on 3.10: declared for 3.10 only."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [x.split("#")[0].strip() for x in (ROOT / "requirements.txt").read_text().splitlines()]
    for source, entries in (("pyproject.toml", project), ("requirements.txt", lines)):
        tomli = [Requirement(e) for e in entries if e and Requirement(e).name == "tomli"]
        assert len(tomli) == 1, f"{source} must list tomli once, got {len(tomli)}"
        assert tomli[0].marker.evaluate({"python_version": "3.10"})
        assert not tomli[0].marker.evaluate({"python_version": "3.11"})
