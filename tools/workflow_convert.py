"""Convert ComfyUI UI-format workflows (``example_workflows/<name>.json``) to API format
(``workflows/<name>.api.json``): the UI file is the one source, the API file is generated from it.

A UI workflow stores widget values by *position* (``widgets_values``), so the conversion needs each
node's widget layout, which this module derives from a node schema the way ComfyUI's frontend
(``comfyui-frontend-package`` 1.27) builds widgets:

- inputs are taken required first, then optional, in ``input_order``; an input is a widget when its
  type has a widget (INT, FLOAT, STRING, BOOLEAN, COMBO, …) and it is not ``forceInput``;
- an INT input with ``control_after_generate`` (or, when that option is absent, named ``seed`` or
  ``noise_seed``), and a COMBO with ``control_after_generate``, is followed by a UI-only
  ``control_after_generate`` widget (``"randomize"``, ``"fixed"``, …) that never reaches the API prompt;
- a COMBO with ``image_upload`` (and the video/audio variants) is followed by a UI-only ``upload`` widget.

Layouts come from a live ``/object_info`` or from the node-surface snapshot ``tests/node_surface.json``,
whose entries carry the same layout under ``"widgets"`` (UI-only slots are written ``"<input>.<what>"``).

Command line (stdlib only)::

    python tools/workflow_convert.py --check              # every example_workflows/*.json vs its API twin
    python tools/workflow_convert.py --write              # (re)generate workflows/<name>.api.json
    python tools/workflow_convert.py --url http://127.0.0.1:8188 --write pose_preview   # live schemas
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

__all__ = [
    "ConversionError", "UI_ONLY_NODES", "widget_slots", "layouts_from_object_info", "layouts_from_surface",
    "ui_to_api", "api_differences", "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SURFACE_FILE = REPO_ROOT / "tests" / "node_surface.json"
#: Input types the 1.27 frontend draws as widgets (``app.widgets``); everything else is a socket.
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "IMAGEUPLOAD", "FILEUPLOAD", "COLOR",
    "TREESELECT", "MULTISELECT", "SELECTBUTTON", "TEXTAREA", "AUDIOUPLOAD", "WEBCAM",
})
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
#: Nodes that exist only in the frontend and never reach an API prompt.
UI_ONLY_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_NEVER, MODE_BYPASS = 2, 4


class ConversionError(ValueError):
    """A UI workflow cannot be converted; the message names the node and what to fix."""


# ------------------------------------------------------------------------------------------ layouts


def _type_and_options(spec) -> tuple[str, dict]:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    return ("COMBO" if isinstance(kind, (list, tuple)) else str(kind)), options


def widget_slots(entry: dict) -> list[str]:
    """The widget layout of one ``/object_info`` entry: input names in ``widgets_values`` order, with the
    UI-only slots as ``"<input>.control_after_generate"`` / ``"<input>.upload"``.

    >>> widget_slots({"input": {"required": {"seed": ["INT", {}], "model": ["MODEL", {}]}}})
    ['seed', 'seed.control_after_generate']
    """
    inputs = entry.get("input") or {}
    order = entry.get("input_order") or {section: list(inputs.get(section) or {}) for section in inputs}
    slots = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section, specs):
            if name not in specs:
                continue
            kind, options = _type_and_options(specs[name])
            kind = str(options.get("widgetType") or kind)
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            slots.append(name)
            control = options.get("control_after_generate")
            if kind == "INT" and (control if control is not None else name in SEED_NAMES) or (
                    kind == "COMBO" and control):
                slots.append(f"{name}.control_after_generate")
            if kind == "COMBO" and any(options.get(flag) for flag in UPLOAD_OPTIONS):
                slots.append(f"{name}.upload")
    return slots


def layouts_from_object_info(info: dict) -> dict[str, list[str]]:
    """Node id → :func:`widget_slots`, for every node of a live ``/object_info``."""
    return {name: widget_slots(entry) for name, entry in info.items()}


def layouts_from_surface(surface: dict) -> dict[str, list[str]]:
    """Node id → widget layout from the snapshot (``{"pack": …, "builtins": …}``). Entries without a
    ``"widgets"`` list (older snapshots) fall back to their input types and the seed-name rule."""
    layouts = {}
    for name, entry in {**surface.get("builtins", {}), **surface.get("pack", {})}.items():
        if "widgets" in entry:
            layouts[name] = list(entry["widgets"])
            continue
        slots = []
        for section in ("required", "optional"):
            for input_name, kind in entry.get("inputs", {}).get(section, {}).items():
                if kind in WIDGET_TYPES:
                    slots.append(input_name)
                    if kind == "INT" and input_name in SEED_NAMES:
                        slots.append(f"{input_name}.control_after_generate")
        layouts[name] = slots
    return layouts


# ------------------------------------------------------------------------------------------ conversion


def _links(workflow: dict) -> dict[int, tuple[int, int]]:
    """Link id → (origin node id, origin slot); accepts the array form and the object form of links."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            table[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]))
        else:
            table[int(link[0])] = (int(link[1]), int(link[2]))
    return table


