"""The training nodes in a real ComfyUI with the tiny checkpoint: the shipped closed loop (generate 4 → score →
pairs → 3 DPO steps as a job → hot-load → sample again → compare), the LoRA in the stock loader's list without a
restart, hot-loading a newer checkpoint, cancelling (panel route and prompt interrupt) and resuming, a broken
dataset and a failing job as node errors, two jobs queued at once, the routes and the panel script.

Jobs train at resolution 64 (the test-time rewrite of the shipped workflow's Train node) so each takes well
under a minute of training on a 2-core CPU; their process start (torch import, model load) dominates.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.error
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from vitruvian.core.pairs import PairRecord, append_pairs

from ..comfy_host import REPO_ROOT, WorkflowError
from ..tiny_checkpoint import txt2img_prompt
from .test_host import prepare_workflow

API = REPO_ROOT / "workflows" / "closed_loop.api.json"
UI = REPO_ROOT / "example_workflows" / "closed_loop.json"
DETECT_API = REPO_ROOT / "workflows" / "detect_regions.api.json"


def _get(host, path: str):
    return host._request("GET", path)


def _post(host, path: str, body=None):
    return host._request("POST", path, body or {})


def _http_error(host, method: str, path: str) -> tuple[int, dict]:
    with pytest.raises(urllib.error.HTTPError) as caught:
        host._request(method, path, {} if method == "POST" else None)
    return caught.value.code, json.loads(caught.value.read() or b"{}")


def _job(host, job_id: str) -> dict:
    return _get(host, f"/vitruvian/jobs/{job_id}")


def _wait_job(host, job_id: str, until, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _job(host, job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job['state']} step {job['step']}\n{job['log']}"
        time.sleep(0.3)


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _pairs_dataset(host, n: int = 3) -> str:
    """A small pair dataset in the host's output folder; returns its name relative to the output folder."""
    name = f"vitruvian/test_pairs_{uuid.uuid4().hex[:8]}"
    g = torch.Generator().manual_seed(0)
    append_pairs(host.folders["output"] / name, [
        PairRecord("a person", torch.rand(3, 64, 64, generator=g), torch.rand(3, 64, 64, generator=g)) for _ in range(n)])
    return name


def _train(data: str, ckpt: str, **inputs) -> dict:
    values = dict(data=data, ckpt_name=ckpt, objective="dpo", steps=3, resolution=64, batch_size=1, learning_rate=1e-4,
                  rank=4, alpha=4.0, beta=5000.0, checkpoint_every=1, seed=0, name=f"t{uuid.uuid4().hex[:6]}",
                  wait=False, extra="", resume="")
    values.update(inputs)
    return {"class_type": "VitruvianTrain", "inputs": values}


@contextmanager
def _messages(host):
    """Websocket messages the server sends while the block runs: a list filled by a thread, as a browser
    tab of the host's client (``progress`` goes to the client that queued the prompt; job messages to all)."""
    websocket = pytest.importorskip("websocket")
    ws = websocket.create_connection(f"ws://{host.url.split('://', 1)[1]}/ws?clientId={host.client_id}", timeout=2)
    received, stop = [], threading.Event()

    def listen():
        while not stop.is_set():
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                return
            if isinstance(raw, str):
                received.append({**json.loads(raw), "at": time.monotonic()})

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        time.sleep(1.5)  # the job watcher sends at most once a second
        stop.set()
        thread.join(timeout=10)
        ws.close()


def _job_id(outputs: dict, node: str) -> str:
    text = outputs[node]["text"][0]
    match = re.match(r"(\d{8}-\d{6}-[0-9a-f]{6}): ", text)
    assert match, text
    return match.group(1)


# ------------------------------------------------------------------------------------------ the closed loop


#: The shipped workflow's nodes by stage of the loop (for the timing line the fixture prints).
STAGES = {"generate": ("1", "2", "3", "4", "5", "6"), "score": ("7", "8", "9"), "pairs": ("10",), "train job": ("11",),
          "hot-load": ("12",), "sample again": ("13", "14", "15", "16"), "score again": ("17", "18"),
          "compare": ("19",)}


