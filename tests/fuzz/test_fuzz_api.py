"""Fuzz every node of the pack through ComfyUI's HTTP API (``POST /prompt``), on a host of its own that
also loads the test-only ``tests/fuzz/fuzz_pack`` (producers of NaN/inf/empty/odd images, masks and
wrong objects). Cases come from ``tests/fuzz/cases.py``; nodes and inputs are read from the live
``/object_info``, so new nodes are fuzzed without touching this file.

Every case must end as a validation error (HTTP 400 with ``node_errors``) or an execution error whose
message is non-empty and names the node or one of its inputs; the server must keep answering, and a
known-good prompt run every :data:`CHECK_EVERY` cases must succeed. Strict cases (malformed for any
node) must not run to success. Results are printed as a table (and written to ``fuzz_report.md`` in
the test's tmp folder, or ``$VITRUVIAN_FUZZ_REPORT``, with every accepted case and what it output).

Accepted cases are reviewed too, not only errors (:func:`review`): every output goes to a ``FuzzSink`` that
describes it (NaN, empty, all-zero; ``tests/fuzz/fuzz_pack``). A case that ran to success on a suspicious
input (:data:`SUSPECT_CASES`: a 1-pixel image or mask) or produced degenerate outputs (:data:`DEGENERATE`)
while the node's own text says no ``warning:`` is "accepted (unreviewed)", a failure, until
``tests/fuzz/accepted_review.json`` gives the reason it is right (per case key, or ``node|input|*``,
``node|*|case``, ``*|*|case``). Labels that match no region returning NaN, a 1×1 image written into a
training dataset, an empty mask for an unknown label: each of those is such a case.

Known failures live in ``tests/fuzz/known_failures.json`` (case key → outcome) so the suite stays green
while node owners fix them; a new failure fails the test, a fixed one is listed as stale. Re-record with
``VITRUVIAN_UPDATE_FUZZ=1``. Each node gets the same, deterministic cases: the first
``$VITRUVIAN_FUZZ_MAX_CASES`` (default: all of them, ~2,100 in ~150 s here) taken round-robin over its inputs,
so every input is covered and a faster machine runs exactly what was recorded. ``$VITRUVIAN_FUZZ_BUDGET``
seconds (default 600) is only a
safety valve: past it no further case starts (the known-failure check then covers the cases that ran).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from ..comfy_host import HostError, HostUnavailable, start_host
from ..nodes.test_host import prepare_workflow
from ..test_node_surface import api_workflows
from .cases import TARGET, Case, node_cases, producer_graphs

FUZZ_PACK = Path(__file__).resolve().parent / "fuzz_pack"
KNOWN_FAILURES = Path(__file__).resolve().parent / "known_failures.json"
REVIEWED = Path(__file__).resolve().parent / "accepted_review.json"
#: Non-strict cases whose acceptance needs a reason whatever the node outputs.
SUSPECT_CASES = ("image_one_pixel", "mask_one_pixel")
#: Output flags (``FuzzSink``'s description) that need a reason when the node gave no warning.
DEGENERATE = ("nan", "empty", "zero")
CHECK_EVERY = 10
CASE_TIMEOUT = 30.0
#: A baseline may run a context once (the closed loop's generation and Load Job LoRA's one-step job).
BASELINE_TIMEOUT = 300.0
#: Exception types that are programming errors, never an explanation of a bad input.
INTERNAL_ERRORS = ("IndexError", "KeyError", "AttributeError", "ZeroDivisionError", "UnboundLocalError",
                   "NameError", "AssertionError", "RecursionError", "NotImplementedError")
FAILING = ("crash", "timeout", "unclear error", "accepted", "accepted (unreviewed)", "http error")


@pytest.fixture(scope="module")
def fuzz_host(tmp_path_factory):
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    workdir = tmp_path_factory.mktemp("comfy_fuzz")
    (workdir / "custom").mkdir()
    (workdir / "custom" / "vitruvian_fuzz_pack").symlink_to(FUZZ_PACK, target_is_directory=True)
    # Pose Error lists the estimators at start: a tiny ONNX heatmap model exported here (no model hub).
    from ..core.pose_adapter.onnx_models import ConstantHeatmaps, export_onnx

    estimators = workdir / "models" / "vitruvian" / "pose_estimators"
    estimators.mkdir(parents=True)
    export_onnx(ConstantHeatmaps(), estimators / "constant_heatmaps.onnx")
    paths = workdir / "fuzz_model_paths.yaml"  # JSON is YAML
    paths.write_text(json.dumps({"vitruvian_fuzz": {"vitruvian_pose_estimators": str(estimators)}}), encoding="utf-8")
    try:
        # LRU caching keeps upstream results (a loaded checkpoint) across the interleaved known-good prompts.
        host = start_host(workdir, extra_args=("--cache-lru", "256", "--extra-model-paths-config", str(paths)))
    except HostUnavailable as exc:
        print(f"\n[fuzz] skipping: {exc}")
        pytest.skip(str(exc))
    except HostError as exc:
        pytest.fail(f"the fuzz host failed to start: {exc}", pytrace=False)
    yield host
    host.close()


class Client:
    """Minimal HTTP client for one host: queue a prompt, wait, classify the outcome."""

    def __init__(self, host):
        self.host, self.client_id = host, uuid.uuid4().hex

    def _call(self, method: str, path: str, body=None, timeout: float = 60):
        data = None if body is None else json.dumps(body, allow_nan=True).encode("utf-8")
        request = urllib.request.Request(self.host.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")

    def alive(self, full: bool = False) -> bool:
        try:
            status, body = self._call("GET", "/object_info" if full else "/system_stats", timeout=120)
            return status == 200 and bool(body)
        except (OSError, ValueError):
            return False

    def drain(self, timeout: float = 180.0) -> bool:
        """Interrupt and wait until the queue is empty (an interrupted node may still finish its current
        operation); False when it is still busy after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._call("POST", "/interrupt", {})
                _, queue = self._call("GET", "/queue")
            except OSError:
                return False
            if not queue.get("queue_running") and not queue.get("queue_pending"):
                return True
            time.sleep(0.5)
        return False

    def cancel_jobs(self) -> list[str]:
        """Cancel every training job of the host that has not ended (accepted Train cases start jobs) and
        wait until they have; returns their ids."""
        _, listing = self._call("GET", "/vitruvian/jobs")
        open_jobs = [job["id"] for job in listing["jobs"] if job["state"] not in ("finished", "failed", "cancelled")]
        for job_id in open_jobs:
            self._call("POST", f"/vitruvian/jobs/{job_id}/cancel", {})
        deadline = time.monotonic() + 120
        while open_jobs and time.monotonic() < deadline:
            _, listing = self._call("GET", "/vitruvian/jobs")
            if all(job["state"] in ("finished", "failed", "cancelled") for job in listing["jobs"]
                   if job["id"] in open_jobs):
                break
            time.sleep(0.5)
        return open_jobs

    def run(self, prompt: dict, timeout: float = CASE_TIMEOUT) -> dict:
        """``{"outcome": "validation" | "error" | "success" | "timeout" | "http error" | "crash", ...}``."""
        try:
            _, queued = self._call("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", errors="replace")
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {}
            if exc.code == 400 and (answer.get("node_errors") or answer.get("error")):
                return {"outcome": "validation", "message": _validation_text(answer)}
            return {"outcome": "http error", "message": f"HTTP {exc.code}: {raw[:300]}"}
        except OSError as exc:
            return {"outcome": "crash", "message": f"{type(exc).__name__}: {exc}"}
        if queued.get("node_errors"):
            # Some output node (a sink, or an output node of the context such as Collect Pairs) was refused
            # while others were queued: ComfyUI answers 200 and runs only the valid ones.
            return {"outcome": "validation", "message": _validation_text(queued)}
        prompt_id, deadline = queued["prompt_id"], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, history = self._call("GET", f"/history/{prompt_id}")
            except OSError as exc:
                return {"outcome": "crash", "message": f"{type(exc).__name__}: {exc}"}
            status = ((history or {}).get(prompt_id) or {}).get("status") or {}
            if status.get("completed") is not None:
                if status.get("status_str") == "success":
                    return {"outcome": "success", "message": "", "outputs": history[prompt_id].get("outputs") or {}}
                for event, data in status.get("messages", []):
                    if event == "execution_error":
                        return {"outcome": "error", "node_type": data.get("node_type", ""),
                                "type": str(data.get("exception_type", "")).rsplit(".", 1)[-1],
                                "message": str(data.get("exception_message", "")).strip()}
                return {"outcome": "error", "node_type": "", "type": "", "message": ""}
            if not self.host.running:
                return {"outcome": "crash", "message": f"the server died\n{self.host.log_tail(20)}"}
            time.sleep(0.05)
        self._call("POST", "/interrupt", {})
        return {"outcome": "timeout", "message": f"no result within {timeout:.0f} s (interrupted)"}


