"""StopRequest: the one signal handler of the trainer and the job launcher records and does nothing else."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from vitruvian.core.signals import StopRequest


def test_records_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest((signal.SIGTERM, signal.SIGINT))
    assert stop.install() and signal.getsignal(signal.SIGTERM) is stop
    try:
        assert (stop.signum, stop.name) == (0, "")
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread before kill returns to Python
        assert (stop.signum, stop.name) == (signal.SIGTERM, "SIGTERM")
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM changes nothing
        assert stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # ... but a SIGINT after a stop aborts at once
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_recorded_before_is_handed_over():
    """The launcher records a cancel while the trainer still loads; the trainer's handler adopts it."""
    outer, inner = StopRequest((signal.SIGTERM,)), StopRequest((signal.SIGTERM, signal.SIGINT))
    outer.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        inner.install()
        assert inner.name == "SIGTERM" and signal.getsignal(signal.SIGTERM) is inner
        inner.uninstall()
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        outer.uninstall()


def test_outside_the_main_thread_nothing_is_installed():
    before, seen = signal.getsignal(signal.SIGTERM), []
    t = threading.Thread(target=lambda: seen.append(StopRequest().install()))
    t.start()
    t.join()
    assert seen == [False] and signal.getsignal(signal.SIGTERM) is before


def test_no_handler_in_the_package_does_io():
    """Every handler the package installs is a StopRequest (grep: no other ``signal.signal`` call)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = [p.relative_to(root).as_posix() for d in ("core", "nodes", "trainers") for p in (root / d).rglob("*.py")
             if "signal.signal(" in p.read_text(encoding="utf-8")]
    assert calls == ["core/signals.py"]