@pytest.fixture(scope="module")
def closed_loop(comfy_host, _tiny_checkpoint_path):
    """The shipped workflow, run once: ``(outputs, job status, dataset folder, prompt)``."""
    prompt = prepare_workflow(json.loads(API.read_text(encoding="utf-8")), comfy_host, _tiny_checkpoint_path)
    dataset = f"vitruvian/test_closed_loop_{uuid.uuid4().hex[:8]}"
    prompt["10"]["inputs"]["dataset"] = dataset
    prompt["11"]["inputs"].update(resolution=64, name=f"loop{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    with _messages(comfy_host) as messages:
        outputs = comfy_host.run_workflow(prompt, timeout=900)
    seconds = time.monotonic() - started
    job = _job(comfy_host, _job_id(outputs, "11"))
    _print_stage_times(comfy_host, job, seconds, messages)
    return outputs, job, comfy_host.folders["output"] / dataset, prompt


def _print_stage_times(host, job: dict, seconds: float, messages: list) -> None:
    """Seconds per stage, from the server's ``executing`` messages (a node's time runs until the next one
    starts), and the job's own split from its files."""
    starts = [(m["at"], m["data"].get("node")) for m in messages if m["type"] == "executing"]
    per_node = {node: later - at for (at, node), (later, _) in zip(starts, starts[1:]) if node is not None}
    stages = {name: sum(per_node.get(n, 0.0) for n in nodes) for name, nodes in STAGES.items()}
    folder = host.folders["output"] / "vitruvian" / "jobs" / job["id"]
    spec, run = json.loads((folder / "job.json").read_text()), json.loads((folder / "run.json").read_text())
    progress = [json.loads(line) for line in (folder / "run" / "progress.jsonl").read_text().splitlines()]
    steps, total = sum(r["seconds"] for r in progress), run["finished"] - spec["created"]
    print(f"\n[closed loop] whole prompt {seconds:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
          + f"\n[closed loop] the job, created → LoRA published: {total:.1f} s, of which {len(progress)} steps "
          f"{steps:.1f} s (the first one encodes the latents) and {total - steps:.1f} s process start, imports, model "
          f"load and saving")


@pytest.mark.comfy
@pytest.mark.slow
def test_closed_loop_workflow(closed_loop, comfy_host):
    outputs, job, dataset, _ = closed_loop
    assert job["state"] == "finished" and job["step"] == job["steps"] == 3, job["log"]
    assert [s for s, _ in job["losses"]] == [1, 2, 3] and job["error"] == ""
    assert outputs["10"]["text"][0].startswith("2 pair(s) added")  # 4 images → best vs worst, 2nd vs 3rd
    records = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["face_boxes"]["chosen"] and r["face_boxes"]["rejected"] for r in records)
    patched = re.search(r"\((\d+) of (\d+) modules patched\)", outputs["12"]["text"][0])
    assert patched and int(patched.group(1)) == int(patched.group(2)) > 0, outputs["12"]
    files = comfy_host.output_files(outputs)
    assert sorted(f.name.split("_0")[0] for f in files) == ["closed_loop_grid", "closed_loop_scores"]
    assert all(f.is_file() and f.stat().st_size > 1000 for f in files)
    assert "lora key not loaded" not in comfy_host.log_text()
    from vitruvian.trainers.data import validate_dataset

    assert len(validate_dataset(dataset)) == 2


def test_shipped_ui_workflow_matches_its_api_twin():
    from ..test_node_surface import converter

    wc = converter()
    layouts = wc.layouts_from_surface(json.loads((REPO_ROOT / "tests" / "node_surface.json").read_text()))
    if "VitruvianTrain" not in layouts:
        pytest.skip("tests/node_surface.json has no VitruvianTrain yet (VITRUVIAN_UPDATE_SURFACE=1 adds it)")
    api = json.loads(API.read_text())
    assert wc.api_differences(api, wc.ui_to_api(json.loads(UI.read_text()), layouts)) == []