def _validation_text(answer: dict) -> str:
    parts = [f"{(answer.get('error') or {}).get('message', '')}"]
    for node_id, node in (answer.get("node_errors") or {}).items():
        parts += [f"{node_id}: {e.get('message')}: {e.get('details')}" for e in node.get("errors", [])]
    return "; ".join(p for p in parts if p)


def judge(case: Case, result: dict, info: dict) -> str:
    """The verdict of one case: ``"validation"``, ``"clear error"``, ``"accepted (allowed)"``, or one of
    :data:`FAILING`."""
    outcome = result["outcome"]
    if outcome == "validation":
        return "validation"
    if outcome == "success":
        return "accepted" if case.strict else "accepted (allowed)"
    if outcome != "error":
        return outcome
    node_type, message = result.get("node_type", ""), result.get("message", "")
    entry = info.get(node_type, {})
    names = [node_type, entry.get("display_name", "")] + [n for s in entry.get("input", {}).values() for n in s]
    if message and result.get("type") not in INTERNAL_ERRORS and any(n and n in message for n in names):
        return "clear error"
    return "unclear error"


def output_flags(result: dict, info: dict, node: str) -> dict[str, list[str]]:
    """Output name → the flags ``FuzzSink`` found on it (an output list that reached no sink is ``empty``)."""
    names = info.get(node, {}).get("output_name") or info.get(node, {}).get("output") or []
    flags = {}
    for slot, name in enumerate(names):
        described = (result.get("outputs", {}).get(f"sink{slot}") or {}).get("fuzz")
        flags[str(name)] = sorted({f for d in described for f in d["flags"]}) if described else ["empty"]
    return flags


