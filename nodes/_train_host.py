"""ComfyUI side of training jobs: where jobs and LoRAs live, safe paths, freeing memory, UI messages.

- Jobs: ``<output>/vitruvian/jobs/<job id>/`` (one :class:`~vitruvian.trainers.jobs.JobStore` per process,
  so the ``Popen`` handles of the jobs it started are reaped).
- Final LoRAs: ``<first loras folder>/vitruvian/<name>-<job id>.safetensors``, written by the job itself
  (so the stock LoraLoader lists it without a restart, even when ComfyUI was restarted meanwhile).
- Paths from users (dataset folders) are accepted only inside ComfyUI's output, input and temp folders.
- Progress: a daemon thread sends ``vitruvian.job`` websocket messages (the job's status without log)
  whenever a watched job changes, until it ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from ..trainers.jobs import JobStatus, JobStore

__all__ = ["EVENT", "store", "jobs_root", "publish_path", "lora_list_name", "resolve_folder", "allowed_roots",
           "free_models", "job_env", "send_status", "watch"]

#: The websocket event carrying a job's status.
EVENT = "vitruvian.job"
log = logging.getLogger("vitruvian")

_store: JobStore | None = None
_store_lock = threading.Lock()
_watched: dict[str, tuple] = {}
_watch_lock = threading.Lock()
_watcher: threading.Thread | None = None


def jobs_root() -> Path:
    import folder_paths

    return Path(folder_paths.get_output_directory()) / "vitruvian" / "jobs"


def store() -> JobStore:
    """The process-wide job store under ComfyUI's output folder (re-made if the output folder moved)."""
    global _store
    with _store_lock:
        root = jobs_root()
        if _store is None or _store.root != root:
            _store = JobStore(root)
        return _store


def _loras_dir() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


def _output_dir(kind: str) -> Path:
    """The first folder ComfyUI lists files of ``kind`` from: loras, the pack's scorers or pose adapters."""
    import folder_paths

    if kind == "scorer":
        from .scoring import SCORERS_FOLDER, register_folders

        register_folders()
        return Path(folder_paths.get_folder_paths(SCORERS_FOLDER)[0])
    if kind == "pose adapter":
        from .pose_adapter import FOLDER, adapter_files

        adapter_files()  # registers the folder
        return Path(folder_paths.get_folder_paths(FOLDER)[0])
    return _loras_dir()


def publish_path(name: str, kind: str = "LoRA") -> str:
    """Where a job's final output is copied: ``<loras>/vitruvian/<name>-{id}.safetensors`` for a LoRA,
    ``models/vitruvian/scorers/vitruvian/…`` for a scorer (Score Regions lists it as ``facescore:vitruvian/…``),
    ``models/vitruvian/pose_adapters/vitruvian/…`` for a pose adapter (Load Pose Adapter lists it)."""
    return str(_output_dir(kind) / "vitruvian" / f"{name}-{{id}}.safetensors")


def lora_list_name(published: str) -> str:
    """The name the stock LoraLoader lists a published file under (``vitruvian/<file>``), or ''."""
    import folder_paths

    if not published:
        return ""
    for root in folder_paths.get_folder_paths("loras"):
        try:
            rel = os.path.relpath(published, root)
        except ValueError:
            continue
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return ""


def allowed_roots() -> list[str]:
    import folder_paths

    return [os.path.realpath(p) for p in (folder_paths.get_output_directory(), folder_paths.get_input_directory(),
                                          folder_paths.get_temp_directory())]


def confine_paths(value: str, where: str, what: str) -> str:
    """A comma-separated list of paths from the web UI (a Train node's ``extra`` path setting), each resolved
    (relative → under the output folder, symlinks followed) and required to lie in ComfyUI's output, input or
    temp folder or one of its model folders; returns them resolved, comma-joined. NodeInputError otherwise."""
    import folder_paths

    from ..core.errors import NodeInputError

    roots = allowed_roots() + [os.path.realpath(folder_paths.models_dir)] + [
        os.path.realpath(p) for paths, _ in folder_paths.folder_names_and_paths.values() for p in paths]
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        full = os.path.realpath(item if os.path.isabs(item) else os.path.join(folder_paths.get_output_directory(), item))
        if "\x00" in item or not any(full == r or full.startswith(r + os.sep) for r in roots):
            raise NodeInputError(where, what, f"paths inside ComfyUI's output, input, temp or model folders are "
                                 f"expected, got {item[:120]!r} (resolves to {full[:200]}); put the file there")
        out.append(full)
    return ",".join(out)