@pytest.mark.comfy
@pytest.mark.slow
def test_lora_in_the_stock_loader_list_without_restart(closed_loop, comfy_host, tiny_checkpoint, comfy_prefix):
    _, job, _, _ = closed_loop
    name = f"vitruvian/{Path(job['published']).name}"
    options = comfy_host._request("GET", "/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert name in options, options
    prompt = txt2img_prompt(tiny_checkpoint.name, seed=3, prefix=comfy_prefix)
    prompt["8"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": name,
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["5"]["inputs"]["model"] = ["8", 0]
    before = len(comfy_host.log_text())
    assert comfy_host.output_files(comfy_host.run_workflow(prompt))
    assert "lora key not loaded" not in comfy_host.log_text()[before:]


@pytest.mark.comfy
@pytest.mark.slow
def test_hot_load_reads_a_newer_checkpoint(closed_loop, comfy_host, tiny_checkpoint):
    _, job, _, _ = closed_loop
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint.name}},
        "2": {"class_type": "VitruvianLoadJobLoRA", "inputs": {"model": ["1", 0], "clip": ["1", 1], "job": job["id"],
                                                              "step": "newest", "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
    }
    first = comfy_host.run_workflow(prompt)["2"]["text"][0]
    assert Path(job["lora"]).name in first
    step1 = comfy_host.run_workflow({**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "step": "1"}}})
    assert "-step1.safetensors" in step1["2"]["text"][0]
    # a checkpoint written while the graph stays the same: the node is re-run, not served from the cache
    newer = Path(job["lora"]).with_name(Path(job["lora"]).stem + "-step99.safetensors")
    newer.write_bytes(Path(job["lora"]).read_bytes())
    try:
        again = comfy_host.run_workflow(prompt)["2"]["text"][0]
    finally:
        newer.unlink()
    assert "-step99.safetensors" in again


def _pairs_prompt(comfy_host, dataset: str) -> dict:
    """astronaut blurred + sharp → keypoint regions → face sharpness → Collect Pairs (node 8) into ``dataset``."""
    from vitruvian.core.pose import load_pose, to_pose_keypoint

    pose = json.loads(DETECT_API.read_text())["2"]["inputs"]
    frame = to_pose_keypoint(load_pose(pose["json_text"], format="mediapipe33", canvas=(512, 512)).pose, space="pixels")[0]
    for photo in ("astronaut.png", "camera.png"):
        comfy_host.place(REPO_ROOT / "tests" / "data" / photo, "input", photo)
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 6, "sigma": 3.0}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["1", 0]}},  # blurred, sharp
        "4": {"class_type": "VitruvianLoadPose", "inputs": {"json_text": json.dumps([frame, frame]), "file": "none",
              "format": "pose_keypoint", "canvas_width": 0, "canvas_height": 0}},
        "6": {"class_type": "VitruvianDetectRegions", "inputs": {"image": ["3", 0], "pose": ["4", 0], "detector": "none",
              "labels": "face,hand,person", "threshold": 0.5, "iou": 0.45, "max_per_image": 20, "keypoint_confidence": 0.3}},
        "7": {"class_type": "VitruvianScoreRegions", "inputs": {"image": ["3", 0], "regions": ["6", 0], "scorer": "sharpness",
              "labels": "face", "aggregate": "mean", "batch_size": 16, "onnx_normalization": "none", "onnx_size": 0}},
        "8": {"class_type": "VitruvianCollectPairs", "inputs": {"image": ["3", 0], "regions": ["7", 0], "score": ["7", 3],
              "prompt": "an astronaut", "dataset": dataset, "aggregate": "mean", "labels": "face", "pairing": "extremes",
              "max_pairs": 0, "min_margin": 0.0, "higher_is_better": True}},
    }


@pytest.mark.comfy
def test_collect_pairs_from_real_photos(comfy_host):
    """A blurred and a sharp copy of a real photo: the sharp one wins; a real winner is marked real (HG-DPO)."""
    dataset = f"vitruvian/test_real_{uuid.uuid4().hex[:8]}"
    prompt = _pairs_prompt(comfy_host, dataset)
    text = comfy_host.run_workflow(prompt)["8"]["text"][0]
    assert text.startswith("1 pair(s) added") and text.splitlines()[1].startswith("image 1 ("), text
    folder = comfy_host.folders["output"] / dataset
    (record,) = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert record["chosen_source"] == "generated" and record["face_boxes"]["chosen"] and record["face_boxes"]["rejected"]
    # the same batch again (another input so the node runs): nothing new is written
    prompt["8"]["inputs"]["min_margin"] = 0.0001
    assert comfy_host.run_workflow(prompt)["8"]["text"][0].startswith("0 pair(s) added, 1 duplicate(s) skipped")
    # a real photo as the winner against the worst generated image, the blurred one
    prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": "camera.png"}}
    prompt["8"]["inputs"].update(real_images=["9", 0], max_pairs=1)
    assert comfy_host.run_workflow(prompt)["8"]["text"][0].startswith("1 pair(s) added")
    records = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert records[-1]["chosen_source"] == "real" and records[-1]["chosen"] != record["chosen"]
    assert records[-1]["rejected"] == record["rejected"] and records[-1]["face_boxes"]["chosen"] == []
    from vitruvian.trainers.data import validate_dataset

    assert len(validate_dataset(folder)) == 2


