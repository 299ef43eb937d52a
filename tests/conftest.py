"""Shared fixtures: the real ComfyUI host and the tiny checkpoint.

- ``comfy_host`` (session): a running :class:`tests.comfy_host.ComfyHost` with the pack loaded, started once
  per session (~10 s). Skips, with the reason printed in the summary, when there is no host; fails when the
  pack does not load. ``VITRUVIAN_SKIP_COMFY=1`` skips host tests on purpose.
- ``tiny_checkpoint`` (session): Path of the tiny SD1.5-layout checkpoint (cached outside git). When the
  test also uses ``comfy_host`` it is placed in the host's checkpoints folder as ``tiny_checkpoint.name``.
- ``comfy_prefix`` (function): a ``filename_prefix`` unique to the test, so outputs on the shared host
  never collide; ``comfy_host.output_files(outputs)`` turns a prompt's outputs into paths.

Mark host tests ``@pytest.mark.comfy``. Model-building helpers live in ``tests/tiny.py``, not here.
"""

from __future__ import annotations

import os
import re

import pytest

from .comfy_host import HostError, HostUnavailable, find_host, start_host

_host_state: dict = {}  # "host" | "skip" | "error", filled on first use


def _update_surface_mode() -> bool:
    return os.environ.get("VITRUVIAN_UPDATE_SURFACE", "") not in ("", "0")


def pytest_report_header(config):
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        return f"comfy host: none ({exc})"
    return f"comfy host: {comfy_dir} (python {python})"


def pytest_collection_modifyitems(config, items):
    """A test that uses the host is a ``comfy`` test even if its author forgot the mark (``-m "not comfy"``)."""
    for item in items:
        if "comfy_host" in getattr(item, "fixturenames", ()) and item.get_closest_marker("comfy") is None:
            item.add_marker(pytest.mark.comfy)


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """The running ComfyUI host for the whole session (see the module docstring)."""
    if "host" not in _host_state and "skip" not in _host_state and "error" not in _host_state:
        if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
            _host_state["skip"] = "VITRUVIAN_SKIP_COMFY is set"
        else:
            try:
                _host_state["host"] = start_host(tmp_path_factory.mktemp("comfy"),
                                                 check_pack=not _update_surface_mode())
            except HostUnavailable as exc:
                _host_state["skip"] = str(exc)
            except HostError as exc:
                _host_state["error"] = str(exc)
    if "skip" in _host_state:
        print(f"\n[comfy host] skipping: {_host_state['skip']}")
        pytest.skip(_host_state["skip"])
    if "error" in _host_state:
        pytest.fail(f"the ComfyUI host failed: {_host_state['error']}", pytrace=False)
    host = _host_state["host"]
    yield host
    # Closed once at session end by pytest_sessionfinish (a session fixture's teardown would also do, but
    # this keeps the host alive if a test re-requests it after a failure).


def pytest_sessionfinish(session, exitstatus):
    host = _host_state.get("host")
    if host is not None:
        host.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if "skip" in _host_state:
        terminalreporter.write_line(f"comfy host tests SKIPPED: {_host_state['skip']}", yellow=True)
    elif "error" in _host_state:
        terminalreporter.write_line(f"comfy host FAILED: {_host_state['error'].splitlines()[0]}", red=True)
    elif "host" in _host_state:
        host = _host_state["host"]
        seconds = f"{host.start_seconds:.1f} s" if host.start_seconds is not None else "?"
        terminalreporter.write_line(f"comfy host: {host.comfy_dir} started in {seconds}; log {host.log_path}")


@pytest.fixture(scope="session")
def _tiny_checkpoint_path():
    from .tiny_checkpoint import tiny_sd15_checkpoint  # imports torch; only tests that need it pay

    return tiny_sd15_checkpoint()


@pytest.fixture
def tiny_checkpoint(request, _tiny_checkpoint_path):
    """Path of the tiny SD1.5 checkpoint; placed in the host's checkpoints folder when the test uses the host."""
    if "comfy_host" in request.fixturenames:
        request.getfixturevalue("comfy_host").place(_tiny_checkpoint_path, "checkpoints")
    return _tiny_checkpoint_path


@pytest.fixture
def comfy_prefix(request) -> str:
    """A SaveImage ``filename_prefix`` unique to this test (``<test name>/img``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return f"{name}/img"