def _folder_problem(full: str) -> str:
    """Why the OS would refuse ``full`` (an absolute, resolved path) as a folder to read or create, or ``""``
    (:func:`vitruvian.core.paths.os_path_problem`, or a file where a folder is expected)."""
    from ..core.paths import os_path_problem

    problem = os_path_problem(full)
    if problem:
        return f"a folder path the OS accepts is expected; this one {problem}"
    if os.path.lexists(full) and not os.path.isdir(full):
        return f"a folder is expected, but {full} is a file; pick another folder name"
    return ""


def resolve_folder(path: str, where: str, what: str) -> Path:
    """A user-given folder: relative → under the output folder; absolute → must lie in the output, input or
    temp folder (symlinks resolved), and be a path the OS takes as a folder (not too long, no NUL, no file
    in the way). NodeInputError naming input ``what`` of node ``where`` otherwise."""
    import folder_paths

    from ..core.errors import NodeInputError

    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise NodeInputError(where, what, f"a folder path (relative to ComfyUI's output folder, without NUL "
                             f"characters) is expected, got {str(path)[:120]!r}")
    text = path.strip()
    full = os.path.realpath(text if os.path.isabs(text) else os.path.join(folder_paths.get_output_directory(), text))
    roots = allowed_roots()
    if not any(full == r or full.startswith(r + os.sep) for r in roots):
        raise NodeInputError(where, what, f"the folder must be inside ComfyUI's output, input or temp folder, got "
                             f"{path[:120]!r} (resolves to {full[:200]}); allowed: {', '.join(roots)}")
    problem = _folder_problem(full)
    if problem:
        raise NodeInputError(where, what, f"{problem}; the path given: {path[:80]!r}" + ("…" if len(path) > 80 else ""))
    return Path(full)


def free_models() -> None:
    """Unload ComfyUI's models and empty the accelerator cache, so a job on the same GPU has the memory."""
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()


def job_env() -> dict[str, str]:
    """The job process's environment: ComfyUI's, with the GPU hidden when ComfyUI itself runs on the CPU
    (``--cpu``), so a job does what ComfyUI was told to do."""
    import comfy.model_management as mm

    env = dict(os.environ)
    if mm.get_torch_device().type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def send_status(status: JobStatus) -> None:
    """Send a ``vitruvian.job`` message (status without log and loss curve) to every client."""
    try:
        from server import PromptServer

        PromptServer.instance.send_sync(EVENT, status.to_dict(curve=False, log=False))
    except Exception:  # no server (scripts) or it is shutting down: the UI also polls /vitruvian/jobs
        log.debug("Vitruvian: could not send a job message", exc_info=True)


def watch(job_id: str) -> None:
    """Send ``vitruvian.job`` messages for ``job_id`` on every change until it ends (a daemon thread)."""
    global _watcher
    with _watch_lock:
        _watched.setdefault(job_id, ())
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch_loop, name="vitruvian-jobs", daemon=True)
            _watcher.start()


def _watch_loop() -> None:
    while True:
        with _watch_lock:
            ids = list(_watched)
            if not ids:
                globals()["_watcher"] = None
                return
        for job_id in ids:
            try:
                status = store().status(job_id, log_lines=0)
            except Exception:
                with _watch_lock:
                    _watched.pop(job_id, None)
                continue
            key = (status.state, status.step, status.loss)
            with _watch_lock:
                changed = _watched.get(job_id) != key
                _watched[job_id] = key
                if status.ended:
                    _watched.pop(job_id, None)
            if changed:
                send_status(status)
        time.sleep(1.0)