def _collect_error(comfy_host, prompt) -> str:
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow(prompt)
    assert caught.value.node_type == "VitruvianCollectPairs", str(caught.value)
    return caught.value.message


@pytest.mark.comfy
def test_collect_pairs_refuses_what_would_spoil_a_dataset(comfy_host):
    """A 1×1 "real" winner, quality maps of another size, a score or labels no region carries, a dataset path the
    OS refuses: node errors naming the input, and nothing is written."""
    dataset = f"vitruvian/test_refused_{uuid.uuid4().hex[:8]}"
    prompt = _pairs_prompt(comfy_host, dataset)
    prompt["9"] = {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}}
    prompt["8"]["inputs"]["real_images"] = ["9", 0]
    assert ("VitruvianCollectPairs: input 'real_images': images of at least 64×64 pixels are expected in a training "
            "dataset (Train's smallest resolution), got 1×1") in _collect_error(comfy_host, prompt)
    del prompt["8"]["inputs"]["real_images"]
    prompt["9"]["inputs"].update(width=64, height=48, batch_size=2)
    prompt["10"] = {"class_type": "ImageToMask", "inputs": {"image": ["9", 0], "channel": "red"}}
    prompt["8"]["inputs"]["quality"] = ["10", 0]
    assert ("input 'quality': quality maps of the images' size 512×512 are expected, got 64×48"
            in _collect_error(comfy_host, prompt))
    del prompt["8"]["inputs"]["quality"]
    prompt["8"]["inputs"]["score"] = "sharpnes"
    assert ("input 'score': a score name the regions carry is expected, got an unknown score sharpnes; the regions "
            "carry sharpness, sharpness_rel") in _collect_error(comfy_host, prompt)
    prompt["8"]["inputs"].update(score=["7", 3], labels="hand,fcae")
    message = _collect_error(comfy_host, prompt)
    assert "input 'labels'" in message and "got an unknown label fcae" in message
    prompt["8"]["inputs"]["labels"] = "face"
    prompt["8"]["inputs"]["dataset"] = f"{dataset}/{'a' * 300}"
    assert ("input 'dataset': a folder path the OS accepts is expected; this one has a name of 300 bytes, longer "
            "than the 255 its file system allows" in _collect_error(comfy_host, prompt))
    afile = comfy_host.folders["output"] / "vitruvian" / f"test_file_{uuid.uuid4().hex[:8]}.txt"
    afile.parent.mkdir(parents=True, exist_ok=True)
    afile.write_text("not a folder")
    prompt["8"]["inputs"]["dataset"] = f"vitruvian/{afile.name}"
    assert f"input 'dataset': a folder is expected, but {afile} is a file" in _collect_error(comfy_host, prompt)
    assert not (comfy_host.folders["output"] / dataset).exists()


@pytest.mark.comfy
def test_collect_pairs_with_nothing_scored_adds_nothing_with_a_warning(comfy_host):
    """Scored faces asked for hands that are not in the picture: a legitimate outcome, 0 pairs and a warning."""
    dataset = f"vitruvian/test_unscored_{uuid.uuid4().hex[:8]}"
    prompt = _pairs_prompt(comfy_host, dataset)
    prompt["8"]["inputs"]["labels"] = "hand"
    text = comfy_host.run_workflow(prompt)["8"]["text"][0]
    assert text.startswith("0 pair(s) added, 0 duplicate(s) skipped; 0 in ")
    assert text.splitlines()[-1] == "warning: no image has a region labelled hand with a sharpness score"


