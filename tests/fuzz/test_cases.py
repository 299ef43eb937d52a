"""``tests/fuzz/cases.py`` without a server: baselines, producers and the cases built for a made-up node."""

from __future__ import annotations

import json
import math

from .cases import TARGET, baseline_prompt, cheapen, node_cases, producer_graphs

INFO = {
    "VitruvianBlend": {
        "input": {"required": {"image": ["IMAGE", {}], "mask": ["MASK", {}], "pose": ["VITRUVIAN_POSE", {}],
                               "strength": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}],
                               "mode": ["COMBO", {"default": "a", "options": ["a", "b"]}],
                               "steps": ["INT", {"default": 20, "min": 1, "max": 100}]},
                  "optional": {"note": ["STRING", {"default": ""}]}},
        "input_order": {"required": ["image", "mask", "pose", "strength", "mode", "steps"], "optional": ["note"]},
        "output": ["IMAGE", "STRING"]},
    "VitruvianLoadPose": {"input": {"required": {"json_text": ["STRING", {}]}}, "output": ["VITRUVIAN_POSE", "STRING"]},
    "LoadImage": {"input": {"required": {"image": [["a.png"], {}]}}, "output": ["IMAGE", "MASK"]},
}
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    "2": {"class_type": "VitruvianLoadPose", "inputs": {"json_text": json.dumps([{"x": 0.5, "y": 0.25}])}},
}


def test_producers_and_baseline():
    producers = producer_graphs([WORKFLOW], INFO)
    assert producers["VITRUVIAN_POSE"][1:] == ("w0_2", 0) and producers["MASK"][1:] == ("w0_1", 1)
    baseline = baseline_prompt("VitruvianBlend", INFO, [WORKFLOW], producers)
    target = baseline[TARGET]["inputs"]
    assert target["image"] == ["w0_1", 0] and target["mask"] == ["w0_1", 1] and target["pose"] == ["w0_2", 0]
    assert target["strength"] == 0.5 and target["mode"] == "a" and "note" not in target
    assert target["steps"] == 2, "the baseline is cheapened"
    assert {baseline["sink0"]["inputs"]["value"][1], baseline["sink1"]["inputs"]["value"][1]} == {0, 1}


def test_cases_cover_every_input():
    producers = producer_graphs([WORKFLOW], INFO)
    baseline, cases = node_cases("VitruvianBlend", INFO, [WORKFLOW], producers, lambda prompt: (32, 16))
    assert baseline is not None
    by_key = {case.key: case for case in cases}
    assert {case.input for case in cases} >= {"image", "mask", "pose", "strength", "mode", "steps", "note"}
    nan = by_key["VitruvianBlend|strength|nan"]
    assert nan.strict and math.isnan(nan.prompt[TARGET]["inputs"]["strength"])
    assert by_key["VitruvianBlend|strength|above_max"].prompt[TARGET]["inputs"]["strength"] == 2.0
    assert not by_key["VitruvianBlend|note|empty"].strict and by_key["VitruvianBlend|mode|path_0"].strict
    image_nan = by_key["VitruvianBlend|image|image_nan"]
    assert image_nan.prompt["fuzz_src"]["inputs"] == {"kind": "nan", "width": 32, "height": 16}
    assert image_nan.prompt[TARGET]["inputs"]["image"] == ["fuzz_src", 0]
    assert "VitruvianBlend|pose|object_none" in by_key and "VitruvianBlend|image|dangling_link" in by_key
    perturbed = by_key["VitruvianBlend|pose|upstream_json_text_nan_numbers"].prompt["w0_2"]["inputs"]["json_text"]
    assert perturbed == '[{"x": NaN, "y": NaN}]'
    sizes = by_key["VitruvianBlend|image+mask|mismatched_sizes"].prompt
    assert (sizes["fuzz_size0"]["inputs"]["width"], sizes["fuzz_size1"]["inputs"]["width"]) == (32, 64)
    # Every case changes exactly one input of the target (or its upstream), never the baseline itself.
    assert baseline[TARGET]["inputs"]["strength"] == 0.5


def test_cheapen_respects_min():
    info = {"N": {"input": {"required": {"steps": ["INT", {"min": 4}], "width": ["INT", {}]}}}}
    prompt = cheapen({"1": {"class_type": "N", "inputs": {"steps": 30, "width": 512}}}, info)
    assert prompt["1"]["inputs"] == {"steps": 4, "width": 64}


def test_sockets_fed_together_and_pack_made_types():
    """Paste-like node: the image its crops were cut from and the crops themselves; a type no workflow makes
    comes from a pack node (widgets at defaults, never linked to a STRING/INT producer)."""
    info = {**INFO,
            "VitruvianCrop": {"input": {"required": {"image": ["IMAGE", {}], "pose": ["VITRUVIAN_POSE", {}]}},
                              "output": ["IMAGE", "CROPS"]},
            "VitruvianPaste": {"input": {"required": {"image": ["IMAGE", {}], "crops": ["IMAGE", {}],
                                                      "geometry": ["CROPS", {}], "segs": ["SEGS", {}]}},
                               "output": ["IMAGE"]},
            "VitruvianToSEGS": {"input": {"required": {"pose": ["VITRUVIAN_POSE", {}],
                                                       "factor": ["FLOAT", {"default": 3.0, "min": 1.0}]}},
                                "output": ["SEGS"]}}
    workflow = {**WORKFLOW, "3": {"class_type": "VitruvianCrop", "inputs": {"image": ["1", 0], "pose": ["2", 0]}}}
    producers = producer_graphs([workflow], info)
    segs_nodes, segs_id, _ = producers["SEGS"]
    assert segs_nodes[segs_id]["inputs"] == {"pose": ["w0_2", 0], "factor": 3.0}
    target = baseline_prompt("VitruvianPaste", info, [{}], producers, context=False)[TARGET]["inputs"]
    assert target["geometry"] == ["w0_3", 1] and target["image"] == ["w0_1", 0] and target["crops"] == ["w0_3", 0]
