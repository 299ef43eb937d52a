"""The docstring examples of the region modules run (imported as ``vitruvian.…``, as users do)."""

import doctest
import importlib

import pytest

MODULES = ["types", "from_pose", "shapes", "nms", "masks", "segs", "onnx_detect", "names", "detect"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"vitruvian.core.regions.{name}")
    failed, attempted = doctest.testmod(module, verbose=False, report=True)
    assert attempted > 0 and failed == 0
