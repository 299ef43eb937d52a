"""The pose-graph adapter in a real ComfyUI: loading, bit-identical zero init, chaining, node errors, the workflow.

These tests start their own ComfyUI server (``pose_host``): it needs a ``vitruvian_pose_adapters`` folder
inside its private work folder, which the shared ``comfy_host`` fixture does not configure. Adapter files
are made from the tiny checkpoint with ``vitruvian.core.pose_adapter.io`` (its encoder copied; "perturbed"
ones have seeded noise in the zero convolutions, standing in for a trained adapter).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..comfy_host import REPO_ROOT, ComfyHost, HostUnavailable, WorkflowError, ensure_pack_requirements, find_host

API = REPO_ROOT / "workflows" / "pose_adapter.api.json"
UI = REPO_ROOT / "example_workflows" / "pose_adapter.json"
ADAPTERS = {"zero": 0.0, "a": 0.05, "b": 0.05}  # name → perturbation (seeds differ)

WIDGETS = {
    "CheckpointLoaderSimple": ["ckpt_name"], "CLIPTextEncode": ["text"],
    "VitruvianLoadPose": ["json_text", "file", "format", "canvas_width", "canvas_height"],
    "VitruvianLoadPoseAdapter": ["adapter_name"], "EmptyLatentImage": ["width", "height", "batch_size"],
    "VitruvianApplyPoseGraph": ["strength", "start_percent", "end_percent"],
    "KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],  # None: control_after_generate
    "VAEDecode": [], "SaveImage": ["filename_prefix"],
}


def _api() -> dict:
    return json.loads(API.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory, _tiny_checkpoint_path) -> dict[str, Path]:
    """Pose adapters for the tiny checkpoint: ``zero`` (untrained), ``a`` and ``b`` (perturbed, other seeds)."""
    from vitruvian.core.pose_adapter.io import init_pose_adapter, save_pose_adapter

    import copy

    out = tmp_path_factory.mktemp("pose_adapters")
    files = {}
    base = init_pose_adapter(_tiny_checkpoint_path, seed=0)
    for i, (name, std) in enumerate(ADAPTERS.items()):
        adapter = base if std == 0 else copy.deepcopy(base).perturb_zero_init_(std, seed=i)
        files[name] = save_pose_adapter(out / f"tiny_pose_adapter_{name}.safetensors", adapter, source="tiny")
    return files


@pytest.fixture(scope="module")
def pose_host(tmp_path_factory, _tiny_checkpoint_path, adapter_files):
    """A ComfyUI server with the pack, the tiny checkpoint and the adapters in its pose-adapter folder."""
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
        ensure_pack_requirements(python)
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    work = tmp_path_factory.mktemp("comfy_pose_adapter")
    folder = work / "models" / "vitruvian" / "pose_adapters"
    estimators = work / "models" / "vitruvian" / "pose_estimators"
    folder.mkdir(parents=True)
    estimators.mkdir(parents=True)
    for path in adapter_files.values():
        (folder / path.name).symlink_to(path)
    from ..core.pose_adapter.onnx_models import ConstantHeatmaps, export_onnx

    export_onnx(ConstantHeatmaps(), estimators / "constant_heatmaps.onnx")
    paths = work / "pose_adapter_paths.yaml"  # JSON is YAML
    paths.write_text(json.dumps({"vitruvian_pose_adapter_tests": {"vitruvian_pose_adapters": str(folder),
                                                                  "vitruvian_pose_estimators": str(estimators)}}))
    host = ComfyHost(comfy_dir, python, work, extra_args=("--extra-model-paths-config", str(paths))).start()
    host.place(_tiny_checkpoint_path, "checkpoints")
    yield host
    host.close()


# ------------------------------------------------------------------------------ the shipped workflows (no host)


def test_value_ui_workflow_matches_api():
    """Same nodes, links and widget values (in each node's widget order) in the UI and API twins."""
    api, ui = _api(), json.loads(UI.read_text(encoding="utf-8"))
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: n["class_type"] for k, n in api.items()}
    for key, node in api.items():
        values = [node["inputs"][w] for w in WIDGETS[node["class_type"]] if w is not None]
        got = [v for w, v in zip(WIDGETS[node["class_type"]], nodes[key]["widgets_values"]) if w is not None]
        assert got == values, key
    links = {(str(link[3]), link[4]): (str(link[1]), link[2]) for link in ui["links"]}
    for key, node in api.items():
        ui_inputs = [i["name"] for i in nodes[key].get("inputs", [])]
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert links[(key, ui_inputs.index(name))] == (value[0], value[1]), (key, name)
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(int(k) for k in api)


