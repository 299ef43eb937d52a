"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for the browser tests.

No pytest in here. :func:`find_browser` finds Debian's ``chromium`` (or ``$VITRUVIAN_CHROMIUM``);
:class:`Browser` starts it headless with a private profile and a random debugging port, and
:class:`Page` is one tab: navigate, evaluate JavaScript (awaiting promises), collect console errors
and uncaught exceptions, take PNG screenshots. The websocket is ``websocket-client`` (the ``test`` extra)::

    with Browser.launch() as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:8188/")
        page.wait_for("window.app && window.app.graph")
        png = page.screenshot()
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["BrowserUnavailable", "CDPError", "find_browser", "Browser", "Page", "CHROMIUM_FLAGS"]

#: Headless, no sandbox (root in CI containers), no GPU, and nothing that phones home by itself.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--no-default-browser-check",
)
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(Exception):
    """No usable browser (or websocket client) here; ``str(exc)`` is the reason printed when tests skip."""


class CDPError(RuntimeError):
    """A CDP command failed, a JavaScript expression threw, or a wait timed out."""


def find_browser() -> str:
    """Path of a Chromium binary: ``$VITRUVIAN_CHROMIUM`` or the first of :data:`BROWSER_NAMES` on PATH."""
    explicit = os.environ.get("VITRUVIAN_CHROMIUM")
    if explicit:
        if not Path(explicit).is_file():
            raise BrowserUnavailable(f"$VITRUVIAN_CHROMIUM={explicit} does not exist")
        return explicit
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(
        f"no browser: none of {', '.join(BROWSER_NAMES)} is on PATH; on Debian/Ubuntu "
        "`apt-get install -y chromium`, or set VITRUVIAN_CHROMIUM to a Chromium binary"
    )


def _websocket():
    try:
        import websocket  # websocket-client
    except ImportError:
        raise BrowserUnavailable("the Python package websocket-client is missing; `pip install -e .[test]`") from None
    return websocket


class Page:
    """One tab over its own CDP websocket. Events are buffered: console errors in :attr:`console_errors`,
    uncaught exceptions in :attr:`exceptions`, failed network requests in :attr:`failed_requests`."""

    def __init__(self, ws_url: str, *, timeout: float = 60.0):
        self._ws = _websocket().create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._ids = itertools.count(1)
        self.console_errors: list[str] = []
        self.exceptions: list[str] = []
        self.failed_requests: list[str] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    # -- protocol ----------------------------------------------------------------------------------

    def send(self, method: str, params: dict | None = None, *, timeout: float = 60.0) -> dict:
        """Send one command and return its ``result``; events that arrive meanwhile are recorded."""
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self._ws.recv())
            except Exception as exc:  # websocket timeout or closed socket
                raise CDPError(f"{method}: no answer within {timeout:.0f} s ({type(exc).__name__}: {exc})") from None
            if message.get("id") == call_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error'].get('message')} {message['error'].get('data', '')}")
                return message.get("result", {})
            self._record(message)

    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(_remote_text(arg) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(_exception_text(details))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.failed_requests.append(f"{params.get('errorText')} (request {params.get('requestId')})")

    def pump(self, seconds: float = 0.0) -> None:
        """Read pending events for ``seconds`` (a no-op evaluate when 0)."""
        end = time.monotonic() + seconds
        while True:
            self.send("Runtime.evaluate", {"expression": "0"})
            if time.monotonic() >= end:
                return
            time.sleep(0.1)

    # -- helpers -----------------------------------------------------------------------------------

    def evaluate(self, expression: str, *, timeout: float = 60.0):
        """Evaluate JavaScript in the page (awaiting a returned promise) and return its JSON value;
        :class:`CDPError` with the JavaScript error when it throws."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": int(timeout * 1000)},
                           timeout=timeout + 5)
        if "exceptionDetails" in result:
            raise CDPError(f"JavaScript failed: {_exception_text(result['exceptionDetails'])}\n"
                           f"--- expression ---\n{expression[:2000]}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def wait_for(self, expression: str, *, timeout: float = 60.0, interval: float = 0.25):
        """Poll ``expression`` until it is truthy; return its value, or raise :class:`CDPError`."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
                if value:
                    return value
            except CDPError as exc:
                last_error = str(exc)
            time.sleep(interval)
        raise CDPError(f"waited {timeout:.0f} s for `{expression}` {last_error}".rstrip())

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def screenshot(self) -> bytes:
        """PNG bytes of the viewport."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass


class Browser:
    """A headless Chromium process with a temporary profile; use :meth:`launch` as a context manager."""

    def __init__(self, process: subprocess.Popen, port: int, profile: Path):
        self.process, self.port, self.profile = process, port, profile
        self.pages: list[Page] = []

    @classmethod
    def launch(cls, binary: str | None = None, *, timeout: float = 60.0) -> "Browser":
        binary = binary or find_browser()
        _websocket()
        profile = Path(tempfile.mkdtemp(prefix="vitruvian-chromium-"))
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                   "--remote-allow-origins=*", "--window-size=1600,1000", "about:blank"]
        log = open(profile / "chromium.log", "wb")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                text = (profile / "chromium.log").read_text(errors="replace")[-2000:]
                process.kill()
                shutil.rmtree(profile, ignore_errors=True)
                raise BrowserUnavailable(f"{binary} did not start (exit {process.poll()}): {text}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return cls(process, port, profile)

    def _json(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def new_page(self) -> Page:
        target = self._json("/json/new?about:blank", method="PUT")
        page = Page(target["webSocketDebuggerUrl"])
        self.pages.append(page)
        return page

    def version(self) -> str:
        return self._json("/json/version").get("Browser", "")

    def close(self) -> None:
        for page in self.pages:
            page.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remote_text(obj: dict) -> str:
    if "value" in obj:
        return str(obj["value"])
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "")


def _exception_text(details: dict) -> str:
    exception = details.get("exception") or {}
    return exception.get("description") or details.get("text", "") or json.dumps(details)[:500]
