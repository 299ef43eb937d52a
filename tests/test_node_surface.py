"""The node surface is a public API: node ids, input names/types and output types never silently change.

``tests/node_surface.json`` is a snapshot of ``/object_info`` for the pack's nodes (``pack``) and for the
built-in ComfyUI nodes our workflows use (``builtins``): node id → {category, inputs: {required: {name:
type}, optional: {name: type}} in widget order, outputs: [types], widgets: the frontend's widget layout
(``tools/workflow_convert.py``: the order of ``widgets_values`` in UI workflows)}; pack nodes also carry
``doc`` (display name, description, output names, per-input tooltip/default/range/options), from which
``tools/gen_node_reference.py`` writes ``docs/nodes.md``.

- With a host: the live pack must equal the snapshot. A removed/renamed node or input, a changed type, a
  reordered input (UI workflows store widget values by position) or a new required input is a breaking
  change. An appended optional input, a new output at the end or a new node is allowed once it is in the
  snapshot: re-generate it with ``VITRUVIAN_UPDATE_SURFACE=1 pytest tests/test_node_surface.py`` (refuses
  breaking changes; ``VITRUVIAN_UPDATE_SURFACE=force`` accepts them too: only for nodes never released).
- Without a host: every ``workflows/*.api.json`` uses only node ids and input names in the snapshot, gives
  every required input, links outputs to inputs of the same type, and gives widget inputs values of their
  type (INT an int, FLOAT a number, BOOLEAN a bool, STRING a string).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from .comfy_host import REPO_ROOT, SURFACE_FILE, load_surface

#: Built-in nodes always snapshotted (the usual txt2img / img2img / LoRA / ControlNet / inpaint plumbing),
#: besides every built-in a shipped workflow uses.
BASE_BUILTINS = (
    "CheckpointLoaderSimple", "CLIPTextEncode", "CLIPSetLastLayer", "EmptyLatentImage", "KSampler",
    "KSamplerAdvanced", "VAEDecode", "VAEEncode", "VAEEncodeForInpaint", "SetLatentNoiseMask", "SaveImage",
    "PreviewImage", "LoadImage", "LoadImageMask", "LoraLoader", "LoraLoaderModelOnly", "ControlNetLoader",
    "ControlNetApplyAdvanced", "ConditioningSetMask", "ConditioningCombine", "ImageScale", "ImageToMask",
    "MaskToImage", "ImageCompositeMasked", "InpaintModelConditioning", "TrainLoraNode", "SaveLoRANode",
)
PACK_PREFIX = "Vitruvian"


def _tool(name: str):
    """``tools/<name>.py`` as a module (tools/ is not a package; each is loaded once, by path)."""
    module_name = f"vitruvian_tools_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def converter():
    """``tools/workflow_convert.py`` (UI ↔ API workflows, widget layouts)."""
    return _tool("workflow_convert")


def _type_name(spec) -> str:
    """An input/output type as /object_info gives it: a V1 combo is a list of options → "COMBO"."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def describe(entry: dict, *, doc: bool = False) -> dict:
    """Snapshot form of one ``/object_info`` entry (with ``doc``: also its documentation, for pack nodes)."""
    inputs = {}
    order = entry.get("input_order") or {k: list(v) for k, v in entry.get("input", {}).items()}
    for section in ("required", "optional"):
        specs = entry.get("input", {}).get(section) or {}
        inputs[section] = {name: _type_name(specs[name]) for name in order.get(section, specs) if name in specs}
    outputs = [("COMBO" if isinstance(t, (list, tuple)) else str(t)) for t in entry.get("output", [])]
    described = {"category": entry.get("category", ""), "inputs": inputs, "outputs": outputs,
                 "widgets": converter().widget_slots(entry)}
    if doc:
        described["doc"] = _tool("gen_node_reference").documentation(entry)
    return described