def _reason(key: str, reviewed: dict) -> str:
    node, name, case = key.split("|", 2)
    for pattern in (key, f"{node}|{name}|*", f"{node}|*|{case}", f"*|*|{case}"):
        if reviewed.get(pattern):
            return pattern
    return ""


def review(case: Case, result: dict, info: dict, reviewed: dict) -> tuple[str, str, str]:
    """``(verdict, why, pattern)`` of an accepted non-strict case: ``"accepted (allowed)"`` when nothing needs a
    reason; else ``"accepted (reviewed)"`` (``pattern`` = the entry of ``reviewed`` that gives it) or
    ``"accepted (unreviewed)"``; ``why`` says what needs the reason."""
    flags = output_flags(result, info, case.node)
    text = " ".join(str(t) for t in (result.get("outputs", {}).get(TARGET) or {}).get("text", []))
    why = []
    if case.name in SUSPECT_CASES:
        why.append(f"took {'an image' if case.name.startswith('image') else 'a mask'} of one pixel")
    degenerate = [f"{name} {'/'.join(f for f in fl if f in DEGENERATE)}" for name, fl in flags.items()
                  if any(f in DEGENERATE for f in fl)]
    if degenerate and "warning:" not in text.lower():
        why.append(f"output {', '.join(degenerate)} without a warning")
    if not why:
        return "accepted (allowed)", "", ""
    pattern = _reason(case.key, reviewed)
    return ("accepted (reviewed)" if pattern else "accepted (unreviewed)"), "; ".join(why), pattern


def _image_size(prompt: dict, host) -> tuple[int, int]:
    """(width, height) of the first LoadImage file of a prompt (64×64 when there is none)."""
    from PIL import Image

    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            path = host.folders["input"] / str(node["inputs"].get("image", ""))
            if path.is_file():
                with Image.open(path) as image:
                    return image.size
    return 64, 64


