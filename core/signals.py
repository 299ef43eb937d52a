"""Signal handlers that only record: the trainer's and the job launcher's graceful stop.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is: inside
``print`` (a buffered ``sys.stdout`` then raises ``RuntimeError: reentrant call``; with
``PYTHONUNBUFFERED`` set the bug hides), inside a lock, inside an atomic write. So a
:class:`StopRequest` handler stores the signal number and returns; the code that owns the loop reads
:attr:`StopRequest.signum` at a safe point, says what happened and saves.

Hand-over: a process that records signals before another part installs its own (the job launcher
before the trainer's loop starts) passes the pending signal on: :meth:`StopRequest.install` adopts a
signal already recorded by the :class:`StopRequest` it replaces, so a cancel that arrives while the
trainer is still loading is not lost.

    >>> stop = StopRequest()                     # doctest: +SKIP
    >>> stop.install()                            # doctest: +SKIP
    >>> while not stop.signum: work()             # doctest: +SKIP
    >>> stop.uninstall()                          # doctest: +SKIP
"""
from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["STOP_SIGNALS", "StopRequest"]

#: SIGINT (Ctrl-C), SIGTERM (schedulers, ``kill``, a job's cancel) and, on Windows, SIGBREAK (Ctrl-Break, and
#: what a job's cancel sends there as ``CTRL_BREAK_EVENT``).
STOP_SIGNALS: tuple[int, ...] = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)) if s is not None)


class StopRequest:
    """Records the first stop signal; a second SIGINT raises ``KeyboardInterrupt`` (abort without saving).

    The handler does no I/O, takes no lock and builds nothing but that exception: it is safe wherever the
    main thread is interrupted.

    Attributes
    ----------
    signum : int
        The first signal received, 0 while none.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signum = 0
        self._signals = signals
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        """``"SIGTERM"``, ``"SIGINT"``, … or ``""`` while no signal was received."""
        return signal.Signals(self.signum).name if self.signum else ""

    def __call__(self, signum: int, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.signum:
            self.signum = signum

    def install(self) -> bool:
        """Become the handler of the stop signals; False (and nothing changed) outside the main thread
        (e.g. inside a ComfyUI worker), where Python cannot set handlers."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in self._signals:
            previous = signal.signal(sig, self)
            self._previous[sig] = previous
            if isinstance(previous, StopRequest) and previous.signum and not self.signum:
                self.signum = previous.signum  # the hand-over: a stop recorded before this part started
        return True

    def uninstall(self) -> None:
        """Put back the handlers that :meth:`install` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
