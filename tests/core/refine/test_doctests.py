"""The docstring examples of the refinement modules run (imported as ``vitruvian.…``, as users do)."""

import doctest
import importlib

import pytest

MODULES = ["crop", "paste", "seam", "plan", "refine", "crops", "from_mask", "conditioning"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"vitruvian.core.refine.{name}")
    failed, attempted = doctest.testmod(module, verbose=False, report=True)
    assert attempted > 0 and failed == 0
