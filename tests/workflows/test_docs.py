"""The generated documentation is current: ``docs/nodes.md`` and README's workflow gallery (from the node-surface
snapshot and the UI workflows), README's trainer CLI reference (from ``vitruvian-train --help``), and every
picture the README shows exists. Regenerate with ``python tools/gen_node_reference.py --write --cli``."""

from __future__ import annotations

import json
import re
import sys
import urllib.request

import pytest

from ..comfy_host import REPO_ROOT, load_surface
from ..test_node_surface import _tool

README = REPO_ROOT / "README.md"
FIX = "regenerate with `python tools/gen_node_reference.py --write --cli`"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_node_reference_is_current():
    tool = _tool("gen_node_reference")
    surface = load_surface()
    expected = tool.render_nodes(surface["pack"], surface.get("comfyui", ""))
    assert tool.NODES_MD.is_file(), f"docs/nodes.md is missing; {FIX}"
    assert tool.NODES_MD.read_text(encoding="utf-8") == expected, f"docs/nodes.md is stale; {FIX}"
    for node_id in surface["pack"]:
        assert f"`{node_id}`" in expected


def test_readme_gallery_is_current():
    tool = _tool("gen_node_reference")
    gallery = tool.render_gallery(tool.ui_workflows(), load_surface()["pack"])
    readme = _readme()
    assert tool.replace_block(readme, gallery, tool.GALLERY_BEGIN, tool.GALLERY_END) == readme, \
        f"README's workflow gallery is stale (a workflow was added, renamed or changed); {FIX}"


@pytest.mark.slow
def test_readme_cli_reference_is_current():
    tool = _tool("gen_node_reference")
    readme = _readme()
    assert tool.replace_block(readme, tool.render_cli(tool.cli_help(sys.executable))) == readme, \
        f"README's trainer CLI reference differs from `vitruvian-train --help`; {FIX}"


def test_readme_pictures_exist():
    """Every image the README links exists, and every UI workflow has its screenshot there."""
    from PIL import Image

    readme = _readme()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert pictures, "the README shows no picture"
    missing = [p for p in pictures if not (REPO_ROOT / p).is_file()]
    assert not missing, (f"README shows pictures that do not exist: {missing}; workflow screenshots are written by "
                         f"the browser test (pytest tests/browser with a host)")
    for picture in pictures:
        with Image.open(REPO_ROOT / picture) as image:
            assert image.format == "PNG" and min(image.size) >= 64, (picture, image.format, image.size)
    for name in _tool("gen_node_reference").ui_workflows():
        if (REPO_ROOT / "docs" / "screenshots" / f"{name}.png").is_file():
            assert f"docs/screenshots/{name}.png" in pictures, f"README does not show the {name} workflow"
        else:  # pending screenshots are said so in the gallery, never silently absent
            assert f"### {name}" in readme and "No screenshot yet" in readme, name
    for demo in ("demo_pose_preview", "demo_loss_curve"):
        assert f"docs/screenshots/{demo}.png" in pictures


def test_readme_links_node_reference():
    assert "(docs/nodes.md)" in _readme()


@pytest.mark.comfy
def test_readme_model_folders_are_registered(comfy_host):
    """The model-folder keys the README's troubleshooting table names are folders the pack registers."""
    with urllib.request.urlopen(comfy_host.url + "/models", timeout=30) as answer:
        registered = set(json.loads(answer.read()))
    named = set(re.findall(r"`((?:vitruvian|ultralytics)_[a-z_]+|loras)`", _readme()))
    assert named, "the README names no model folder"
    assert named <= registered, f"named in README.md but not registered in ComfyUI: {sorted(named - registered)}"
