"""Import cost of the pack: headless (``import vitruvian``) and inside ComfyUI.

    python -m benchmarks.import_time [--repeat 5] [--no-host] [--write-docs]

Every number is a median over ``--repeat`` fresh subprocesses (imports are cached per process), next to a
baseline measured in the same run on the same Python: ``import torch``. Ratios are what to compare across
machines; the absolute seconds are for the notes.

1. Headless, in this Python: ``import vitruvian``, ``vitruvian.core.pose``, ``vitruvian.trainers``, and the
   baseline ``import torch``; plus ``python -X importtime -c "import vitruvian.core.pose"``'s top offenders.
2. Inside ComfyUI (the host of ``tests/comfy_host.py``): in the host's Python, with ComfyUI's own API already
   imported (as when ComfyUI reaches custom nodes), the pack is imported the way ComfyUI does it (by file
   location, under a foreign module name) and ``comfy_entrypoint()`` + ``get_node_list()`` are awaited; plus
   the number a real server prints under "Import times for custom nodes:" (0.1 s resolution).

``--write-docs`` rewrites the "Benchmarks: import cost" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Benchmarks: import cost"
TARGET_SECONDS = 0.3
HEADLESS_MODULES = ("vitruvian", "vitruvian.core.pose", "vitruvian.trainers")

_TIME_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"

# Runs in the host's Python with cwd = the ComfyUI folder. ComfyUI's main.py has imported torch, comfy_api,
# nodes, execution and server (aiohttp) before it loads custom nodes, so that part is the baseline, and the
# pack's own cost is what comes after.
_IN_COMFY = r"""
import asyncio, importlib.util, os, sys, time
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options; comfy.options.enable_args_parsing()
t = time.perf_counter(); import torch; t_torch = time.perf_counter() - t
import utils.extra_config  # what main.py imports first (makes ComfyUI's utils/ the package `utils`)
t = time.perf_counter(); import execution, server, comfy_api.latest, nodes; t_comfy = time.perf_counter() - t
pack = os.environ["VITRUVIAN_PACK_DIR"]
before = set(sys.modules)
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("custom_nodes_x_vitruvian_bench", os.path.join(pack, "__init__.py"))
module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
async def nodes_of():
    return await (await module.comfy_entrypoint()).get_node_list()
node_list = asyncio.run(nodes_of())
t_pack = time.perf_counter() - t
new = sorted({m.split(".")[0] for m in sys.modules} - {m.split(".")[0] for m in before} - {spec.name})
print(t_torch, t_comfy, t_pack, len(node_list), ",".join(new))
"""


def _median_import(python: str, module: str, repeat: int, cwd: Path = REPO_ROOT) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run([python, "-c", _TIME_IMPORT.format(module=module)], capture_output=True, text=True,
                             cwd=cwd, check=True).stdout
        times.append(float(out.split()[-1]))
    return statistics.median(times)


def importtime_offenders(python: str, module: str, top: int = 8) -> list[tuple[str, float, float]]:
    """``(package, self s, cumulative s)`` of the top-level packages ``-X importtime`` charges most for
    (the cumulative time of a package's own first import line; nested packages overlap their parents)."""
    done = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=True)
    rows: dict[str, tuple[float, float]] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)$", line)
        if not match or "." in match[3] or match[3].startswith("_") or match[3] == module.split(".")[0]:
            continue
        self_s, cumulative_s = int(match[1]) / 1e6, int(match[2]) / 1e6
        if cumulative_s > rows.get(match[3], (0.0, 0.0))[1]:
            rows[match[3]] = (self_s, cumulative_s)
    ranked = sorted(rows.items(), key=lambda item: -item[1][1])[:top]
    return [(name, s, c) for name, (s, c) in ranked]


def headless(repeat: int) -> dict:
    python = sys.executable
    result = {"python": python, "torch": _median_import(python, "torch", repeat), "modules": {}}
    for module in HEADLESS_MODULES:
        result["modules"][module] = _median_import(python, module, repeat)
    result["offenders"] = importtime_offenders(python, "vitruvian.core.pose")
    return result