# ------------------------------------------------------------------------------ in ComfyUI


def _prompt(*, adapters=("zero",), seed=1, latent=64, canvas=512, strength=1.0, prefix="pose_adapter/img",
            connect_latent=True) -> dict:
    """The shipped workflow on the tiny checkpoint: 64×64 pixels, 2 steps, a latent saved beside the image.

    ``adapters`` are chained in order (each Apply node feeds the next); () removes the adapter entirely.
    """
    from ..tiny_checkpoint import CHECKPOINT_NAME

    p = _api()
    p["1"]["inputs"]["ckpt_name"] = CHECKPOINT_NAME
    p["4"]["inputs"].update(canvas_width=canvas, canvas_height=canvas)
    p["6"]["inputs"].update(width=latent, height=latent)
    p["8"]["inputs"].update(seed=seed, steps=2, cfg=4.0)
    p["10"]["inputs"]["filename_prefix"] = prefix
    p["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": prefix + "_latent"}}
    apply, load = p.pop("7"), p.pop("5")
    last = (["2", 0], ["3", 0])
    for i, name in enumerate(adapters):
        lid, aid = f"5{i}", f"7{i}"
        p[lid] = {"class_type": load["class_type"], "inputs": {"adapter_name": f"tiny_pose_adapter_{name}.safetensors"}}
        p[aid] = {"class_type": apply["class_type"], "inputs": {**apply["inputs"], "positive": last[0],
                                                                "negative": last[1], "pose_adapter": [lid, 0]}}
        p[aid]["inputs"]["strength"] = strength
        if not connect_latent:
            del p[aid]["inputs"]["latent"]
        last = ([aid, 0], [aid, 1])
    p["8"]["inputs"].update(positive=last[0], negative=last[1])
    return p


def _latent(host, outputs) -> "torch.Tensor":
    from safetensors.torch import load_file

    files = [f for f in host.output_files(outputs) if f.suffix == ".latent"]
    assert len(files) == 1, outputs
    return load_file(str(files[0]))["latent_tensor"]


def _run(host, prompt):
    return _latent(host, host.run_workflow(prompt, timeout=300))


@pytest.mark.comfy
@pytest.mark.slow
def test_value_zero_adapter_is_bit_identical_and_perturbed_changes(pose_host):
    base = _run(pose_host, _prompt(adapters=(), prefix="zero/base"))
    zero = _run(pose_host, _prompt(adapters=("zero",), prefix="zero/zero"))
    import torch

    assert torch.equal(base, zero)
    perturbed = _run(pose_host, _prompt(adapters=("a",), prefix="zero/a"))
    assert (perturbed - base).abs().max() > 1e-3
    weaker = _run(pose_host, _prompt(adapters=("a",), strength=0.5, prefix="zero/a_half"))
    assert 0 < (weaker - base).abs().max() < (perturbed - base).abs().max()


@pytest.mark.comfy
@pytest.mark.slow
def test_value_chained_adapters_both_contribute(pose_host):
    import torch

    base = _run(pose_host, _prompt(adapters=(), prefix="chain/base"))
    a = _run(pose_host, _prompt(adapters=("a",), prefix="chain/a"))
    b = _run(pose_host, _prompt(adapters=("b",), prefix="chain/b"))
    ab = _run(pose_host, _prompt(adapters=("a", "b"), prefix="chain/ab"))
    for single in (base, a, b):
        assert (ab - single).abs().max() > 1e-4
    # A zero adapter in the chain adds exact zeros to the other's residuals.
    assert torch.equal(_run(pose_host, _prompt(adapters=("zero", "a"), prefix="chain/zero_a")), a)
    assert torch.equal(_run(pose_host, _prompt(adapters=("a", "zero"), prefix="chain/a_zero")), a)