def _round_robin(cases: list[Case], limit: int) -> list[Case]:
    by_input: dict[str, list[Case]] = {}
    for case in cases:
        by_input.setdefault(case.input, []).append(case)
    ordered, queues = [], list(by_input.values())
    while queues and len(ordered) < limit:
        for queue in list(queues):
            if queue and len(ordered) < limit:
                ordered.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return ordered


def _accepted_table(rows: list[tuple[Case, str, dict]]) -> str:
    lines = ["| node | input | case | value | verdict | outputs (flags) | note |", "|---|---|---|---|---|---|---|"]
    for case, verdict, result in rows:
        if verdict.startswith("accepted"):
            flags = ", ".join(f"{k}: {'/'.join(v) or 'ok'}" for k, v in (result.get("flags") or {}).items())
            note = " ".join(result.get("message", "").split())[:160].replace("|", "\\|")
            lines.append(f"| {case.node} | {case.input} | {case.name} | `{case.value}` | {verdict} | {flags} | {note} |")
    return "\n".join(lines)


def _table(rows: list[tuple[Case, str, dict]]) -> str:
    lines = ["| node | input | case | value | verdict | raised by | message |", "|---|---|---|---|---|---|---|"]
    for case, verdict, result in rows:
        message = (result.get("type", "") + ": " if result.get("type") else "") + result.get("message", "")
        message = " ".join(message.split())[:160].replace("|", "\\|")
        raised = result.get("node_type", "") if result.get("node_type") != case.node else "(itself)"
        lines.append(f"| {case.node} | {case.input} | {case.name} | `{case.value}` | {verdict} | {raised} | "
                     f"{message} |")
    return "\n".join(lines)