@pytest.mark.comfy
def test_train_path_inputs_the_os_refuses_are_node_errors(comfy_host, tiny_checkpoint):
    """A 100 KB data path surfaced a raw "[Errno 36] File name too long"; a LoRA name too long for a file name
    started a job that could only fail when saving."""
    def error(**inputs) -> str:
        with pytest.raises(WorkflowError) as caught:
            node = _train("vitruvian/test_not_there", tiny_checkpoint.name)
            node["inputs"].update(inputs)
            comfy_host.run_workflow({"1": node})
        assert caught.value.node_type == "VitruvianTrain" and "Errno" not in caught.value.message
        return caught.value.message

    assert ("VitruvianTrain: input 'data': a folder path the OS accepts is expected; this one is too long for the file "
            "system (1000") in error(data="d" * 100_000)
    (comfy_host.folders["output"] / "vitruvian").mkdir(exist_ok=True)
    message = error(data="vitruvian/" + "d" * 1000)
    assert ("VitruvianTrain: input 'data': a folder path the OS accepts is expected; this one is too long for the file "
            "system (") in message and "its longest name 1000; names may hold 255 bytes" in message
    # below a folder that does not exist yet the OS would only say so when the folder is created
    missing = f"vitruvian/test_missing_{uuid.uuid4().hex[:8]}/" + "d" * 1000
    assert ("VitruvianTrain: input 'data': a folder path the OS accepts is expected; this one has a name of 1000 bytes, "
            "longer than the 255 its file system allows; the path given: 'vitruvian/test_missing_") in error(data=missing)
    assert "VitruvianTrain: input 'data': a folder path (relative to ComfyUI's output folder, without NUL characters)" \
        in error(data="vitruvian/pa\x00irs")
    assert ("VitruvianTrain: input 'name': a file name stem of at most 200 bytes is expected (the LoRA is saved as "
            "<name>-<job id>.safetensors), got 300 bytes") in error(name="n" * 300)


# ------------------------------------------------------------------------------------------ jobs


@pytest.mark.comfy
@pytest.mark.slow
def test_cancel_from_the_panel_route_then_resume(comfy_host, tiny_checkpoint):
    data = _pairs_dataset(comfy_host)
    with _messages(comfy_host) as messages:
        outputs = comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, steps=400)})
        job_id = _job_id(outputs, "1")
        assert outputs["1"]["text"][0].split(": ")[1].startswith(("starting", "waiting", "running"))  # at once
        _wait_job(comfy_host, job_id, lambda j: j["step"] >= 1)
        asked = time.monotonic()
        assert _post(comfy_host, f"/vitruvian/jobs/{job_id}/cancel")["state"] in ("cancelling", "cancelled")
        job = _wait_job(comfy_host, job_id, lambda j: j["state"] in ("cancelled", "failed", "finished"), timeout=120)
    assert job["state"] == "cancelled" and time.monotonic() - asked < 60, job
    folder = comfy_host.folders["output"] / "vitruvian" / "jobs" / job_id / "run" / "checkpoints"
    assert (folder / f"step-{job['step']}").is_dir()
    updates = [m["data"] for m in messages if m["type"] == "vitruvian.job" and m["data"]["id"] == job_id]
    assert updates[0]["state"] in ("starting", "waiting", "running"), updates[0]
    assert any(u["step"] >= 1 and u["loss"] is not None for u in updates), updates  # progress while it trained
    assert updates[-1]["state"] == "cancelled" and "log" not in updates[-1]

    with _messages(comfy_host) as messages:
        comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, steps=job["step"] + 1, resume=job_id,
                                             wait=True)}, timeout=900)
    resumed = _job(comfy_host, job_id)
    assert resumed["state"] == "finished" and resumed["attempt"] == 2 and resumed["step"] == job["step"] + 1
    assert f"resumed from {folder / ('step-' + str(job['step']))}" in resumed["log"]
    bars = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "1"]
    assert bars and bars[-1]["max"] == job["step"] + 1 and bars[-1]["value"] == job["step"] + 1, bars[-3:]


