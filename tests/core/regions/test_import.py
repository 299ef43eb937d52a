"""Importing the region library costs torch only: onnxruntime and kornia load when first used."""

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["vitruvian.core.regions", "vitruvian.core.onnx_runtime"])
def test_no_heavy_imports(module):
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & {"onnxruntime", "kornia", "onnx", "comfy", "folder_paths"}, sorted(loaded)