def _label(node: dict) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


def ui_to_api(workflow: dict, layouts: dict[str, list[str]], titles: dict[str, str] | None = None) -> dict:
    """The API prompt (node id → ``{"inputs", "class_type", "_meta"}``) of a UI ``workflow``.

    ``layouts``: node id → widget layout (:func:`layouts_from_object_info` or :func:`layouts_from_surface`);
    ``titles``: node id → display name for ``_meta.title`` when a node has no title of its own.
    Reroutes are followed, bypassed nodes (mode 4) pass their first input of the linked type through,
    muted nodes (mode 2) and UI-only nodes are left out; subgraphs and group nodes are refused.
    """
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise ConversionError(f"workflow must be a UI-format object with a 'nodes' list, got {type(workflow).__name__}"
                              " (an API-format file maps node ids to {class_type, inputs}: it needs no conversion)")
    if (workflow.get("definitions") or {}).get("subgraphs") or (workflow.get("extra") or {}).get("groupNodes"):
        raise ConversionError("workflow uses subgraphs or group nodes, which this converter does not expand; "
                              "convert them to plain nodes in the frontend (right click → Unpack)")
    titles = titles or {}
    nodes = {int(node["id"]): node for node in workflow["nodes"]}
    links = _links(workflow)
    prompt = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        kind = node.get("type")
        if kind in UI_ONLY_NODES or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        if kind not in layouts:
            raise ConversionError(f"{_label(node)}: unknown node type {kind!r}; its pack is not loaded (or, offline, "
                                  f"not in tests/node_surface.json: VITRUVIAN_UPDATE_SURFACE=1 adds it)")
        inputs = _widget_inputs(node, layouts[kind])
        for socket in node.get("inputs") or []:
            if socket.get("link") is None:
                continue
            origin = _resolve(nodes, links, int(socket["link"]), socket.get("type"))
            # None: the chain ends in a muted node (the frontend then sends the widget value, if any);
            # "primitive": a PrimitiveNode's value is mirrored in the target's own widgets_values.
            if origin is not None and origin != "primitive":
                inputs[socket["name"]] = [str(origin[0]), origin[1]]
        title = node.get("title") or titles.get(kind) or kind
        prompt[str(node_id)] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    return prompt


def _widget_inputs(node: dict, layout: list[str]) -> dict:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some custom frontends save widgets by name
        return {name: values[name] for name in layout if "." not in name and name in values}
    values = list(values or [])
    if len(values) > len(layout) or len(values) < len(layout) and _required_tail(layout, len(values)):
        raise ConversionError(
            f"{_label(node)}: widgets_values has {len(values)} values but the node has {len(layout)} widgets "
            f"{layout}; the node's inputs changed since the workflow was saved, or the layout is stale "
            f"(re-save the workflow in the frontend, or regenerate tests/node_surface.json)")
    return {name: value for name, value in zip(layout, values) if "." not in name}


def _required_tail(layout: list[str], given: int) -> bool:
    # Fewer values than widgets is only accepted for a missing tail, which the frontend fills with defaults;
    # the converter cannot know defaults offline, so such workflows are refused rather than guessed.
    return any("." not in name for name in layout[given:])


