"""Nothing heavy at import: ComfyUI imports every pack at start-up and ``import vitruvian`` must stay cheap.

A structural check in a fresh interpreter (``sys.modules`` after the import), not a timing assert; the
timings are in ``python -m benchmarks.import_time`` and ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

#: Imported only inside the functions that need them (model loading, training, scoring, graphs).
#: networkx alone cost ~0.2 s of ComfyUI's start (measured with benchmarks.import_time).
HEAVY = ("diffusers", "peft", "onnxruntime", "transformers", "accelerate", "networkx")

_PROBE = "import json, sys; import {module}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"


def _loaded_after(module: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(module=module)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"import {module} failed:\n{done.stderr[-2000:]}"
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_vitruvian_is_light():
    """The package's top level (ComfyUI's entry point) imports neither the heavy libraries nor kornia or torch."""
    loaded = _loaded_after("vitruvian")
    assert not loaded & {*HEAVY, "kornia", "torch"}, sorted(loaded & {*HEAVY, "kornia", "torch"})


@pytest.mark.parametrize("module", ["vitruvian.core", "vitruvian.core.pose", "vitruvian.core.scoring",
                                    "vitruvian.core.regions", "vitruvian.trainers"])
def test_library_modules_defer_heavy_imports(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    loaded = _loaded_after(module)
    assert not loaded & set(HEAVY), f"import {module} pulls in {sorted(loaded & set(HEAVY))}; import them lazily"
