"""``tools/workflow_convert.py``: widget layouts as the 1.27 frontend builds them, and UI → API conversion
on small hand-built workflows (the shipped pairs are checked in ``test_workflow_pairs.py``)."""

from __future__ import annotations

import json

import pytest

from ..comfy_host import load_surface
from ..test_node_surface import converter

KSAMPLER_INFO = {"input": {"required": {
    "model": ["MODEL", {}], "seed": ["INT", {"default": 0, "control_after_generate": True}],
    "steps": ["INT", {"default": 20}], "cfg": ["FLOAT", {}], "sampler_name": [["euler", "ddim"], {}],
    "scheduler": [["normal"], {}], "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
    "latent_image": ["LATENT", {}], "denoise": ["FLOAT", {}]}},
    "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                 "negative", "latent_image", "denoise"]}}


def _node(node_id, kind, widgets=(), inputs=(), outputs=(), mode=0):
    return {"id": node_id, "type": kind, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": n, "type": t, "link": link, **({"widget": {"name": n}} if w else {})}
                       for n, t, link, w in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs]}


LAYOUTS = {"Src": [], "Dst": ["strength", "seed", "seed.control_after_generate"], "Sink": []}


def _workflow(nodes, links):
    return {"nodes": nodes, "links": links, "version": 0.4}


def test_widget_slots_follow_the_frontend():
    slots = converter().widget_slots
    assert slots(KSAMPLER_INFO) == ["seed", "seed.control_after_generate", "steps", "cfg", "sampler_name",
                                    "scheduler", "denoise"]
    # The legacy seed-name rule, and an explicit opt-out of it.
    assert slots({"input": {"required": {"noise_seed": ["INT", {}]}}}) == ["noise_seed",
                                                                            "noise_seed.control_after_generate"]
    assert slots({"input": {"required": {"seed": ["INT", {"control_after_generate": False}]}}}) == ["seed"]
    # Upload button after an image combo; forceInput and socket types are not widgets; optional after required.
    assert slots({"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}}) == ["image", "image.upload"]
    info = {"input": {"required": {"text": ["STRING", {"forceInput": True}], "pose": ["VITRUVIAN_POSE", {}]},
                      "optional": {"k": ["INT", {}]}}, "input_order": {"required": ["text", "pose"], "optional": ["k"]}}
    assert slots(info) == ["k"]


def test_snapshot_layouts_match_the_schema_rule():
    """The snapshot's recorded layout of KSampler is what the rule gives for its schema."""
    layouts = converter().layouts_from_surface(load_surface())
    assert layouts["KSampler"] == converter().widget_slots(KSAMPLER_INFO)
    assert layouts["LoadImage"] == ["image", "image.upload"]


def test_smoke():
    tool = converter()
    workflow = _workflow(
        [_node(1, "Src", outputs=[("out", "IMAGE", [1])]),
         _node(2, "Dst", widgets=[0.5, 42, "randomize"], inputs=[("image", "IMAGE", 1, False)])],
        [[1, 1, 0, 2, 0, "IMAGE"]])
    prompt = tool.ui_to_api(workflow, LAYOUTS, {"Dst": "Destination"})
    assert prompt == {
        "1": {"inputs": {}, "class_type": "Src", "_meta": {"title": "Src"}},
        "2": {"inputs": {"strength": 0.5, "seed": 42, "image": ["1", 0]}, "class_type": "Dst",
              "_meta": {"title": "Destination"}},
    }


def test_reroute_bypass_mute_and_notes():
    tool = converter()
    workflow = _workflow(
        [_node(1, "Src", outputs=[("out", "IMAGE", [1])]),
         _node(2, "Reroute", inputs=[("", "*", 1, False)], outputs=[("", "IMAGE", [2])]),
         _node(3, "Dst", widgets=[1.0, 1, "fixed"], inputs=[("image", "IMAGE", 2, False)],
               outputs=[("out", "IMAGE", [3])], mode=4),  # bypassed: passes its IMAGE input through
         _node(4, "Dst", widgets=[2.0, 2, "fixed"], inputs=[("image", "IMAGE", 3, False)]),
         _node(5, "Sink", mode=2),  # muted
         _node(6, "Note", widgets=["a note"])],
        [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"]])
    prompt = tool.ui_to_api(workflow, LAYOUTS)
    assert sorted(prompt) == ["1", "4"]
    assert prompt["4"]["inputs"] == {"strength": 2.0, "seed": 2, "image": ["1", 0]}


def test_primitive_node_value_comes_from_the_target():
    tool = converter()
    workflow = _workflow(
        [_node(1, "PrimitiveNode", widgets=[7, "fixed"], outputs=[("INT", "INT", [1])]),
         _node(2, "Dst", widgets=[0.5, 7, "fixed"], inputs=[("seed", "INT", 1, True)])],
        [[1, 1, 0, 2, 0, "INT"]])
    assert tool.ui_to_api(workflow, LAYOUTS)["2"]["inputs"] == {"strength": 0.5, "seed": 7}


def test_linked_widget_becomes_a_link():
    tool = converter()
    workflow = _workflow(
        [_node(1, "Src", outputs=[("out", "INT", [1])]),
         _node(2, "Dst", widgets=[0.5, 7, "fixed"], inputs=[("seed", "INT", 1, True)])],
        [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "INT"}])
    assert tool.ui_to_api(workflow, LAYOUTS)["2"]["inputs"] == {"strength": 0.5, "seed": ["1", 0]}


def test_exception():
    tool = converter()
    too_many = _workflow([_node(2, "Dst", widgets=[0.5, 7, "fixed", "extra"])], [])
    with pytest.raises(tool.ConversionError, match=r"node 2 \(Dst\): widgets_values has 4 values but the node has 3"):
        tool.ui_to_api(too_many, LAYOUTS)
    with pytest.raises(tool.ConversionError, match="unknown node type 'Nope'"):
        tool.ui_to_api(_workflow([_node(1, "Nope")], []), LAYOUTS)
    with pytest.raises(tool.ConversionError, match="subgraphs"):
        tool.ui_to_api({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}}, LAYOUTS)
    with pytest.raises(tool.ConversionError, match="API-format"):
        tool.ui_to_api({"1": {"class_type": "Src", "inputs": {}}}, LAYOUTS)
    dangling = _workflow([_node(2, "Dst", widgets=[0.5, 7, "fixed"], inputs=[("image", "IMAGE", 9, False)])], [])
    with pytest.raises(tool.ConversionError, match="link 9"):
        tool.ui_to_api(dangling, LAYOUTS)


def test_api_differences():
    tool = converter()
    expected = {"1": {"class_type": "A", "inputs": {"x": 1, "s": "a"}, "_meta": {"title": "A"}}}
    assert tool.api_differences(expected, json.loads(json.dumps(expected))) == []
    assert tool.api_differences(expected, {"1": {"class_type": "A", "inputs": {"x": 1.0, "s": "a"}}}) == []
    changed = {"1": {"class_type": "A", "inputs": {"x": 2}}, "2": {"class_type": "B", "inputs": {}}}
    text = "\n".join(tool.api_differences(expected, changed))
    assert "input 'x' is 2, expected 1" in text and "input 's' missing" in text and "node 2 (B)" in text


def test_cli_check(capsys):
    """``--check`` over the shipped pairs agrees with the pair test (exit status 0 when all match)."""
    status = converter().main(["--check"])
    out, err = capsys.readouterr()
    assert status in (0, 1) and (out + err).count(".json: ") >= 1
    assert (status == 0) == ("differs" not in out and not err)