@pytest.mark.comfy
@pytest.mark.slow
def test_interrupting_a_waiting_train_cancels_its_job(comfy_host, tiny_checkpoint):
    data = _pairs_dataset(comfy_host)
    before = {j["id"] for j in _get(comfy_host, "/vitruvian/jobs")["jobs"]}
    queued = _post(comfy_host, "/prompt", {"prompt": {"1": _train(data, tiny_checkpoint.name, steps=400, wait=True)},
                                           "client_id": comfy_host.client_id})
    deadline = time.monotonic() + 600
    while not (new := [j for j in _get(comfy_host, "/vitruvian/jobs")["jobs"] if j["id"] not in before]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    job_id = new[0]["id"]
    _wait_job(comfy_host, job_id, lambda j: j["step"] >= 1)
    comfy_host.interrupt()
    job = _wait_job(comfy_host, job_id, lambda j: j["state"] in ("cancelled", "failed", "finished"), timeout=120)
    assert job["state"] == "cancelled" and job["step"] < 400
    deadline = time.monotonic() + 120
    while not (entry := (_get(comfy_host, f"/history/{queued['prompt_id']}") or {}).get(queued["prompt_id"])):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    events = [event for event, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, events


@pytest.mark.comfy
def test_broken_dataset_is_a_node_error(comfy_host, tiny_checkpoint):
    name = f"vitruvian/test_broken_{uuid.uuid4().hex[:8]}"
    folder = comfy_host.folders["output"] / name
    folder.mkdir(parents=True)
    (folder / "metadata.jsonl").write_text('{"prompt": "x", "chosen": "missing.png", "rejected": "also_missing.png"}\n')
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow({"1": _train(name, tiny_checkpoint.name, wait=True)})
    assert caught.value.node_type == "VitruvianTrain"
    assert "validate_dataset" in caught.value.message and "line 1" in caught.value.message
    assert "missing.png" in caught.value.message
    with pytest.raises(WorkflowError, match="must be inside ComfyUI's output, input or temp folder"):
        comfy_host.run_workflow({"1": _train("/etc", tiny_checkpoint.name)})


@pytest.mark.comfy
@pytest.mark.slow
def test_failed_job_is_a_node_error_with_the_log_tail(comfy_host, tmp_path):
    from safetensors.torch import save_file

    broken = tmp_path / "not_a_model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(broken))
    ckpt = comfy_host.place(broken, "checkpoints")
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow({"1": _train(_pairs_dataset(comfy_host), ckpt, wait=True)}, timeout=600)
    message = caught.value.message
    assert caught.value.node_type == "VitruvianTrain" and "did not finish: exit code 2" in message
    assert "--- log tail ---" in message and "not_a_model.safetensors" in message


@pytest.mark.comfy
@pytest.mark.slow
def test_second_job_queued_while_one_runs_does_not_clobber_it(comfy_host, tiny_checkpoint):
    data = _pairs_dataset(comfy_host)
    first = _job_id(comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, steps=4, name="clobber")}), "1")
    _wait_job(comfy_host, first, lambda j: j["state"] == "running")
    second = _job_id(comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, steps=2, name="clobber",
                                                          seed=1)}), "1")
    assert first != second
    seen = set()
    while (one := _job(comfy_host, first))["state"] != "finished":
        assert one["state"] in ("running", "starting"), one
        seen.add((_job(comfy_host, second)["state"], one["step"]))
        time.sleep(0.3)
    assert any(state == "waiting" for state, _ in seen), seen  # the second waited for the first
    lora = _sha(one["published"])
    two = _wait_job(comfy_host, second, lambda j: j["state"] in ("finished", "failed", "cancelled"))
    assert two["state"] == "finished", two["log"]
    assert one["published"] != two["published"] and Path(two["published"]).is_file()
    assert _sha(one["published"]) == lora and _job(comfy_host, first)["state"] == "finished"


# ------------------------------------------------------------------------------------------ routes, panel


@pytest.mark.comfy
def test_routes_only_reach_this_packs_jobs(comfy_host):
    listing = _get(comfy_host, "/vitruvian/jobs")
    assert Path(listing["root"]) == comfy_host.folders["output"] / "vitruvian" / "jobs"
    assert _http_error(comfy_host, "GET", "/vitruvian/jobs/not-a-job")[0] == 400
    assert _http_error(comfy_host, "GET", "/vitruvian/jobs/..%2F..%2Fetc")[0] in (400, 404)
    code, body = _http_error(comfy_host, "POST", "/vitruvian/jobs/20000101-000000-000000/cancel")
    assert code == 404 and "no job 20000101-000000-000000" in body["error"]


@pytest.mark.comfy
def test_panel_script_is_served(comfy_host):
    scripts = _get(comfy_host, "/extensions")
    path = next(p for p in scripts if p.endswith("/vitruvian_jobs.js"))
    import urllib.request

    with urllib.request.urlopen(comfy_host.url + path, timeout=30) as answer:
        text = answer.read().decode()
    assert "vitruvian.job" in text and "/vitruvian/jobs" in text