def in_comfyui(repeat: int) -> dict:
    """The pack's import cost inside the host's Python, plus the real server's logged number."""
    from tests.comfy_host import HostUnavailable, find_host, start_host

    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        return {"skipped": str(exc)}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["VITRUVIAN_PACK_DIR"] = str(REPO_ROOT)
    runs = []
    for _ in range(repeat):
        out = subprocess.run([str(python), "-c", _IN_COMFY], capture_output=True, text=True, cwd=comfy_dir,
                             env=env, check=True).stdout.split("\n")
        line = [row for row in out if row.strip()][-1].split(" ")
        runs.append((float(line[0]), float(line[1]), float(line[2]), int(line[3]), line[4] if len(line) > 4 else ""))
    result = {
        "python": str(python),
        "torch": statistics.median(r[0] for r in runs),
        "comfy_api": statistics.median(r[1] for r in runs),
        "pack": statistics.median(r[2] for r in runs),
        "nodes": runs[0][3],
        "new_packages": runs[0][4],
    }
    with tempfile.TemporaryDirectory(prefix="vitruvian-bench-") as work:
        host = start_host(work, check_pack=False)
        try:
            result["server_start"] = host.start_seconds
            logged = [v for path, v in host.import_times().items() if path.endswith("ComfyUI-Vitruvian")]
            result["server_logged"] = logged[0][0] if logged else None
            result["server_import_ok"] = bool(logged and logged[0][1]) and not host.pack_import_problems()
        finally:
            host.close()
    return result


def report(head: dict, comfy: dict) -> str:
    torch_s = head["torch"]
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `python -m benchmarks.import_time` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end (a shared, noisy machine: "
        f"compare ratios, not seconds). Each number is the median "
        f"of fresh subprocesses; the baseline is `import torch` in the same Python, measured in the same run. "
        f"Target: the pack adds ≤ {TARGET_SECONDS} s to ComfyUI's start.",
        "",
        "| what | seconds | ÷ `import torch` |",
        "|---|---|---|",
        f"| `import torch` (baseline, project venv) | {torch_s:.3f} | 1.00 |",
    ]
    for module, seconds in head["modules"].items():
        lines.append(f"| `import {module}` | {seconds:.3f} | {seconds / torch_s:.2f} |")
    if "skipped" in comfy:
        lines += ["", f"Inside ComfyUI: not measured ({comfy['skipped']})."]
    else:
        ct = comfy["torch"]
        lines += [
            f"| `import torch` (baseline, ComfyUI's venv) | {ct:.3f} | 1.00 |",
            f"| ComfyUI's `comfy_api.latest`, `nodes`, `execution`, `server` (loaded before any pack) | {comfy['comfy_api']:.3f} | "
            f"{comfy['comfy_api'] / ct:.2f} |",
            f"| **the pack inside ComfyUI** (import + `comfy_entrypoint()` + `get_node_list()`, {comfy['nodes']} "
            f"nodes) | **{comfy['pack']:.3f}** | {comfy['pack'] / ct:.2f} |",
            "",
            f"A real server (started in {comfy['server_start']:.1f} s) printed "
            f"`{comfy['server_logged']} seconds` for the pack under \"Import times for custom nodes\" "
            f"(0.1 s resolution; import {'ok' if comfy['server_import_ok'] else 'FAILED'}); that is one cold sample "
            f"that swings with the machine's load, so track the median above. "
            f"Top-level packages the pack brings in beyond what ComfyUI has already imported: "
            f"{', '.join(f'`{p}`' for p in comfy['new_packages'].split(',') if p) or 'none'}.",
        ]
        verdict = "within" if comfy["pack"] <= TARGET_SECONDS else "OVER"
        lines += ["", f"Verdict: {comfy['pack']:.3f} s is {verdict} the {TARGET_SECONDS} s target."]
    lines += ["", "Top imports charged to `import vitruvian.core.pose` (`-X importtime`, one run, cumulative):", "",
              "| package | self s | cumulative s |", "|---|---|---|"]
    for name, self_s, cumulative in head["offenders"]:
        lines.append(f"| `{name}` | {self_s:.3f} | {cumulative:.3f} |")
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    """Replace (or append) the import-cost section of docs/benchmarks.md, atomically."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section.replace("\\", "\\\\") + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, DOCS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh subprocesses per number (median; default 5)")
    parser.add_argument("--no-host", action="store_true", help="skip the measurements inside ComfyUI")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    args = parser.parse_args(argv)
    head = headless(args.repeat)
    comfy = {"skipped": "--no-host"} if args.no_host else in_comfyui(args.repeat)
    section = report(head, comfy)
    print(section)
    if args.write_docs:
        write_docs(section)
        print(f"written to {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
