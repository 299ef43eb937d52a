"""A real ComfyUI server for tests: find the host, start it with the pack, run API-format workflows.

No pytest in here (``tests/conftest.py`` wraps it in fixtures), so scripts can use it too::

    from tests.comfy_host import start_host
    with start_host() as host:                      # raises HostUnavailable(reason) when there is none
        outputs = host.run_workflow(prompt)         # raises WorkflowError on a validation or execution error

The host is a ComfyUI checkout with its own venv: ``$COMFYUI_DIR`` (default ``~/.cache/vitruvian/ComfyUI``)
and ``$COMFYUI_PYTHON`` (default ``<dir>/.venv/bin/python``); ``tools/setup_comfyui_host.py`` makes one.
Every folder the server writes to lives in a private work folder: the pack is loaded through a symlink
``<work>/custom/ComfyUI-Vitruvian`` → the repository (so it must load whatever its folder is called), and
checkpoints, LoRAs, input, output, temp and user folders are all inside ``<work>``, never the host's own.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "PACK_FOLDER",
    "HostUnavailable",
    "HostError",
    "PackLoadError",
    "WorkflowError",
    "find_host",
    "ensure_pack_requirements",
    "load_surface",
    "ComfyHost",
    "start_host",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The pack's folder name inside the host's custom_nodes (deliberately not "vitruvian").
PACK_FOLDER = "ComfyUI-Vitruvian"
SURFACE_FILE = REPO_ROOT / "tests" / "node_surface.json"
DEFAULT_COMFYUI_DIR = Path.home() / ".cache" / "vitruvian" / "ComfyUI"
#: Imports the pack needs inside ComfyUI's Python (torch is ComfyUI's own).
PACK_IMPORTS = ("kornia", "networkx", "safetensors", "diffusers", "peft", "onnxruntime", "accelerate")


class HostUnavailable(Exception):
    """No usable ComfyUI host here; ``str(exc)`` is the reason, printed when host tests skip."""


class HostError(RuntimeError):
    """The server failed to start or died; the message carries the tail of its log."""


class PackLoadError(HostError):
    """The server runs but the pack did not load cleanly (import failures or missing nodes)."""


class WorkflowError(RuntimeError):
    """A prompt was rejected (validation, HTTP 400) or failed while executing.

    Attributes: ``node_id``, ``node_type``, ``message`` (the exception message or the validation text),
    ``traceback`` (server-side, as text; empty for validation errors), ``details`` (the raw server answer).
    """

    def __init__(self, message: str, *, node_id: str = "", node_type: str = "", traceback: str = "", details=None):
        self.node_id, self.node_type, self.message, self.traceback = node_id, node_type, message, traceback
        self.details = details
        where = f" in node {node_id} ({node_type})" if node_id else ""
        text = f"workflow failed{where}: {message}"
        if traceback:
            text += "\n--- server traceback ---\n" + traceback.rstrip()
        super().__init__(text)


# ------------------------------------------------------------------------------------------ finding


def find_host() -> tuple[Path, Path]:
    """``(comfy_dir, python)`` of the host, or raise :class:`HostUnavailable` saying what is missing."""
    env_dir = os.environ.get("COMFYUI_DIR")
    comfy_dir = Path(env_dir).expanduser() if env_dir else DEFAULT_COMFYUI_DIR
    source = "$COMFYUI_DIR" if env_dir else "the default location"
    if not (comfy_dir / "main.py").is_file():
        raise HostUnavailable(
            f"no ComfyUI host: {comfy_dir} ({source}) has no main.py; set COMFYUI_DIR to a ComfyUI checkout "
            f"or create one with `python tools/setup_comfyui_host.py <ComfyUI source>`"
        )
    env_python = os.environ.get("COMFYUI_PYTHON")
    python = Path(env_python).expanduser() if env_python else comfy_dir / ".venv" / "bin" / "python"
    if not python.is_file():
        raise HostUnavailable(
            f"no Python for the ComfyUI host: {python} does not exist; set COMFYUI_PYTHON or create "
            f"{comfy_dir / '.venv'} with `python tools/setup_comfyui_host.py`"
        )
    return comfy_dir, python


def ensure_pack_requirements(python: Path, *, install: bool = True) -> None:
    """Make sure the pack's dependencies import in the host's Python; ``pip install -r requirements.txt``
    into it when some are missing. Raises :class:`HostUnavailable` if they still cannot be found."""
    probe = (
        "import importlib.util, sys; "
        f"missing = [m for m in {PACK_IMPORTS!r} if importlib.util.find_spec(m) is None]; "
        "print(' '.join(missing))"
    )

    def missing() -> list[str]:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise HostUnavailable(f"the host's Python {python} does not run: {done.stderr.strip()[-500:]}")
        return done.stdout.split()

    absent = missing()
    if not absent:
        return
    if not install:
        raise HostUnavailable(f"the host's Python lacks the pack's requirements: {', '.join(absent)}")
    print(f"[comfy_host] installing the pack's requirements into {python} (missing: {', '.join(absent)})")
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         str(REPO_ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=1800,
    )
    if done.returncode != 0:
        raise HostUnavailable(
            f"`pip install -r requirements.txt` into the host's Python failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-800:]}"
        )
    still = missing()
    if still:
        raise HostUnavailable(f"after installing requirements.txt the host's Python still lacks {', '.join(still)}")


def load_surface(path: Path = SURFACE_FILE) -> dict:
    """The node-surface snapshot (``tests/node_surface.json``): ``{"pack": {...}, "builtins": {...}}``."""
    if not path.is_file():
        return {"pack": {}, "builtins": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ the server


class ComfyHost:
    """One ComfyUI server process with the pack loaded, private folders and a log file.

    ``folders``: ``custom_nodes``, ``checkpoints``, ``loras``, ``input``, ``output``, ``temp``, ``user``
    (all inside ``workdir``). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, comfy_dir: Path, python: Path, workdir: Path, *, extra_args: tuple[str, ...] = (),
                 start_timeout: float = 120.0):
        self.comfy_dir, self.python, self.workdir = Path(comfy_dir), Path(python), Path(workdir)
        self.extra_args, self.start_timeout = tuple(extra_args), start_timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.folders = {
            name: self.workdir / sub
            for name, sub in {
                "custom_nodes": "custom", "checkpoints": "models/checkpoints", "loras": "models/loras",
                "diffusion_models": "models/diffusion_models", "text_encoders": "models/text_encoders",
                "vae": "models/vae",
                "input": "input", "output": "output", "temp": "temp", "user": "user",
                # the pack's own model folders, so shipped workflows can name files placed there
                "vitruvian_pose_adapters": "models/vitruvian/pose_adapters",
                "vitruvian_detectors": "models/vitruvian/detectors",
                "vitruvian_scorers": "models/vitruvian/scorers",
            }.items()
        }
        self.log_path = self.workdir / "comfyui.log"
        self.pack_path = self.folders["custom_nodes"] / PACK_FOLDER
        self.start_seconds: float | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def command(self) -> list[str]:
        config = self.workdir / "extra_model_paths.yaml"
        return [
            str(self.python), "main.py", "--cpu", "--fp32-text-enc", "--disable-api-nodes",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(config),
            "--input-directory", str(self.folders["input"]),
            "--output-directory", str(self.folders["output"]),
            "--temp-directory", str(self.folders["temp"]),
            "--user-directory", str(self.folders["user"]),
            "--database-url", "sqlite:///:memory:",
            *self.extra_args,
        ]

    def start(self, *, check_pack: bool = True) -> "ComfyHost":
        """Start the server and wait until ``/object_info`` answers; then (``check_pack``) raise
        :class:`PackLoadError` when the log shows an import failure of the pack or a snapshot node is missing."""
        for folder in self.folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        if not self.pack_path.exists():
            self.pack_path.symlink_to(REPO_ROOT, target_is_directory=True)
        # JSON is valid YAML, so no yaml dependency is needed to write ComfyUI's extra_model_paths file.
        config = {"vitruvian_tests": {
            "is_default": True,
            "custom_nodes": str(self.folders["custom_nodes"]),
            "checkpoints": str(self.folders["checkpoints"]),
            "loras": str(self.folders["loras"]),
            **{name: str(self.folders[name]) for name in ("diffusion_models", "text_encoders", "vae")},
            **{name: str(self.folders[name]) for name in self.folders if name.startswith("vitruvian_")},
        }}
        (self.workdir / "extra_model_paths.yaml").write_text(json.dumps(config, indent=2), encoding="utf-8")

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"
        self._log_file = open(self.log_path, "wb")
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(), cwd=self.comfy_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        atexit.register(self.close)
        try:
            self._wait_ready(started)
            self.start_seconds = time.monotonic() - started
            if check_pack:
                self.check_pack_loaded()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, started: float) -> None:
        while True:
            if self._process.poll() is not None:
                raise HostError(f"ComfyUI exited with code {self._process.returncode} while starting\n"
                                f"{self.log_tail()}")
            if time.monotonic() - started > self.start_timeout:
                raise HostError(f"ComfyUI did not answer at {self.url} within {self.start_timeout:.0f} s\n"
                                f"{self.log_tail()}")
            try:
                self._request("GET", "/system_stats", timeout=5)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
                continue
            self.object_info()
            return

    def close(self) -> None:
        """Stop the server (terminate, then kill after 15 s) and close the log. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "ComfyHost":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- HTTP ----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body=None, *, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def object_info(self) -> dict:
        """``GET /object_info``: node id → its schema (input, input_order, output, category, python_module, …)."""
        return self._request("GET", "/object_info", timeout=120)

    def interrupt(self) -> None:
        """``POST /interrupt``: stop the prompt now executing."""
        self._request("POST", "/interrupt", {})

    # -- the log -------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the server has printed so far (stdout and stderr)."""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pack_import_problems(self) -> list[str]:
        """Log lines saying the pack (or one of its node modules) failed to import."""
        problems = []
        for line in self.log_text().splitlines():
            mentions_pack = PACK_FOLDER in line
            if mentions_pack and ("IMPORT FAILED" in line or "Cannot import" in line
                                  or "Error while calling comfy_entrypoint" in line or "skipping" in line):
                problems.append(line.strip())
            elif "Vitruvian: node module" in line and "failed to import" in line:
                problems.append(line.strip())
        return problems

    def import_times(self) -> dict[str, tuple[float, bool]]:
        """``Import times for custom nodes:`` from the log: pack path → (seconds, imported ok)."""
        times = {}
        for match in re.finditer(r"^\s*([\d.]+) seconds( \(IMPORT FAILED\))?: (.+)$", self.log_text(), re.M):
            times[match.group(3).strip()] = (float(match.group(1)), match.group(2) is None)
        return times

    # -- the pack ------------------------------------------------------------------------------------

    def pack_nodes(self, info: dict | None = None) -> dict[str, dict]:
        """The pack's entries of ``/object_info`` (those whose python_module is our folder)."""
        info = self.object_info() if info is None else info
        module = f"custom_nodes.{PACK_FOLDER}"
        return {name: entry for name, entry in info.items() if entry.get("python_module") == module}

    def check_pack_loaded(self, expected: list[str] | None = None) -> None:
        """Raise :class:`PackLoadError` on import failures in the log, or when a node id of the snapshot
        (``expected``, default: the ``pack`` keys of ``tests/node_surface.json``) is not served."""
        problems = self.pack_import_problems()
        if problems:
            raise PackLoadError("the pack did not import cleanly:\n  " + "\n  ".join(problems)
                                + f"\n--- log tail ---\n{self.log_tail(80)}")
        expected = sorted(load_surface()["pack"]) if expected is None else expected
        missing = sorted(set(expected) - set(self.pack_nodes()))
        if missing:
            raise PackLoadError(f"nodes in tests/node_surface.json are not in /object_info: {missing}; a node was "
                                f"removed or renamed (never rename a node id), or its module failed to import"
                                f"\n--- log tail ---\n{self.log_tail(80)}")

    # -- files ---------------------------------------------------------------------------------------

    def place(self, path: str | os.PathLike, folder: str, name: str | None = None) -> str:
        """Symlink ``path`` into one of :attr:`folders` (e.g. "checkpoints", "loras"; "input" copies) and return
        the name ComfyUI lists it under."""
        path = Path(path).resolve()
        target = self.folders[folder] / (name or path.name)
        if target.is_symlink() or target.exists():
            target.unlink()
        if folder == "input":
            shutil.copyfile(path, target)
        else:
            target.symlink_to(path)
        return target.name

    def output_files(self, outputs: dict) -> list[Path]:
        """Paths of the files a prompt's ``outputs`` list (SaveImage → output, PreviewImage → temp)."""
        roots = {"output": self.folders["output"], "temp": self.folders["temp"] / "temp",
                 "input": self.folders["input"]}
        files = []
        for node_outputs in outputs.values():
            for items in node_outputs.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item and item.get("type") in roots:
                        files.append(roots[item["type"]] / item.get("subfolder", "") / item["filename"])
        return files

    # -- workflows -----------------------------------------------------------------------------------

    def run_workflow(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format ``prompt`` and wait for it; return its outputs (node id → ui dict).

        Raises :class:`WorkflowError` when ComfyUI rejects the prompt (HTTP 400, with the server's
        ``node_errors``), when a node raises (node id, type, message and server traceback), when it is
        interrupted, or when it does not finish within ``timeout`` seconds (then it is interrupted).
        """
        try:
            queued = self._request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", errors="replace")
            try:
                answer = json.loads(raw)
            except json.JSONDecodeError:
                raise WorkflowError(f"HTTP {exc.code} from /prompt: {raw[:2000]}") from None
            failed = next(iter((answer.get("node_errors") or {}).items()), ("", {}))
            raise WorkflowError(_validation_text(answer), node_id=str(failed[0]),
                                node_type=failed[1].get("class_type", ""), details=answer) from None
        prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + timeout
        while True:
            history = self._request("GET", f"/history/{prompt_id}")
            entry = (history or {}).get(prompt_id)
            if entry and (entry.get("status") or {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "success":
                    return entry.get("outputs", {})
                raise _execution_error(status, entry)
            if not self.running:
                raise HostError(f"ComfyUI died while running prompt {prompt_id}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.interrupt()
                raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s (interrupted)\n"
                                    f"--- log tail ---\n{self.log_tail(30)}")
            time.sleep(0.2)


def _validation_text(answer: dict) -> str:
    error = answer.get("error") or {}
    lines = [f"prompt rejected: {error.get('message', '')} {error.get('details', '')}".rstrip()]
    for node_id, node in (answer.get("node_errors") or {}).items():
        for item in node.get("errors", []):
            lines.append(f"  node {node_id} ({node.get('class_type')}): {item.get('message')}: "
                         f"{item.get('details')}")
    return "\n".join(lines)


def _execution_error(status: dict, entry: dict) -> WorkflowError:
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return WorkflowError(
                f"{data.get('exception_type')}: {data.get('exception_message')}", node_id=str(data.get("node_id")),
                node_type=data.get("node_type", ""), traceback="".join(data.get("traceback") or []), details=entry,
            )
        if event == "execution_interrupted":
            return WorkflowError("interrupted", node_id=str(data.get("node_id")),
                                 node_type=data.get("node_type", ""), details=entry)
    return WorkflowError(f"status {status.get('status_str')!r} without an error message", details=entry)


def start_host(workdir: str | os.PathLike | None = None, *, check_pack: bool = True,
               install_requirements: bool = True, **kwargs) -> ComfyHost:
    """Find the host, make sure the pack's requirements import in it, start it and return the running
    :class:`ComfyHost`. ``workdir`` defaults to a fresh temporary folder. Raises :class:`HostUnavailable`."""
    comfy_dir, python = find_host()
    ensure_pack_requirements(python, install=install_requirements)
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="vitruvian-comfy-"))
    return ComfyHost(comfy_dir, python, workdir, **kwargs).start(check_pack=check_pack)