@pytest.mark.comfy
@pytest.mark.slow
def test_fuzz_every_node(fuzz_host, tmp_path, request):
    client = Client(fuzz_host)
    info = fuzz_host.object_info()
    pack = sorted(fuzz_host.pack_nodes(info))
    assert pack and {"FuzzImage", "FuzzSink"} <= set(info), "the pack or the fuzz pack did not load"
    checkpoint = None
    raw = [json.loads(p.read_text(encoding="utf-8")) for p in api_workflows()]
    if any("ckpt_name" in n.get("inputs", {}) for w in raw for n in w.values()):
        checkpoint = request.getfixturevalue("_tiny_checkpoint_path")
    workflows = [prepare_workflow(w, fuzz_host, checkpoint) for w in raw]
    producers = producer_graphs(workflows, info)

    budget = float(os.environ.get("VITRUVIAN_FUZZ_BUDGET", "600"))
    per_node = int(os.environ.get("VITRUVIAN_FUZZ_MAX_CASES", "100000"))
    good = 0
    reviewed = json.loads(REVIEWED.read_text(encoding="utf-8"))["reviewed"] if REVIEWED.is_file() else {}
    used_reviews = set()

    def known_good() -> dict:
        nonlocal good
        good += 1
        prompt = {"g1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1,
                                                                 "color": good}},
                  "g2": {"class_type": "PreviewImage", "inputs": {"images": ["g1", 0]}}}
        return client.run(prompt)

    started, tried, rows, baselines, skipped = time.monotonic(), 0, [], {}, []
    exhausted = False
    for node in pack:
        baseline, cases = node_cases(node, info, workflows, producers, lambda p: _image_size(p, fuzz_host))
        if baseline is None:
            skipped.append(node)
            continue
        node_started = time.monotonic()
        base = client.run(baseline, timeout=BASELINE_TIMEOUT)
        if base["outcome"] == "timeout":  # a slow workflow context: fall back to defaults and small producers
            assert client.drain(), f"the queue did not empty after {node}'s baseline timed out"
            baseline, cases = node_cases(node, info, workflows, producers, lambda p: _image_size(p, fuzz_host),
                                         context=False)
            base = client.run(baseline)
        baselines[node] = base["outcome"] + (f" ({base.get('node_type')}: {base['message'][:80]})"
                                             if base["outcome"] not in ("success", "timeout") else "")
        print(f"[fuzz] {node}: baseline {baselines[node]} in {time.monotonic() - node_started:.1f} s", flush=True)
        node_tried = 0
        for case in _round_robin(cases, per_node):
            if time.monotonic() - started > budget:
                exhausted = True
                break
            node_tried += 1
            case_started = time.monotonic()
            result = client.run(case.prompt)
            result["seconds"] = time.monotonic() - case_started
            tried += 1
            verdict = judge(case, result, info)
            if verdict == "accepted (allowed)":
                verdict, why, pattern = review(case, result, info, reviewed)
                result["message"] = why + (f" (reviewed: {reviewed[pattern]})" if pattern else "")
                result["flags"] = output_flags(result, info, case.node)
                used_reviews.add(pattern)
            rows.append((case, verdict, result))
            if verdict == "crash" or not client.alive():
                pytest.fail(f"the server stopped answering after {case.key}:\n{fuzz_host.log_tail(40)}")
            if verdict == "timeout":
                assert client.drain(), f"the queue did not empty after {case.key} timed out"
            if tried % CHECK_EVERY == 0 or verdict in ("timeout", "http error"):
                check = known_good()
                assert check["outcome"] == "success", f"a valid prompt failed after {case.key}: {check}"
            if tried % (CHECK_EVERY * 5) == 0:
                assert client.alive(full=True), f"GET /object_info failed after {case.key}"
        cancelled = client.cancel_jobs()
        print(f"[fuzz] {node}: {node_tried} of {len(cases)} cases in {time.monotonic() - node_started:.1f} s"
              + (f"; cancelled the {len(cancelled)} training job(s) they started" if cancelled else ""), flush=True)
    if exhausted:
        print(f"[fuzz] WARNING: the {budget:.0f} s budget ran out after {tried} cases; later cases did not run")
    elapsed = time.monotonic() - started
    assert client.alive(full=True) and known_good()["outcome"] == "success", "the server is unwell after fuzzing"

    failures = [(c, v, r) for c, v, r in rows if v in FAILING]
    counts = {}
    for _, verdict, _ in rows:
        counts[verdict] = counts.get(verdict, 0) + 1
    report = (f"# Fuzz report\n\n{tried} cases on {len(baselines)} nodes in {elapsed:.0f} s "
              f"(≤ {per_node} per node{', BUDGET RAN OUT' if exhausted else ''}); verdicts: {json.dumps(counts)}\n\n"
              f"Baselines: {json.dumps(baselines, indent=1)}\n\nNot fuzzed (neither outputs nor an output node): "
              f"{skipped}\n\n## Failures\n\n{_table(failures)}\n\n## Accepted cases (what each output)\n\n"
              f"{_accepted_table(rows)}\n")
    for path in [tmp_path / "fuzz_report.md", *([Path(os.environ["VITRUVIAN_FUZZ_REPORT"])]
                                                if os.environ.get("VITRUVIAN_FUZZ_REPORT") else [])]:
        path.write_text(report, encoding="utf-8")
    print(f"\n[fuzz] {tried} cases, {len(failures)} failures, {elapsed:.0f} s; report {tmp_path / 'fuzz_report.md'}")
    print(_table(failures))

    stale_reviews = sorted(set(reviewed) - used_reviews - {""})
    if stale_reviews and not exhausted and per_node >= 100000:
        print(f"[fuzz] entries of {REVIEWED.name} no accepted case needs (remove them): {stale_reviews}")
    current = {case.key: verdict for case, verdict, _ in failures}
    slow = sorted(((sum(r["seconds"] for c, _, r in rows if c.node == n) / max(1, sum(c.node == n for c, _, _ in rows)), n)
                   for n in baselines), reverse=True)[:5]
    print("[fuzz] slowest nodes (mean s per case): " + ", ".join(f"{n} {t:.2f}" for t, n in slow))
    if os.environ.get("VITRUVIAN_UPDATE_FUZZ", "") not in ("", "0"):
        assert not exhausted, "not recording known failures from a run cut short by the budget"
        tmp = KNOWN_FAILURES.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"failures": dict(sorted(current.items()))}, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, KNOWN_FAILURES)
        return
    known = json.loads(KNOWN_FAILURES.read_text(encoding="utf-8"))["failures"] if KNOWN_FAILURES.is_file() else {}
    new = [(c, v, r) for c, v, r in failures if known.get(c.key) != v]
    stale = sorted(set(known) - set(current) & {c.key for c, _, _ in rows})
    if stale:
        print(f"[fuzz] fixed since tests/fuzz/known_failures.json was recorded (re-record with "
              f"VITRUVIAN_UPDATE_FUZZ=1): {stale}")
    assert not new, (f"{len(new)} new fuzz failures (fix the node, or accept with VITRUVIAN_UPDATE_FUZZ=1):\n"
                     + _table(new))


