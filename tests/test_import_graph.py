"""No import circle among the pack's modules (core/, nodes/, trainers/), counting every import statement at any
depth (a function-level import that closes a circle is still a seam in the wrong place).

``from . import x`` inside a package counts as importing that package (its ``__init__``), as Python runs it.
A parent package importing its own submodule is not a circle unless the submodule imports the parent back.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vitruvian"
DIRS = ("core", "nodes", "trainers")


def _modules() -> dict[str, Path]:
    mods = {}
    for d in DIRS:
        for path in (ROOT / d).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([PACKAGE, *parts])] = path
    return mods


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    if level == 0:
        return name if name and (name == PACKAGE or name.startswith(PACKAGE + ".")) else None
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> nx.DiGraph:
    """module → modules it imports (static, every statement)."""
    mods = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node.level, node.module)
                if base:
                    targets += [base] + [f"{base}.{n.name}" for n in node.names]
            elif isinstance(node, ast.Import):
                targets += [n.name for n in node.names if n.name.startswith(PACKAGE + ".")]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != module:
                    graph.add_edge(module, t)
    return graph


def test_the_graph_is_read():
    g = import_graph()
    assert g.has_edge("vitruvian.trainers.loop", "vitruvian.trainers.run")
    assert g.has_edge("vitruvian.trainers.registry", "vitruvian.trainers.recipes")


def test_no_import_circle():
    circles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not circles, "import circles (each a seam in the wrong place):\n" + "\n".join(" ".join(c) for c in circles)