@pytest.mark.comfy
@pytest.mark.slow
def test_train_scorer_job_publishes_a_scorer_score_regions_lists(comfy_host, tiny_checkpoint):
    """A job of a non-LoRA objective: Train checks and publishes the scorer file (not a LoRA into
    models/loras), Score Regions lists it, and Load Job LoRA refuses the job with a clear error."""
    data = _pairs_dataset(comfy_host, n=2)
    name = f"s{uuid.uuid4().hex[:6]}"
    outputs = comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, objective="train-scorer", steps=2,
                                                   batch_size=2, name=name, wait=True)})
    report = outputs["1"]["text"][0]
    assert "finished, step 2/2" in report and "trains a scorer, published as" in report, report
    published = Path(report.split("published as ", 1)[1].strip())
    try:
        _check_published_scorer(comfy_host, tiny_checkpoint, published, name)
    finally:  # the shared host's scorer list is part of the node-surface snapshot: leave it as it was
        published.unlink(missing_ok=True)


def _check_published_scorer(comfy_host, tiny_checkpoint, published: Path, name: str) -> None:
    assert published.is_file() and published.name.startswith(f"{name}-") and "scorers" in published.parts
    options = comfy_host._request("GET", "/object_info/VitruvianScoreRegions")["VitruvianScoreRegions"]["input"]
    assert f"facescore:vitruvian/{published.name}" in options["required"]["scorer"][1]["options"]
    loras = comfy_host._request("GET", "/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert not any(name in x for x in loras)
    job_id = published.stem.split(f"{name}-", 1)[1]
    with pytest.raises(WorkflowError, match="job must be a LoRA training job, got: job .* trains a scorer"):
        comfy_host.run_workflow({"1": {"class_type": "VitruvianLoadJobLoRA", "inputs": {
            "model": ["2", 0], "job": job_id, "step": "newest", "strength_model": 1.0, "strength_clip": 1.0}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint.name}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}}})


def test_train_node_trains_flux_from_comfyui_model_folders(comfy_host, tiny_checkpoint, tmp_path):
    """A Flux.1 diffusion model from models/diffusion_models with its text encoders and ae from their folders:
    the job trains dpo and publishes a LoRA in diffusers' transformer.* keys; a missing VAE is a node error."""
    from safetensors import safe_open

    from ..tiny import tiny_tokenizer
    from ..tiny_flux import tiny_flux_files

    files = tiny_flux_files()
    model = comfy_host.place(files["diffusion_model"], "diffusion_models")
    clip = comfy_host.place(files["clip_l"], "text_encoders")
    t5 = comfy_host.place(files["t5xxl"], "text_encoders")
    vae = comfy_host.place(files["vae"], "vae")
    tok = Path(tiny_tokenizer(comfy_host.folders["input"] / f"tok-{uuid.uuid4().hex[:6]}").name_or_path)  # tiny CLIP vocab
    data = _pairs_dataset(comfy_host)
    outside = dict(diffusion_model=model, text_encoders=f"{clip},{t5}", vae_name=vae, extra=f"tokenizer={tmp_path}")
    with pytest.raises(WorkflowError) as caught:  # a path typed in the web UI must stay inside ComfyUI's folders
        comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, **outside)})
    assert "extra (tokenizer)" in caught.value.message and "inside ComfyUI's output, input, temp or model" in caught.value.message
    flux = dict(diffusion_model=model, text_encoders=f"{clip},{t5}", extra=f"tokenizer={tok}\ntext_tokens=16")
    with pytest.raises(WorkflowError) as caught:
        comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, **flux)})
    assert "vae_name" in caught.value.message and "ae.safetensors" in caught.value.message
    outputs = comfy_host.run_workflow({"1": _train(data, tiny_checkpoint.name, vae_name=vae, wait=True, **flux)},
                                      timeout=900)
    job = _job(comfy_host, _job_id(outputs, "1"))
    assert job["state"] == "finished" and job["step"] == 3, job
    published = Path(job["published"])
    assert published.is_file(), job
    with safe_open(str(published), framework="pt") as f:
        assert f.metadata()["vitruvian_lora_keys"] == "diffusers" and all(k.startswith("transformer.") for k in f.keys())
