"""The pack inside a real ComfyUI: it loads, its nodes are listed, the shipped workflows run.

Host tests use the session fixture ``comfy_host`` (``tests/conftest.py``) and skip with a printed reason when
there is no ComfyUI host. Shipped API workflows are run with three test-time rewrites, so that a user-sized
workflow finishes on a 2-core CPU: every ``ckpt_name`` becomes the tiny checkpoint, KSampler steps are capped
at 2 and EmptyLatentImage at 64x64, a pose adapter becomes a zero-init one for the tiny checkpoint. File inputs (an image or a pose file named in the workflow) are copied
into the host's input folder from ``workflows/``, ``workflows/assets/``, ``example_workflows/`` or
``tests/data/``. A workflow whose file name starts with ``_`` is not run.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from ..comfy_host import (
    PACK_FOLDER, REPO_ROOT, ComfyHost, HostUnavailable, PackLoadError, WorkflowError, find_host, load_surface,
)
from ..test_node_surface import api_workflows
from ..tiny_checkpoint import txt2img_prompt

ASSET_DIRS = ("workflows", "workflows/assets", "example_workflows", "tests/data")
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".json", ".npz", ".safetensors")
#: Nodes of the UI format that exist only in the front end (never in an API prompt).
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


# ------------------------------------------------------------------------------------- the pack loads


@pytest.mark.comfy
def test_pack_imports_without_failures(comfy_host):
    assert comfy_host.pack_import_problems() == []
    times = {path: value for path, value in comfy_host.import_times().items() if path.endswith(PACK_FOLDER)}
    assert len(times) == 1, f"the pack is missing from 'Import times for custom nodes': {comfy_host.import_times()}"
    (seconds, ok), = times.values()
    assert ok, f"ComfyUI reports IMPORT FAILED for the pack\n{comfy_host.log_tail()}"


@pytest.mark.comfy
def test_pack_loads_under_any_folder_name(comfy_host):
    """The pack is a symlink called ComfyUI-Vitruvian (not "vitruvian"): relative imports only."""
    assert comfy_host.pack_path.is_symlink() and comfy_host.pack_path.name == PACK_FOLDER
    nodes = comfy_host.pack_nodes()
    assert nodes, "no node of the pack is in /object_info"
    assert {entry["python_module"] for entry in nodes.values()} == {f"custom_nodes.{PACK_FOLDER}"}


@pytest.mark.comfy
def test_snapshot_nodes_are_listed(comfy_host):
    expected = set(load_surface()["pack"])
    assert expected, "tests/node_surface.json lists no pack node"
    missing = expected - set(comfy_host.pack_nodes())
    assert not missing, f"in tests/node_surface.json but not served by ComfyUI: {sorted(missing)}"


@pytest.mark.comfy
def test_node_ids_and_categories(comfy_host):
    for node_id, entry in comfy_host.pack_nodes().items():
        assert node_id.startswith("Vitruvian"), f"node id {node_id!r} must start with 'Vitruvian'"
        assert entry["category"].startswith("Vitruvian/"), f"{node_id}: category {entry['category']!r}"


# ------------------------------------------------------------------------------------- workflows run


def _find_asset(name: str) -> Path | None:
    for folder in ASSET_DIRS:
        candidate = REPO_ROOT / folder / name
        if candidate.is_file():
            return candidate
    return None


def _zero_pose_adapter(checkpoint: Path, workdir: Path) -> Path:
    """A zero-initialised pose-graph adapter for ``checkpoint``, built once per host work dir."""
    path = Path(workdir) / "assets" / "zero_pose_adapter.safetensors"
    if not path.exists():
        from vitruvian.core.pose_adapter.io import init_pose_adapter, save_pose_adapter

        path.parent.mkdir(parents=True, exist_ok=True)
        save_pose_adapter(path, init_pose_adapter(checkpoint, seed=0), source="tiny")
    return path


def prepare_workflow(prompt: dict, host, checkpoint: Path) -> dict:
    """The test-time rewrites described in the module docstring; returns a new prompt."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        inputs = node.get("inputs", {})
        if "ckpt_name" in inputs:
            inputs["ckpt_name"] = host.place(checkpoint, "checkpoints")
        if node.get("class_type") == "VitruvianLoadPoseAdapter":
            # an untrained (zero-init) adapter made for the tiny checkpoint, under the workflow's file name
            inputs["adapter_name"] = host.place(_zero_pose_adapter(checkpoint, host.workdir),
                                                "vitruvian_pose_adapters", inputs["adapter_name"])
        if node.get("class_type") in ("KSampler", "KSamplerAdvanced") and isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], 2)
        if node.get("class_type") == "EmptyLatentImage":
            for key in ("width", "height"):
                if isinstance(inputs.get(key), int):
                    inputs[key] = min(inputs[key], 64)
        for value in inputs.values():
            if isinstance(value, str) and value.lower().endswith(FILE_SUFFIXES):
                asset = _find_asset(value)
                if asset is not None:
                    host.place(asset, "input", value)
    return prompt


@pytest.mark.comfy
@pytest.mark.slow
@pytest.mark.parametrize("path", api_workflows(), ids=lambda p: p.name)
def test_workflow_runs(comfy_host, tiny_checkpoint, path):
    from ..fuzz.cases import cheapen  # the generic CPU caps (steps, sizes, variants) the browser test uses too

    prompt = cheapen(prepare_workflow(json.loads(path.read_text(encoding="utf-8")), comfy_host, tiny_checkpoint),
                     comfy_host.object_info())
    outputs = comfy_host.run_workflow(prompt, timeout=600)
    files = comfy_host.output_files(outputs)
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"{path.name} listed output files that do not exist: {missing}"