def compare(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """``(breaking, additive)`` differences between two snapshots of the pack (node id → :func:`describe`)."""
    breaking, additive = [], []
    for node in sorted(set(old) - set(new)):
        breaking.append(f"{node}: node removed or renamed (node ids are never renamed)")
    for node in sorted(set(new) - set(old)):
        additive.append(f"{node}: new node")
    for node in sorted(set(old) & set(new)):
        before, after = old[node], new[node]
        if before["category"] != after["category"]:
            additive.append(f"{node}: category {before['category']!r} → {after['category']!r}")
        was = {n: (s, t) for s in ("required", "optional") for n, t in before["inputs"].get(s, {}).items()}
        now = {n: (s, t) for s in ("required", "optional") for n, t in after["inputs"].get(s, {}).items()}
        for name, (section, kind) in was.items():
            if name not in now:
                breaking.append(f"{node}: input {name!r} removed or renamed")
            elif now[name][1] != kind:
                breaking.append(f"{node}: input {name!r} type {kind} → {now[name][1]}")
            elif section == "optional" and now[name][0] == "required":
                breaking.append(f"{node}: input {name!r} became required")
            elif section != now[name][0]:
                additive.append(f"{node}: input {name!r} became optional")
        for name, (section, kind) in now.items():
            if name not in was:
                (breaking if section == "required" else additive).append(
                    f"{node}: new {section} input {name!r} ({kind})"
                    + (" (a new required input breaks saved workflows: make it optional)" if section == "required"
                       else "")
                )
        for section in ("required", "optional"):
            kept = [n for n in after["inputs"].get(section, {}) if n in before["inputs"].get(section, {})]
            if kept != [n for n in before["inputs"].get(section, {}) if n in kept]:
                breaking.append(f"{node}: {section} inputs reordered (UI workflows store widget values by "
                                f"position: append new inputs at the end)")
        if after["outputs"][: len(before["outputs"])] != before["outputs"]:
            breaking.append(f"{node}: outputs {before['outputs']} → {after['outputs']} (append new outputs only)")
        elif len(after["outputs"]) > len(before["outputs"]):
            additive.append(f"{node}: outputs appended {after['outputs'][len(before['outputs']):]}")
        if "widgets" in before and "widgets" in after and before["widgets"] != after["widgets"]:
            if after["widgets"][: len(before["widgets"])] != before["widgets"]:
                breaking.append(f"{node}: widget layout {before['widgets']} → {after['widgets']} (UI workflows "
                                f"store widget values by position; a new forceInput, control_after_generate or "
                                f"upload widget shifts them)")
            else:
                additive.append(f"{node}: widgets appended {after['widgets'][len(before['widgets']):]}")
        elif "widgets" in after and "widgets" not in before:
            additive.append(f"{node}: widget layout not yet recorded")
        if before.get("doc") != after.get("doc") and "doc" in after:
            additive.append(f"{node}: documentation changed (display name, description, tooltips, defaults, "
                            f"ranges or options; docs/nodes.md is generated from it)")
    return breaking, additive


def api_workflows() -> list[Path]:
    """Shipped API-format workflows, without the ``_``-prefixed (work in progress) ones."""
    return sorted(p for p in (REPO_ROOT / "workflows").glob("*.api.json") if not p.name.startswith("_"))


def workflow_problems(prompt: dict, known: dict) -> list[str]:
    """Structural problems of an API-format ``prompt`` against ``known`` node descriptions."""
    problems = []
    if not isinstance(prompt, dict) or not prompt:
        return ["not a non-empty JSON object of node id → {class_type, inputs}"]
    for node_id, node in prompt.items():
        kind = node.get("class_type")
        if kind not in known:
            problems.append(f"node {node_id}: unknown class_type {kind!r} (not in tests/node_surface.json; a "
                            f"built-in is added by VITRUVIAN_UPDATE_SURFACE=1 with a host)")
            continue
        spec = known[kind]["inputs"]
        allowed = {**spec.get("required", {}), **spec.get("optional", {})}
        given = node.get("inputs", {})
        for name in spec.get("required", {}):
            if name not in given:
                problems.append(f"node {node_id} ({kind}): required input {name!r} missing")
        for name, value in given.items():
            if name not in allowed:
                problems.append(f"node {node_id} ({kind}): unknown input {name!r}; known: {sorted(allowed)}")
                continue
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and str(value[0]) in prompt:
                source = prompt[str(value[0])].get("class_type")
                if source not in known:
                    continue  # reported for the source node itself
                outputs = known[source]["outputs"]
                if value[1] >= len(outputs):
                    problems.append(f"node {node_id} ({kind}): input {name!r} links output {value[1]} of node "
                                    f"{value[0]} ({source}), which has {len(outputs)} outputs")
                    continue
                have, want = outputs[value[1]], allowed[name]
                if "*" not in (have, want) and have not in want.split(",") and want not in have.split(","):
                    problems.append(f"node {node_id} ({kind}): input {name!r} wants {want}, linked to {have} "
                                    f"(output {value[1]} of node {value[0]}, {source})")
            elif not _value_fits(allowed[name], value):
                problems.append(f"node {node_id} ({kind}): input {name!r} is {allowed[name]}, got "
                                f"{type(value).__name__} {json.dumps(value)[:60]}")
    return problems


def _value_fits(kind: str, value) -> bool:
    """Whether a literal widget value has the type ComfyUI expects (other types are not checked here)."""
    if kind == "INT":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    return True


# -------------------------------------------------------------------------------------- without a host


def test_snapshot_is_well_formed():
    surface = load_surface()
    assert SURFACE_FILE.is_file(), f"{SURFACE_FILE} is missing; create it with VITRUVIAN_UPDATE_SURFACE=1 and a host"
    assert set(surface) >= {"pack", "builtins"}
    for node, entry in {**surface["pack"], **surface["builtins"]}.items():
        assert {"category", "inputs", "outputs"} <= set(entry) <= {"category", "inputs", "outputs", "widgets", "doc"}, node
        assert set(entry["inputs"]) <= {"required", "optional"}, node
        names = {n for section in entry["inputs"].values() for n in section}
        for slot in entry.get("widgets", []):
            assert slot.split(".")[0] in names, f"{node}: widget {slot!r} is not one of its inputs"
    for node, entry in surface["pack"].items():
        assert node.startswith(PACK_PREFIX), f"pack node id {node!r} must start with {PACK_PREFIX!r}"
        assert entry["category"].startswith(f"{PACK_PREFIX}/"), f"{node}: category {entry['category']!r}"


@pytest.mark.parametrize("path", api_workflows(), ids=lambda p: p.name)
def test_workflow_uses_known_nodes(path):
    surface = load_surface()
    prompt = json.loads(path.read_text(encoding="utf-8"))
    problems = workflow_problems(prompt, {**surface["builtins"], **surface["pack"]})
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_compare_classifies_changes():
    old = {"VitruvianA": {"category": "Vitruvian/x", "outputs": ["IMAGE"],
                          "inputs": {"required": {"image": "IMAGE", "n": "INT"}, "optional": {}}}}
    same = json.loads(json.dumps(old))
    assert compare(old, same) == ([], [])
    appended = json.loads(json.dumps(old))
    appended["VitruvianA"]["inputs"]["optional"]["strength"] = "FLOAT"
    assert compare(old, appended) == ([], ["VitruvianA: new optional input 'strength' (FLOAT)"])
    retyped = json.loads(json.dumps(old))
    retyped["VitruvianA"]["inputs"]["required"]["n"] = "FLOAT"
    assert compare(old, retyped)[0] == ["VitruvianA: input 'n' type INT → FLOAT"]
    renamed = json.loads(json.dumps(old))
    renamed["VitruvianA"]["inputs"]["required"] = {"image": "IMAGE", "count": "INT"}
    breaking = compare(old, renamed)[0]
    assert "VitruvianA: input 'n' removed or renamed" in breaking and any("'count'" in b for b in breaking)
    reordered = json.loads(json.dumps(old))
    reordered["VitruvianA"]["inputs"]["required"] = {"n": "INT", "image": "IMAGE"}
    assert any("reordered" in b for b in compare(old, reordered)[0])
    assert compare(old, {})[0] == ["VitruvianA: node removed or renamed (node ids are never renamed)"]


def test_workflow_problems_catches_mistakes():
    known = {
        "Src": {"category": "", "inputs": {"required": {}}, "outputs": ["IMAGE"]},
        "Dst": {"category": "", "inputs": {"required": {"image": "IMAGE"}, "optional": {"k": "INT"}},
                "outputs": []},
    }
    good = {"1": {"class_type": "Src", "inputs": {}}, "2": {"class_type": "Dst", "inputs": {"image": ["1", 0]}}}
    assert workflow_problems(good, known) == []
    bad = {"1": {"class_type": "Src", "inputs": {}},
           "2": {"class_type": "Dst", "inputs": {"image": ["1", 1], "typo": 3}},
           "3": {"class_type": "Nope", "inputs": {}},
           "4": {"class_type": "Dst", "inputs": {}}}
    problems = "\n".join(workflow_problems(bad, known))
    for expected in ("which has 1 outputs", "unknown input 'typo'", "unknown class_type 'Nope'",
                     "node 4 (Dst): required input 'image' missing"):
        assert expected in problems


def test_compare_widget_layout_and_doc():
    old = {"VitruvianA": {"category": "Vitruvian/x", "outputs": [], "widgets": ["seed", "seed.control_after_generate"],
                          "inputs": {"required": {"seed": "INT"}, "optional": {}}, "doc": {"display_name": "A"}}}
    shifted = json.loads(json.dumps(old))
    shifted["VitruvianA"]["widgets"] = ["seed"]  # control_after_generate disabled: later values shift
    assert any("widget layout" in b for b in compare(old, shifted)[0])
    appended = json.loads(json.dumps(old))
    appended["VitruvianA"]["widgets"].append("k")
    appended["VitruvianA"]["inputs"]["optional"]["k"] = "INT"
    assert compare(old, appended)[0] == [] and "VitruvianA: widgets appended ['k']" in compare(old, appended)[1]
    retitled = json.loads(json.dumps(old))
    retitled["VitruvianA"]["doc"]["display_name"] = "B"
    assert compare(old, retitled)[0] == [] and any("documentation changed" in a for a in compare(old, retitled)[1])


def test_workflow_problems_checks_widget_value_types():
    known = {"N": {"category": "", "outputs": [], "inputs": {"required": {"n": "INT", "x": "FLOAT", "b": "BOOLEAN",
                                                                          "s": "STRING"}}}}
    good = {"1": {"class_type": "N", "inputs": {"n": 3, "x": 1, "b": True, "s": ""}}}
    assert workflow_problems(good, known) == []
    bad = {"1": {"class_type": "N", "inputs": {"n": 3.5, "x": "1", "b": 1, "s": 5}}}
    assert len(workflow_problems(bad, known)) == 4


# -------------------------------------------------------------------------------------- with the host


@pytest.mark.comfy
def test_pack_surface_matches_snapshot(comfy_host):
    info = comfy_host.object_info()
    live = {node: describe(entry, doc=True) for node, entry in sorted(comfy_host.pack_nodes(info).items())}
    surface = load_surface()
    breaking, additive = compare(surface["pack"], live)
    mode = os.environ.get("VITRUVIAN_UPDATE_SURFACE", "")
    if mode not in ("", "0"):
        if breaking and mode != "force":
            pytest.fail("refusing to snapshot breaking changes (VITRUVIAN_UPDATE_SURFACE=force accepts them):\n  "
                        + "\n  ".join(breaking))
        used = {node["class_type"] for path in api_workflows()
                for node in json.loads(path.read_text(encoding="utf-8")).values()}
        names = sorted((set(BASE_BUILTINS) | used | set(surface["builtins"])) - set(live))
        builtins = {name: describe(info[name]) for name in names if name in info}
        _write_surface({"comfyui": _comfyui_version(comfy_host), "pack": live, "builtins": builtins})
        _write_node_reference()
        return
    text = ""
    if breaking:
        text += "breaking changes to the node surface:\n  " + "\n  ".join(breaking) + "\n"
    if additive:
        text += ("changes not yet in tests/node_surface.json (accept them with VITRUVIAN_UPDATE_SURFACE=1 pytest "
                 "tests/test_node_surface.py):\n  " + "\n  ".join(additive))
    if text:
        pytest.fail(text, pytrace=False)


@pytest.mark.comfy
def test_builtins_in_snapshot_exist_in_host(comfy_host):
    """The built-ins our workflows rely on still exist in this host with the inputs we use."""
    info = comfy_host.object_info()
    problems = []
    for name, entry in load_surface()["builtins"].items():
        if name not in info:
            problems.append(f"{name}: not in this ComfyUI")
            continue
        described = describe(info[name])
        live = described["inputs"]
        live_names = {**live.get("required", {}), **live.get("optional", {})}
        if "widgets" in entry and entry["widgets"] != described["widgets"]:
            problems.append(f"{name}: widget layout {described['widgets']} in this ComfyUI, {entry['widgets']} in "
                            f"the snapshot (UI workflows store widget values by position)")
        for section in ("required", "optional"):
            for input_name in entry["inputs"].get(section, {}):
                if input_name not in live_names:
                    problems.append(f"{name}: input {input_name!r} not in this ComfyUI")
    assert not problems, "\n".join(problems)


def _comfyui_version(host) -> str:
    try:
        text = (host.comfy_dir / "comfyui_version.py").read_text(encoding="utf-8")
        return text.split("=", 1)[1].strip().strip("\"'")
    except (OSError, IndexError):
        return "unknown"


def _write_node_reference() -> None:
    """Regenerate ``docs/nodes.md`` from the new snapshot (``tools/gen_node_reference.py``)."""
    _tool("gen_node_reference").main(["--write"])


def _write_surface(surface: dict) -> None:
    tmp = SURFACE_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(surface, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, SURFACE_FILE)
