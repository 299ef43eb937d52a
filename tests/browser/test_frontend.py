"""Every UI workflow in the real ComfyUI frontend, in headless Chromium: it loads with no missing-node,
validation or error dialog, the frontend makes exactly its API twin from it, it runs, and a screenshot is
taken.

Needs the host (``comfy_host``) and a browser (Debian's ``chromium``, or ``$VITRUVIAN_CHROMIUM``); each
missing one skips with a printed reason. Per workflow (``example_workflows/<name>.json``):

1. its files (images, pose JSON) and the tiny checkpoint are placed in the host as ``test_workflow_runs``
   does (``tests/nodes/test_host.py::prepare_workflow``);
2. ``app.loadGraphData`` loads it; no dialog may show, no error be logged, every node type be registered;
3. ``app.graphToPrompt`` must equal ``workflows/<name>.api.json`` (``_meta`` aside): the frontend and
   ``tools/workflow_convert.py`` agree on every widget position;
4. the test-time substitutions of the API run (tiny checkpoint, ≤ 2 KSampler steps, ≤ 64 px latents) and
   the fuzz baselines' caps on any node (``tests/fuzz/cases.py::cheapen``: ≤ 2 steps, ≤ 64 px sizes, one
   variant; batch sizes kept) are set in the page's widgets, the page must then send exactly that prompt, and Run is pressed;
5. the server's ``/history`` must report success and the page must show no error dialog;
6. the shipped widget values are put back, and a screenshot goes to ``docs/screenshots/<name>.png`` and a
   4:3 thumbnail to
   ``example_workflows/<name>.jpg`` (the template browser's thumbnail) when they are missing or
   ``VITRUVIAN_UPDATE_SCREENSHOTS=1``; otherwise into the test's tmp folder, so runs leave git clean.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from ..comfy_host import REPO_ROOT
from ..fuzz.cases import cheapen
from ..nodes.test_host import prepare_workflow
from .cdp import Browser, BrowserUnavailable
from .frontend import Frontend

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
THUMBNAIL_SIZE = (480, 360)


def ui_workflows() -> list[Path]:
    return sorted(p for p in (REPO_ROOT / "example_workflows").glob("*.json") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def browser():
    try:
        with Browser.launch() as launched:
            yield launched
    except BrowserUnavailable as exc:
        print(f"\n[browser] skipping: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def frontend(comfy_host, browser):
    page = Frontend(browser.new_page(), comfy_host.url)
    seconds = page.open()
    print(f"\n[browser] {browser.version()} opened the ComfyUI frontend in {seconds:.1f} s")
    return page


def _update_screenshots() -> bool:
    return os.environ.get("VITRUVIAN_UPDATE_SCREENSHOTS", "") not in ("", "0")


def _save(png: bytes, box: tuple[int, int, int, int], name: str, tmp_path: Path) -> list[Path]:
    """Write the screenshot and the thumbnail (the nodes' bounding ``box``, padded to 4:3 with the canvas
    colour); see the module docstring for where. Returns the paths written."""
    from PIL import Image

    shot, thumb = SCREENSHOTS / f"{name}.png", REPO_ROOT / "example_workflows" / f"{name}.jpg"
    if not _update_screenshots():
        shot = shot if not shot.exists() else tmp_path / shot.name
        thumb = thumb if not thumb.exists() else tmp_path / thumb.name
    shot.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        # 256 colours: a UI screenshot stays readable at a third of the size.
        _atomic_save(image.quantize(colors=256, method=Image.Quantize.FASTOCTREE), shot, "PNG", optimize=True)
        left, top, right, bottom = (max(0, box[0] - 16), max(0, box[1] - 16),
                                    min(image.width, box[2] + 16), min(image.height, box[3] + 16))
        graph = image.crop((left, top, right, bottom))
        ratio = THUMBNAIL_SIZE[0] / THUMBNAIL_SIZE[1]
        width, height = max(graph.width, round(graph.height * ratio)), max(graph.height, round(graph.width / ratio))
        canvas = Image.new("RGB", (width, height), image.getpixel((left, top)))
        canvas.paste(graph, ((width - graph.width) // 2, (height - graph.height) // 2))
        _atomic_save(canvas.resize(THUMBNAIL_SIZE, Image.LANCZOS), thumb, "JPEG", quality=88)
    return [shot, thumb]


def _atomic_save(image, path: Path, fmt: str, **options) -> None:
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, fmt, **options)
    os.replace(tmp, path)


def _changes(original: dict, prepared: dict) -> dict[str, dict]:
    """Widget values the test-time preparation changed, ``{node id: {input: value}}``."""
    changes = {}
    for node_id, node in prepared.items():
        for name, value in node["inputs"].items():
            if not isinstance(value, list) and original[node_id]["inputs"].get(name) != value:
                changes.setdefault(node_id, {})[name] = value
    return changes


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("path", ui_workflows(), ids=lambda p: p.stem)
def test_workflow_in_frontend(request, comfy_host, frontend, path, tmp_path):
    from ..test_node_surface import converter

    name = path.stem
    workflow = json.loads(path.read_text(encoding="utf-8"))
    twin_path = REPO_ROOT / "workflows" / f"{name}.api.json"
    assert twin_path.is_file(), f"{path.name} has no API twin {twin_path.relative_to(REPO_ROOT)}"
    twin = json.loads(twin_path.read_text(encoding="utf-8"))
    checkpoint = None
    if any("ckpt_name" in node.get("inputs", {}) for node in twin.values()):
        checkpoint = request.getfixturevalue("tiny_checkpoint")
    prepared = cheapen(prepare_workflow(twin, comfy_host, checkpoint), comfy_host.object_info())

    problems = frontend.load(workflow, name)
    assert not problems, f"{path.name} in the frontend:\n  " + "\n  ".join(problems)

    differences = converter().api_differences(twin, frontend.prompt())
    assert not differences, (f"the frontend's prompt for {path.name} differs from {twin_path.name} (regenerate it "
                             f"with `python tools/workflow_convert.py --write {name}`):\n  " + "\n  ".join(differences))

    frontend.set_widgets(_changes(twin, prepared))
    differences = converter().api_differences(prepared, frontend.prompt())
    assert not differences, "the page does not send the prepared prompt:\n  " + "\n  ".join(differences)

    frontend.mark()
    prompt_id = frontend.queue()
    outputs = frontend.wait_done(prompt_id, timeout=600)
    frontend.page.pump(1.0)  # the frontend receives the "executed" messages and draws the outputs
    problems = [f"dialog: {text}" for text in frontend.visible_dialogs()] + frontend.new_errors()
    assert not problems, f"{path.name} after running:\n  " + "\n  ".join(problems)
    missing = [str(f) for f in comfy_host.output_files(outputs) if not f.is_file()]
    assert not missing, f"{path.name} listed output files that do not exist: {missing}"

    frontend.set_widgets(_changes(prepared, twin))  # the picture shows the shipped values, with the run's outputs
    frontend.fit_view()
    written = _save(frontend.screenshot(), frontend.graph_box(), name, tmp_path)
    print(f"[browser] {name}: ran as prompt {prompt_id}; wrote {', '.join(str(p) for p in written)}")


@pytest.mark.comfy
def test_missing_node_dialog_is_detected(frontend):
    """The dialog check is not vacuous: an unknown node type shows the frontend's missing-nodes dialog."""
    workflow = {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {},
                "version": 0.4, "nodes": [{"id": 1, "type": "VitruvianNoSuchNode", "pos": [0, 0], "size": [200, 80],
                                           "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
                                           "properties": {}, "widgets_values": []}]}
    problems = frontend.load(workflow, "missing-node-check")
    frontend.close_dialogs()
    text = "\n".join(problems)
    assert "VitruvianNoSuchNode" in text and "dialog:" in text, problems


@pytest.mark.comfy
def test_validation_error_is_detected(frontend):
    """A prompt the server rejects (an input image that does not exist) fails :meth:`Frontend.queue` with the
    frontend's own error text."""
    from .frontend import FrontendError

    node = {"flags": {}, "order": 0, "mode": 0, "properties": {}, "size": [300, 300]}
    workflow = {"last_node_id": 2, "last_link_id": 1, "groups": [], "config": {}, "extra": {}, "version": 0.4,
                "links": [[1, 1, 0, 2, 0, "IMAGE"]],
                "nodes": [{**node, "id": 1, "type": "LoadImage", "pos": [0, 0], "inputs": [],
                           "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                       {"name": "MASK", "type": "MASK", "links": None}],
                           "widgets_values": ["no_such_image_vitruvian.png", "image"]},
                          {**node, "id": 2, "type": "PreviewImage", "pos": [400, 0], "order": 1,
                           "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": []}]}
    problems = frontend.load(workflow, "validation-check")
    assert all("no_such_image_vitruvian.png" in p for p in problems), problems  # only the preview's 404
    with pytest.raises(FrontendError, match="no_such_image_vitruvian.png"):
        frontend.queue()
    frontend.close_dialogs()
