"""onnxruntime sessions for every ONNX model of the pack: provider choice and a cache.

- Provider: CUDA when onnxruntime offers ``CUDAExecutionProvider``, else CPU. ``VITRUVIAN_ORT_PROVIDERS``
  (comma list, e.g. ``"CPUExecutionProvider"``) overrides the choice. The choice, and the provider a
  session really got (onnxruntime falls back to CPU when CUDA libraries fail to load), is logged once.
- Cache: one session per ``(real path, mtime_ns, size, providers)``, so a file rewritten under the same
  name is loaded again and every node sharing a model shares one session.

onnxruntime is imported inside the functions (it is heavy, and optional for headless users).
"""

from __future__ import annotations

import logging
import os
import threading

from .errors import ModelNotFoundError

__all__ = ["get_session", "choose_providers", "clear_sessions", "PROVIDERS_ENV"]

log = logging.getLogger("vitruvian")

PROVIDERS_ENV = "VITRUVIAN_ORT_PROVIDERS"
_lock = threading.Lock()
_sessions: dict[tuple, tuple[object, str]] = {}
_logged: set[tuple] = set()


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - exercised only where onnxruntime is absent
        raise ImportError(
            "onnxruntime is not installed; install it in ComfyUI's Python: `pip install onnxruntime-gpu` "
            "(NVIDIA, Linux/Windows) or `pip install onnxruntime` (CPU, macOS)"
        ) from exc
    return onnxruntime


def choose_providers() -> list[str]:
    """The execution providers to ask for, best first: ``[CUDA, CPU]`` when CUDA is offered, else
    ``[CPU]``; or the ``VITRUVIAN_ORT_PROVIDERS`` list (unknown names are an error)."""
    available = _ort().get_available_providers()
    wanted = os.environ.get(PROVIDERS_ENV, "").strip()
    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(
                f"get_session: {PROVIDERS_ENV} must name providers this onnxruntime offers "
                f"({', '.join(available)}), got {', '.join(missing)}"
            )
        return names
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def get_session(path: str | os.PathLike, providers: list[str] | None = None):
    """A cached ``onnxruntime.InferenceSession`` for the model file at ``path``.

    Returns:
        ``(session, provider_used)``: ``provider_used`` is the first provider the session really
        runs on, e.g. ``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``.

    Raises:
        ModelNotFoundError: ``path`` is not a file.
    """
    path = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not os.path.isfile(path):
        raise ModelNotFoundError(f"ONNX model {os.path.basename(path)!r}", [os.path.dirname(path)])
    providers = list(providers) if providers is not None else choose_providers()
    key = (path, st.st_mtime_ns, st.st_size, tuple(providers))
    with _lock:
        hit = _sessions.get(key)
        if hit is not None:
            return hit
        ort = _ort()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; onnxruntime's warnings are noise in ComfyUI's console
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
        used = session.get_providers()[0]
        # A stale entry for an older version of the same file is dropped, so rewritten models do not pile up.
        for old in [k for k in _sessions if k[0] == path]:
            del _sessions[old]
        _sessions[key] = (session, used)
        note = (tuple(providers), used)
        if note not in _logged:
            _logged.add(note)
            fallback = "" if used == providers[0] else f" ({providers[0]} was asked for but could not start)"
            log.info("Vitruvian: onnxruntime runs on %s%s", used, fallback)
        return session, used


def clear_sessions() -> None:
    """Forget every cached session (tests; freeing GPU memory)."""
    with _lock:
        _sessions.clear()