def _ui_node_types(workflow: dict) -> set[str]:
    return {node["type"] for node in workflow.get("nodes", []) if node.get("type") not in UI_ONLY_NODES}


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "example_workflows").glob("*.json")), ids=lambda p: p.name)
def test_example_workflow_has_api_twin(path):
    """``example_workflows/X.json`` (UI format, shown in ComfyUI's template browser) has ``workflows/X.api.json``
    with the same node types, so the API twin that CI runs covers what users load."""
    twin = REPO_ROOT / "workflows" / f"{path.stem}.api.json"
    assert twin.is_file(), f"{path.name} has no API twin {twin.relative_to(REPO_ROOT)}"
    ui_types = _ui_node_types(json.loads(path.read_text(encoding="utf-8")))
    api_types = {node["class_type"] for node in json.loads(twin.read_text(encoding="utf-8")).values()}
    assert ui_types == api_types, f"only in UI: {sorted(ui_types - api_types)}; only in API: {sorted(api_types - ui_types)}"


# ------------------------------------------------------------------------------------- the harness itself


@pytest.mark.comfy
@pytest.mark.slow
def test_tiny_checkpoint_txt2img(comfy_host, tiny_checkpoint, comfy_prefix):
    """CheckpointLoaderSimple loads the tiny SD1.5 checkpoint and a 64x64, 2-step txt2img runs; two seeds
    give two different images (the sampler really ran)."""
    from PIL import Image

    images = []
    for seed in (1, 2):
        prompt = txt2img_prompt(tiny_checkpoint.name, seed=seed, prefix=comfy_prefix)
        files = comfy_host.output_files(comfy_host.run_workflow(prompt))
        assert len(files) == 1 and files[0].is_file(), files
        with Image.open(files[0]) as image:
            assert image.size == (64, 64)
            images.append(image.convert("RGB").tobytes())
    assert images[0] != images[1]


@pytest.mark.comfy
def test_validation_error_names_the_node(comfy_host):
    prompt = txt2img_prompt("no_such_checkpoint.safetensors")
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow(prompt)
    text = str(caught.value)
    assert "node 1 (CheckpointLoaderSimple)" in text and "no_such_checkpoint.safetensors" in text


@pytest.mark.comfy
def test_execution_error_carries_node_and_traceback(comfy_host, tmp_path):
    broken = tmp_path / "broken_checkpoint.safetensors"
    broken.write_bytes(b"this is not a safetensors file")
    name = comfy_host.place(broken, "checkpoints")
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow(txt2img_prompt(name))
    error = caught.value
    assert (error.node_id, error.node_type) == ("1", "CheckpointLoaderSimple")
    assert error.message and "Traceback" not in error.message
    assert "load_checkpoint" in error.traceback


@pytest.mark.comfy
@pytest.mark.slow
def test_timeout_interrupts_and_host_recovers(comfy_host, tiny_checkpoint, comfy_prefix):
    long_prompt = txt2img_prompt(tiny_checkpoint.name, seed=11, steps=1000, prefix=comfy_prefix)
    started = time.monotonic()
    with pytest.raises(WorkflowError, match="did not finish within"):
        comfy_host.run_workflow(long_prompt, timeout=2)
    outputs = comfy_host.run_workflow(txt2img_prompt(tiny_checkpoint.name, seed=12, prefix=comfy_prefix))
    assert comfy_host.output_files(outputs)
    assert time.monotonic() - started < 120, "the interrupted prompt kept the queue busy"


@pytest.mark.comfy
def test_check_pack_loaded_reports_missing_nodes(comfy_host):
    with pytest.raises(PackLoadError, match="VitruvianNoSuchNode"):
        comfy_host.check_pack_loaded(["VitruvianNoSuchNode"])


def test_log_parsing_finds_import_failures(tmp_path):
    """The lines ComfyUI 0.3.64 prints for a pack that fails, read without a server."""
    host = ComfyHost(tmp_path, tmp_path / "python", tmp_path)
    pack = f"/tmp/x/custom/{PACK_FOLDER}"
    host.log_path.write_text(
        f"Traceback (most recent call last):\nImportError: attempted relative import beyond top-level package\n"
        f"Cannot import {pack} module for custom nodes: attempted relative import beyond top-level package\n"
        f"Vitruvian: node module 'pose' failed to import; its nodes are unavailable\n"
        f"\nImport times for custom nodes:\n   0.0 seconds: /c/custom_nodes/websocket_image_save.py\n"
        f"   0.3 seconds (IMPORT FAILED): {pack}\n"
    )
    problems = host.pack_import_problems()
    assert len(problems) == 3 and problems[0].startswith("Cannot import") and "IMPORT FAILED" in problems[2]
    assert host.import_times() == {"/c/custom_nodes/websocket_image_save.py": (0.0, True), pack: (0.3, False)}
    with pytest.raises(PackLoadError, match="did not import cleanly"):
        host.check_pack_loaded([])


def test_find_host_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path))
    with pytest.raises(HostUnavailable, match="has no main.py; set COMFYUI_DIR"):
        find_host()
    (tmp_path / "main.py").write_text("")
    monkeypatch.setenv("COMFYUI_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(HostUnavailable, match="does not exist; set COMFYUI_PYTHON"):
        find_host()