def test_judge_verdicts():
    """The verdict rules, on hand-made results (no server)."""
    info = {"VitruvianX": {"display_name": "X (Vitruvian)", "input": {"required": {"image": ["IMAGE", {}]}}}}
    strict = Case("VitruvianX", "image", "image_nan", "nan", True, {})
    soft = Case("VitruvianX", "image", "image_one_pixel", "one_pixel", False, {})
    assert judge(strict, {"outcome": "validation"}, info) == "validation"
    assert judge(strict, {"outcome": "success"}, info) == "accepted"
    assert judge(soft, {"outcome": "success"}, info) == "accepted (allowed)"
    error = {"outcome": "error", "node_type": "VitruvianX", "type": "ValueError"}
    assert judge(strict, {**error, "message": "VitruvianX: image must be finite, got NaN"}, info) == "clear error"
    assert judge(strict, {**error, "message": "index 3 is out of bounds"}, info) == "unclear error"
    assert judge(strict, {**error, "message": ""}, info) == "unclear error"
    assert judge(strict, {**error, "type": "IndexError", "message": "image index 3"}, info) == "unclear error"
    assert judge(strict, {"outcome": "timeout"}, info) == "timeout"


def test_review_of_accepted_cases():
    """What an accepted case output is reviewed (hand-made results shaped like the host's history, no server)."""
    info = {"VitruvianX": {"output_name": ["regions", "per_image"], "output": ["VITRUVIAN_REGIONS", "FLOAT"]}}
    labels = Case("VitruvianX", "labels", "huge", "'aaa…'", False, {})
    ok = {"sink0": {"fuzz": [{"kind": "regions", "flags": []}]}, "sink1": {"fuzz": [{"kind": "float", "flags": []}]}}
    assert review(labels, {"outputs": ok}, info, {}) == ("accepted (allowed)", "", "")
    nan = {**ok, "sink1": {"fuzz": [{"kind": "float", "flags": ["nan"]}, {"kind": "float", "flags": []}]}}
    verdict, why, _ = review(labels, {"outputs": nan}, info, {})
    assert verdict == "accepted (unreviewed)" and why == "output per_image nan without a warning"
    # the node said so in its text: a legitimate empty result (no face in one image)
    warned = {**nan, TARGET: {"text": ["mean per image: –\nwarning: no region with a x score in image 0 (of 1)"]}}
    assert review(labels, {"outputs": warned}, info, {})[0] == "accepted (allowed)"
    # an output list that reached no sink, and a reason in the review list
    missing = {"sink0": ok["sink0"]}
    assert review(labels, {"outputs": missing}, info, {})[1] == "output per_image empty without a warning"
    reviewed = {"VitruvianX|labels|*": "every label string is fine here"}
    assert review(labels, {"outputs": missing}, info, reviewed) == (
        "accepted (reviewed)", "output per_image empty without a warning", "VitruvianX|labels|*")
    # a one-pixel image accepted needs a reason whatever comes out
    tiny = Case("VitruvianX", "image", "image_one_pixel", "one_pixel", False, {})
    assert review(tiny, {"outputs": ok}, info, {})[:2] == ("accepted (unreviewed)", "took an image of one pixel")
    assert review(tiny, {"outputs": ok}, info, {"*|*|image_one_pixel": "any size is fine"})[0] == "accepted (reviewed)"