def _error(host, prompt) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        host.run_workflow(prompt, timeout=300)
    return caught.value


@pytest.mark.comfy
def test_exception_no_people(pose_host):
    prompt = _prompt(adapters=("zero",), prefix="err/no_people")
    # An image in which the detector found nobody (aux POSE_KEYPOINT with an empty people list).
    prompt["4"]["inputs"].update(json_text=json.dumps([{"people": [], "canvas_width": 512, "canvas_height": 512}]),
                                 format="pose_keypoint")
    error = _error(pose_host, prompt)
    assert error.node_type == "VitruvianApplyPoseGraph", str(error)
    assert "pose image 0 must have at least one person, got none" in error.message


@pytest.mark.comfy
def test_exception_canvas_does_not_match_latent(pose_host):
    prompt = _prompt(adapters=("zero",), canvas=512, prefix="err/canvas")
    prompt["6"]["inputs"].update(width=96, height=64)
    error = _error(pose_host, prompt)
    assert error.node_type == "VitruvianApplyPoseGraph", str(error)
    assert "canvas must have the latent's aspect ratio 96×64 (latent 12×8), got a 512×512 canvas" in error.message
    # Without the latent input the same check runs at sampling time and names the node in its message.
    prompt = _prompt(adapters=("zero",), canvas=512, prefix="err/canvas2", connect_latent=False)
    prompt["6"]["inputs"].update(width=96, height=64)
    error = _error(pose_host, prompt)
    assert error.node_type == "KSampler" and "VitruvianApplyPoseGraph: pose image 0 canvas" in error.message


@pytest.mark.comfy
def test_exception_not_an_adapter(pose_host, tmp_path):
    from safetensors.torch import save_file
    import torch

    bad = pose_host.workdir / "models" / "vitruvian" / "pose_adapters" / "tiny_pose_adapter_bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad))
    error = _error(pose_host, _prompt(adapters=("bad",), prefix="err/bad"))
    assert error.node_type == "VitruvianLoadPoseAdapter" and "must be a Vitruvian pose adapter" in error.message


@pytest.mark.comfy
@pytest.mark.slow
def test_value_pose_error_node(pose_host):
    """VitruvianPoseError on the sampled image reports what core computes for the estimator's keypoints."""
    from vitruvian.core.pose import load_pose
    from vitruvian.core.pose_adapter.evaluate import keypoint_error

    from ..core.pose_adapter.onnx_models import peaks_px

    prompt = _prompt(adapters=("a",), prefix="pose_error/img")
    prompt["12"] = {"class_type": "VitruvianPoseError", "inputs": {
        "image": ["9", 0], "pose": ["4", 0], "estimator": "constant_heatmaps.onnx", "keypoint_format": "coco17",
        "min_confidence": 0.3}}
    outputs = pose_host.run_workflow(prompt, timeout=300)
    target = load_pose(prompt["4"]["inputs"]["json_text"], format="mediapipe33", canvas=(512, 512)).pose
    predicted = _with_confidence(peaks_px(64, 64))
    expected = keypoint_error([[predicted]], target, image_size=(64, 64))
    assert outputs["12"]["text"] == [expected.summary()]
    assert 0 <= expected.ap < 1 and expected.detected == 1.0


def _with_confidence(xy):
    import torch

    return torch.cat([xy, torch.full((xy.shape[0], 1), 0.9)], dim=1)


@pytest.mark.comfy
@pytest.mark.slow
def test_smoke_shipped_workflow_samples(pose_host):
    """The shipped API workflow, only with the tiny checkpoint/adapter names, 64² and 2 steps, saves an image."""
    from PIL import Image

    prompt = _prompt(adapters=("a",), prefix="shipped/img")
    outputs = pose_host.run_workflow(prompt, timeout=300)
    images = [f for f in pose_host.output_files(outputs) if f.suffix == ".png"]
    assert len(images) == 1
    with Image.open(images[0]) as image:
        assert image.size == (64, 64)