def _resolve(nodes: dict, links: dict, link_id: int, wanted, depth: int = 0):
    """(origin node id, slot) of a link after following reroutes and bypassed nodes; ``None`` when the
    chain ends in a muted or dangling node, ``"primitive"`` for a PrimitiveNode."""
    if depth > 64:
        raise ConversionError(f"link {link_id}: a cycle of reroutes or bypassed nodes")
    if link_id not in links:
        raise ConversionError(f"link {link_id} is used by a node input but missing from the workflow's links")
    origin_id, slot = links[link_id]
    origin = nodes.get(origin_id)
    if origin is None:
        raise ConversionError(f"link {link_id} starts at node {origin_id}, which is not in the workflow")
    kind, mode = origin.get("type"), origin.get("mode")
    if kind == "PrimitiveNode":
        return "primitive"
    if kind == "Reroute" or mode == MODE_BYPASS:
        candidates = [s for s in origin.get("inputs") or [] if s.get("link") is not None]
        if kind != "Reroute":
            candidates = [s for s in candidates if wanted in (None, "*", s.get("type"))]
        if not candidates:
            return None
        return _resolve(nodes, links, int(candidates[0]["link"]), wanted, depth + 1)
    if mode == MODE_NEVER:
        return None
    return origin_id, slot


# ------------------------------------------------------------------------------------------ comparison


def api_differences(expected: dict, actual: dict, *, titles: bool = False) -> list[str]:
    """Readable differences between two API prompts (``_meta`` ignored unless ``titles``)."""
    problems = []
    for node_id in sorted(set(expected) | set(actual), key=lambda k: (len(k), k)):
        if node_id not in actual:
            problems.append(f"node {node_id} ({expected[node_id].get('class_type')}): only in the expected prompt")
            continue
        if node_id not in expected:
            problems.append(f"node {node_id} ({actual[node_id].get('class_type')}): only in the converted prompt")
            continue
        want, got = expected[node_id], actual[node_id]
        label = f"node {node_id} ({want.get('class_type')})"
        if want.get("class_type") != got.get("class_type"):
            problems.append(f"{label}: class_type {want.get('class_type')!r} ≠ {got.get('class_type')!r}")
        want_inputs, got_inputs = want.get("inputs", {}), got.get("inputs", {})
        for name in sorted(set(want_inputs) | set(got_inputs)):
            if name not in got_inputs:
                problems.append(f"{label}: input {name!r} missing (expected {_short(want_inputs[name])})")
            elif name not in want_inputs:
                problems.append(f"{label}: unexpected input {name!r} = {_short(got_inputs[name])}")
            elif want_inputs[name] != got_inputs[name] and not _same_number(want_inputs[name], got_inputs[name]):
                problems.append(f"{label}: input {name!r} is {_short(got_inputs[name])}, expected "
                                f"{_short(want_inputs[name])}")
        if titles and want.get("_meta") != got.get("_meta"):
            problems.append(f"{label}: _meta {got.get('_meta')} ≠ {want.get('_meta')}")
    return problems


def _same_number(a, b) -> bool:
    numbers = (int, float)
    return isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(
        b, bool) and float(a) == float(b)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------ command line


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workflow_convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="workflow names (default: every example_workflows/*.json)")
    parser.add_argument("--url", help="a running ComfyUI to read /object_info from (default: the snapshot)")
    parser.add_argument("--surface", type=Path, default=SURFACE_FILE, help="node-surface snapshot file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with workflows/<name>.api.json (default)")
    mode.add_argument("--write", action="store_true", help="write workflows/<name>.api.json")
    args = parser.parse_args(argv)

    titles = {}
    if args.url:
        with urllib.request.urlopen(args.url.rstrip("/") + "/object_info", timeout=120) as answer:
            info = json.loads(answer.read())
        layouts = layouts_from_object_info(info)
        titles = {name: entry.get("display_name") or name for name, entry in info.items()}
    else:
        layouts = layouts_from_surface(json.loads(args.surface.read_text(encoding="utf-8")))
    sources = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
    if args.names:
        sources = [REPO_ROOT / "example_workflows" / f"{Path(n).stem}.json" for n in args.names]
    failed = 0
    for source in sources:
        target = REPO_ROOT / "workflows" / f"{source.stem}.api.json"
        old = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
        old_titles = {v.get("class_type"): (v.get("_meta") or {}).get("title") for v in old.values()}
        try:
            prompt = ui_to_api(json.loads(source.read_text(encoding="utf-8")), layouts,
                               {**{k: v for k, v in old_titles.items() if v}, **titles})
        except ConversionError as exc:
            print(f"{source.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.write:
            _atomic_write(target, json.dumps(prompt, indent=2, ensure_ascii=False) + "\n")
            print(f"wrote {target.relative_to(REPO_ROOT)}")
            continue
        problems = api_differences(old, prompt) if old else [f"{target.name} does not exist (use --write)"]
        failed += bool(problems)
        print(f"{source.name}: " + ("ok" if not problems else "differs from its API twin:\n  " + "\n  ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
