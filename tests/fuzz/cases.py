"""Fuzz cases for every node of the pack, built from the live ``/object_info`` and the shipped workflows.
No pytest and no server calls in here: :func:`node_cases` returns prompts, the test runs and judges them.

For a node N:

- **baseline**: N fed as in the shipped API workflow that uses it with the fewest upstream nodes (their
  widget values included), when that context has at most :data:`MAX_CONTEXT_NODES` nodes (a bigger one,
  such as the whole closed loop with its before/after sampling, would make every case slow; upstream
  results are cached by the host, so a context costs its run time once); else N with widget defaults
  (and :data:`WIDGET_HINTS`) and, for each required socket, a producer: pack-typed sockets first, each
  from the smallest shipped-workflow subgraph making the type (or the one :data:`PRODUCER_HINTS` names,
  or a pack node making the type from producible inputs, e.g. SEGS from Regions to SEGS), then image-like
  sockets from what those producers were fed (Paste Regions gets the image its crops were cut from) or
  make (the crops themselves), else from the smallest producer (a fuzz-pack / built-in node, or a
  ``FuzzValue`` None when nothing makes the type). Every output of N goes to a ``FuzzSink``; INT widgets
  are capped by :func:`cheapen`, then :data:`FUZZ_SETTINGS` set; :data:`TARGET_SETTINGS` keeps a fuzzed Train
  from waiting for its job.
Each case has a ``strict`` flag: strict cases are malformed for any node, so running to success is a
failure; the others (an empty string, a 1-pixel image, …) may be legitimately accepted, and only a crash,
a hang or an unclear error counts against them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field

__all__ = ["Case", "producer_graphs", "baseline_prompt", "cheapen", "node_cases", "TARGET", "IMAGE_LIKE"]

TARGET = "target"
#: Up to 12 nodes: Collect Pairs, Train and Load Job LoRA run in the closed loop's generate → score → pairs
#: (→ a one-step job) context; Compare's (the whole loop, 19 nodes, sampling twice) is too slow.
MAX_CONTEXT_NODES = 12
IMAGE_LIKE = ("IMAGE", "MASK")
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
FALLBACK_PRODUCERS = {
    "IMAGE": {"class_type": "FuzzImage", "inputs": {"kind": "valid", "width": 64, "height": 64}},
    "MASK": {"class_type": "FuzzMask", "inputs": {"kind": "valid", "width": 64, "height": 64}},
    "LATENT": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
}
#: What feeds a required socket no shipped workflow (or fallback) produces: the node gets None there.
PLACEHOLDER = {"class_type": "FuzzValue", "inputs": {"kind": "none"}}
IMAGE_KINDS = {"nan": True, "inf": True, "neg_inf": True, "empty_batch": True, "channels_first": True,
               "one_pixel": False, "one_channel": False, "four_channel": False, "out_of_range": False,
               "float64": False, "huge": False, "batch_of_two": False}
MASK_KINDS = {"nan": True, "inf": True, "empty_batch": True, "one_pixel": False, "two_d": False, "four_d": False,
              "out_of_range": False}
#: Widget caps for test runs on a CPU, on any node (the harness's ``prepare_workflow`` caps only KSampler
#: steps and EmptyLatentImage): sampling runs 2 steps on 64-pixel crops, since a shipped workflow's 20 steps
#: at 512 px take minutes. Batch sizes are kept (a batch must match its poses). Used by the fuzz baselines
#: and the browser test.
CHEAP_CAPS = {"steps": 2, "target_size": 64, "max_size": 64, "width": 64, "height": 64, "variants": 1, "resolution": 64}
#: Fuzz-only settings of any node of a baseline (upstream included), applied after :data:`CHEAP_CAPS`: a training
#: job of one step; Crop Regions' crops large enough for the 512-pixel photos' faces (~150 px; at the capped 64
#: every region is "too large" and skipped, so Crop and Paste Regions cropped and pasted nothing). Refine Regions
#: keeps the cap: it samples, and its fuzzed maxima (10,000 steps, 64 variants, 8,192-pixel crops) would each
#: take minutes; it refines nothing and says so with a warning.
FUZZ_SETTINGS = {"VitruvianTrain": {"steps": 1, "checkpoint_every": 1},
                 "VitruvianCropRegions": {"target_size": 192, "max_size": 192}}
#: Settings of the fuzzed node itself: Train returns its job id at once (every accepted case starts a job;
#: the test cancels them), while an upstream Train (Load Job LoRA's) waits so its LoRA exists.
TARGET_SETTINGS = {"VitruvianTrain": {"wait": False}}
#: Inputs not fuzzed: ComfyUI turns any value into a bool, and True makes Train wait by design for its job
#: (queued behind every job the other cases started), which is a wait, not a hang.
BLOCKING_WIDGETS = {("VitruvianTrain", "wait")}
#: Sockets of nodes no shipped workflow wires, where the smallest producer of the type is not the one that
#: fits: (node, socket) → the producing class.
PRODUCER_HINTS = {("VitruvianRankImages", "regions"): "VitruvianScoreRegions"}
#: Widget values of such nodes where the default does not fit the producers (the score they carry).
WIDGET_HINTS = {"VitruvianRankImages": {"score": "sharpness"}}
VALUE_KINDS = ("none", "int", "string", "empty_list", "empty_dict", "list_of_none", "nan_tensor", "float_nan")
BROKEN_JSON = ("{", "[1, 2", '{"x": NaN, "y": Infinity}', "null", "[]", "\u0000")
PATHS = ("../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini")


@dataclass
class Case:
    """One prompt: ``node`` (class), ``input`` (or ``"-"``), ``name`` (what was done), ``value`` (shown in the
    table), ``strict`` (success is a failure), ``prompt`` (API format)."""

    node: str
    input: str
    name: str
    value: str
    strict: bool
    prompt: dict = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.node}|{self.input}|{self.name}"


def _outputs(info: dict, kind: str) -> list[str]:
    return [("COMBO" if isinstance(t, list) else str(t)) for t in info.get(kind, {}).get("output", [])]


def _spec(entry: dict, name: str) -> tuple[str, dict, bool]:
    for section in ("required", "optional"):
        spec = (entry.get("input", {}).get(section) or {}).get(name)
        if spec is not None:
            kind = "COMBO" if isinstance(spec[0], list) else str(spec[0])
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return kind, options, section == "required"
    raise KeyError(name)


def _inputs(entry: dict) -> list[str]:
    order = entry.get("input_order") or {s: list(v) for s, v in entry.get("input", {}).items()}
    return [n for s in ("required", "optional") for n in order.get(s, []) if n in (entry["input"].get(s) or {})]


def _subgraph(prompt: dict, node_id: str, prefix: str) -> tuple[dict, str]:
    """Node ``node_id`` of an API prompt with all its ancestors, ids prefixed; returns (nodes, new id)."""
    keep, stack = set(), [node_id]
    while stack:
        current = stack.pop()
        if current in keep:
            continue
        keep.add(current)
        stack += [str(v[0]) for v in prompt[current]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    nodes = {}
    for old in keep:
        node = copy.deepcopy(prompt[old])
        node.pop("_meta", None)
        node["inputs"] = {k: ([f"{prefix}{v[0]}", v[1]] if isinstance(v, list) and len(v) == 2 else v)
                          for k, v in node["inputs"].items()}
        nodes[f"{prefix}{old}"] = node
    return nodes, f"{prefix}{node_id}"


def producer_graphs(workflows: list[dict], info: dict) -> dict[str, tuple[dict, str, int]]:
    """Socket type → (nodes, node id, output slot) of the smallest shipped-workflow subgraph producing it
    (at most :data:`MAX_CONTEXT_NODES` nodes); also under ``"TYPE@Class"`` for each producing class and
    ``"TYPE#wN"`` for each workflow (index N). A type
    no workflow makes comes from a pack node whose required sockets are all made (its widgets at defaults)."""
    best: dict[str, tuple[dict, str, int]] = {}
    for index, prompt in enumerate(workflows):
        for node_id, node in prompt.items():
            for slot, kind in enumerate(_outputs(info, node["class_type"])):
                nodes, new_id = _subgraph(prompt, node_id, f"w{index}_")
                for key in (kind, f"{kind}@{node['class_type']}", f"{kind}#w{index}"):
                    if len(nodes) <= MAX_CONTEXT_NODES and (key not in best or len(nodes) < len(best[key][0])):
                        best[key] = (nodes, new_id, slot)
    for name in sorted(n for n in info if n.startswith("Vitruvian")):
        for slot, kind in enumerate(_outputs(info, name)):
            if kind in best or kind in FALLBACK_PRODUCERS:
                continue
            sockets = [(n, _spec(info[name], n)[0]) for n in _inputs(info[name]) if _spec(info[name], n)[2]]
            if not all(k in best or k in WIDGETS for _, k in sockets):
                continue
            nodes, inputs = {}, {}
            for socket, k in sockets:
                if k in WIDGETS:
                    inputs[socket] = _default(k, _spec(info[name], socket)[1])
                else:
                    upstream, upstream_id, upstream_slot = best[k]
                    nodes.update(copy.deepcopy(upstream))
                    inputs[socket] = [upstream_id, upstream_slot]
            nodes[f"s_{name}"] = {"class_type": name, "inputs": inputs}
            best[kind] = best[f"{kind}@{name}"] = (nodes, f"s_{name}", slot)
    return best


def cheapen(prompt: dict, info: dict) -> dict:
    """Apply :data:`CHEAP_CAPS` to the INT widgets of every node (kept within the widget's min)."""
    for node in prompt.values():
        entry = info.get(node["class_type"])
        if entry is None:
            continue
        for name, cap in CHEAP_CAPS.items():
            value = node["inputs"].get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                try:
                    kind, options, _ = _spec(entry, name)
                except KeyError:
                    continue
                if kind == "INT":
                    node["inputs"][name] = max(cap, options.get("min", cap))
    return prompt


def _default(kind: str, options: dict):
    if "default" in options:
        return options["default"]
    if kind == "COMBO":
        return (options.get("options") or [""])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def baseline_prompt(node: str, info: dict, workflows: list[dict], producers: dict, *,
                    context: bool = True) -> dict | None:
    """The valid-as-possible prompt around ``node`` (module docstring; ``context=False`` skips the
    workflow context); None when the node has neither outputs nor is an output node."""
    entry = info[node]
    prompt = {}
    contexts = sorted((len(nodes), index, new_id, nodes)
                      for index, workflow in enumerate(workflows)
                      for node_id, n in workflow.items() if n["class_type"] == node
                      for nodes, new_id in [_subgraph(workflow, node_id, f"w{index}_")])
    if context and contexts and contexts[0][0] <= MAX_CONTEXT_NODES:
        _, _, new_id, nodes = contexts[0]
        prompt.update(copy.deepcopy(nodes))
        prompt[TARGET] = prompt.pop(new_id)
    else:
        inputs, sockets = {}, []
        for name in _inputs(entry):
            kind, options, required = _spec(entry, name)
            if kind in WIDGETS:
                if required:
                    inputs[name] = _default(kind, options)
            elif required:
                sockets.append((name, kind))
        inputs.update(WIDGET_HINTS.get(node, {}))
        # Pack types first (stable order), so image-like sockets can take what those producers were fed.
        for name, kind in sorted(sockets, key=lambda s: s[1] in FALLBACK_PRODUCERS):
            hint = PRODUCER_HINTS.get((node, name))
            sibling = _sibling(name, kind, inputs, prompt, info, producers) if kind in FALLBACK_PRODUCERS else None
            inputs[name] = sibling or _producer(f"{kind}@{hint}" if hint else kind, producers, prompt, f"p_{name}_")
        prompt[TARGET] = {"class_type": node, "inputs": inputs}
    for slot, _ in enumerate(_outputs(info, node)):
        prompt[f"sink{slot}"] = {"class_type": "FuzzSink", "inputs": {"value": [TARGET, slot]}}
    if not _outputs(info, node) and not entry.get("output_node"):
        return None
    cheapen(prompt, info)
    for node_id, n in prompt.items():
        n["inputs"].update(FUZZ_SETTINGS.get(n["class_type"], {}))
        if node_id == TARGET:
            n["inputs"].update(TARGET_SETTINGS.get(n["class_type"], {}))
    return prompt


def _producer(kind: str, producers: dict, prompt: dict, prefix: str) -> list:
    # Shipped-workflow producers first: their values belong together (regions found on the image they
    # came with); shared ancestors get the same ids, so they are added once.
    if kind in producers:
        nodes, node_id, slot = producers[kind]
        prompt.update(copy.deepcopy(nodes))
        return [node_id, slot]
    kind = kind.split("@", 1)[0]
    prompt[f"{prefix}0"] = copy.deepcopy(FALLBACK_PRODUCERS.get(kind, PLACEHOLDER))
    return [f"{prefix}0", 0]


def _sibling(name: str, kind: str, inputs: dict, prompt: dict, info: dict, producers: dict) -> list | None:
    """For an image-like socket, what the producers already feeding the node were fed under the same
    input name (the image the crops were cut from), else an output of theirs of that type (the crops),
    else the smallest producer of the type in their workflow; None when there is none."""
    direct = [v[0] for v in inputs.values() if isinstance(v, list) and len(v) == 2 and v[0] in prompt]
    for node_id in direct:
        link = prompt[node_id]["inputs"].get(name)
        if isinstance(link, list) and len(link) == 2 and link[0] in prompt:
            outputs = _outputs(info, prompt[link[0]]["class_type"])
            if link[1] < len(outputs) and outputs[link[1]] == kind:
                return list(link)
    for node_id in direct:
        outputs = _outputs(info, prompt[node_id]["class_type"])
        if kind in outputs:
            return [node_id, outputs.index(kind)]
    for node_id in direct:
        # the same workflow's producer: a batch of 4 images for the closed loop's 4-frame pose
        match = re.match(r"w(\d+)_", node_id)
        if match and f"{kind}#w{match.group(1)}" in producers:
            nodes, producer_id, slot = producers[f"{kind}#w{match.group(1)}"]
            prompt.update(copy.deepcopy(nodes))
            return [producer_id, slot]
    return None


def _widget_values(kind: str, options: dict) -> list[tuple[str, object, bool]]:
    """(case name, value, strict) for a widget of ``kind``."""
    low, high = options.get("min"), options.get("max")
    # ComfyUI converts a literal with str() / bool(), so None and {} are strings or booleans there.
    typed = kind in ("INT", "FLOAT", "COMBO")
    cases = [("none", None, typed), ("list", [], True), ("dict", {"a": 1}, typed)]
    if kind == "INT":
        cases += [("string", "abc", True), ("nan", math.nan, True), ("inf", math.inf, True), ("float", 1.5, False),
                  ("numeric_string", "7", False), ("bool", True, False)]
        if isinstance(low, (int, float)) and low > -2**62:
            cases.append(("below_min", int(low) - 1, True))
        if isinstance(high, (int, float)) and high < 2**62:
            cases += [("above_max", int(high) + 1, True), ("max", int(high), False)]
        cases.append(("int64_overflow", 2**70, True))
    elif kind == "FLOAT":
        cases += [("string", "abc", True), ("nan", math.nan, True), ("inf", math.inf, True),
                  ("neg_inf", -math.inf, True), ("numeric_string", "0.5", False)]
        if isinstance(low, (int, float)) and math.isfinite(low):
            cases += [("below_min", low - 1.0, True), ("min", low, False)]
        if isinstance(high, (int, float)) and math.isfinite(high):
            cases += [("above_max", high + 1.0, True), ("max", high, False)]
    elif kind == "STRING":
        cases += [("empty", "", False), ("number", 12345, False), ("huge", "a" * 1_000_000, False)]
        cases += [(f"json_{i}", text, False) for i, text in enumerate(BROKEN_JSON)]
        cases += [(f"path_{i}", path, False) for i, path in enumerate(PATHS)]
    elif kind == "BOOLEAN":
        cases += [("string", "yes", False), ("int", 2, False)]
    elif kind == "COMBO":
        cases += [("not_an_option", "no_such_option_vitruvian", True), ("empty", "", True), ("int", 0, True)]
        cases += [(f"path_{i}", path, True) for i, path in enumerate(PATHS)]
    return cases


def _perturbed_json(text: str) -> list[tuple[str, str]]:
    """Variants of a JSON string with every number NaN, huge, or the JSON emptied / truncated."""
    if not isinstance(text, str) or not text.strip()[:1] in ("[", "{"):
        return []
    try:
        json.loads(text)
    except ValueError:
        return []
    number = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
    return [("nan_numbers", number.sub("NaN", text)), ("huge_numbers", number.sub("1e308", text)),
            ("empty", "[]" if text.strip().startswith("[") else "{}"), ("truncated", text[: len(text) // 2])]


def node_cases(node: str, info: dict, workflows: list[dict], producers: dict,
               image_size=lambda prompt: (64, 64), *, context: bool = True) -> tuple[dict | None, list[Case]]:
    """(baseline prompt, cases) for one node; no cases when no baseline can be built. ``image_size(prompt)``
    gives the (width, height) of the baseline's images, so fuzzed images match the regions and poses that
    came with them (a size mismatch would be reported before the defect under test is reached)."""
    baseline = baseline_prompt(node, info, workflows, producers, context=context)
    if baseline is None:
        return None, []
    entry, cases = info[node], []
    width, height = image_size(baseline)

    def case(input_name, name, value, strict, prompt):
        shown = json.dumps(value, allow_nan=True) if not isinstance(value, str) else repr(value)
        cases.append(Case(node, input_name, name, shown[:40] + ("…" if len(shown) > 40 else ""), strict, prompt))

    for name in _inputs(entry):
        kind, options, required = _spec(entry, name)
        if kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
            for case_name, value, strict in _widget_values(kind, options):
                prompt = copy.deepcopy(baseline)
                prompt[TARGET]["inputs"][name] = value
                case(name, case_name, value, strict, prompt)
            continue
        # A socket: fuzz-pack producers, a literal, a bad link, a wrong type.
        variants = []
        if kind == "IMAGE":
            variants += [(f"image_{k}", {"class_type": "FuzzImage", "inputs": {"kind": k, "width": width,
                                                                                "height": height}},
                          strict) for k, strict in IMAGE_KINDS.items()]
        elif kind == "MASK":
            variants += [(f"mask_{k}", {"class_type": "FuzzMask", "inputs": {"kind": k, "width": width,
                                                                              "height": height}},
                          strict) for k, strict in MASK_KINDS.items()]
        # None on an optional socket is what an unconnected input gives the node: allowed.
        variants += [(f"object_{k}", {"class_type": "FuzzValue", "inputs": {"kind": k}}, required or k != "none")
                     for k in VALUE_KINDS if not (kind in IMAGE_LIKE and k == "nan_tensor")]
        for case_name, producer, strict in variants:
            prompt = copy.deepcopy(baseline)
            prompt["fuzz_src"] = producer
            prompt[TARGET]["inputs"][name] = ["fuzz_src", 0]
            case(name, case_name, producer["inputs"]["kind"], strict, prompt)
        for case_name, value in (("literal_int", 5), ("literal_string", "text"), ("dangling_link", ["999999", 0]),
                                 ("bad_slot", ["sink0", 7])):
            prompt = copy.deepcopy(baseline)
            prompt[TARGET]["inputs"][name] = value
            case(name, case_name, value, True, prompt)
        wrong = "LATENT" if kind != "LATENT" else "IMAGE"
        prompt = copy.deepcopy(baseline)
        prompt["fuzz_src"] = copy.deepcopy(FALLBACK_PRODUCERS[wrong])
        prompt[TARGET]["inputs"][name] = ["fuzz_src", 0]
        case(name, f"wrong_type_{wrong.lower()}", wrong, True, prompt)
        # Upstream JSON widgets of this socket's producer, perturbed.
        link = baseline[TARGET]["inputs"].get(name)
        if isinstance(link, list) and link[0] in baseline:
            for up_name, up_value in baseline[link[0]]["inputs"].items():
                for variant, text in _perturbed_json(up_value):
                    prompt = copy.deepcopy(baseline)
                    prompt[link[0]]["inputs"][up_name] = text
                    case(name, f"upstream_{up_name}_{variant}", text, False, prompt)
    # Mismatched sizes between two image-like sockets.
    linked = [n for n in _inputs(entry) if _spec(entry, n)[0] in IMAGE_LIKE]
    if len(linked) >= 2:
        prompt = copy.deepcopy(baseline)
        for index, name in enumerate(linked[:2]):
            kind = _spec(entry, name)[0]
            size = (width, height) if index == 0 else (width + 32, height // 2)
            prompt[f"fuzz_size{index}"] = {"class_type": "FuzzImage" if kind == "IMAGE" else "FuzzMask",
                                           "inputs": {"kind": "valid", "width": size[0], "height": size[1]}}
            prompt[TARGET]["inputs"][name] = [f"fuzz_size{index}", 0]
        case("+".join(linked[:2]), "mismatched_sizes", f"{width}x{height} vs {width + 32}x{height // 2}", False,
             prompt)
    cases = [c for c in cases if (c.node, c.input) not in BLOCKING_WIDGETS]
    return baseline, cases
