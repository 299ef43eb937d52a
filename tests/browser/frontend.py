"""ComfyUI's real frontend (``comfyui-frontend-package``, served by the host at ``/``) driven through a
:class:`tests.browser.cdp.Page`. No pytest in here.

The frontend's own globals are used, as a user's browser would: ``app.loadGraphData`` (what dropping a
workflow file does), ``app.graphToPrompt`` (what the Run button sends), ``app.queuePrompt`` (the Run
button). Dialogs are read from the DOM: PrimeVue dialogs (missing nodes, prompt validation and
execution errors), legacy ``.comfy-modal`` boxes and error toasts, counted only when visible.
"""

from __future__ import annotations

import json
import time
import urllib.request

from .cdp import CDPError, Page

__all__ = ["FRONTEND_SETTINGS", "FrontendError", "Frontend"]

#: Written through the server's /settings before the page opens: no first-run template browser, no minimap
#: over the graph, full-detail node drawing at any zoom (screenshots), the missing-nodes warning on.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.05,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
}
#: Local requests the frontend makes for optional files that a fresh user folder does not have.
BENIGN_404 = ("/api/userdata", "/user.css", "/favicon.ico", "/api/i18n")

_VISIBLE_DIALOGS = """
[...document.querySelectorAll('.p-dialog, [role=dialog], [role=alertdialog], .comfy-modal, .p-toast-message-error')]
  .filter(d => d.getClientRects().length > 0 && getComputedStyle(d).visibility !== 'hidden')
  .map(d => (d.innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 600))
"""
_CAPTURE_QUEUE = """
(() => {
  if (!window.__vitruvianQueued) {
    window.__vitruvianQueued = [];
    const original = app.api.queuePrompt.bind(app.api);
    app.api.queuePrompt = async (...args) => {
      try { const answer = await original(...args); window.__vitruvianQueued.push(answer); return answer; }
      catch (error) { window.__vitruvianQueued.push({error: String(error && (error.message || error))}); throw error; }
    };
  }
  window.__vitruvianQueued.length = 0;
  return true;
})()
"""


class FrontendError(AssertionError):
    """The frontend showed a dialog, logged an error, or the prompt failed; the message says which."""


class Frontend:
    """The ComfyUI page of one host. :meth:`open` once, then :meth:`load`, :meth:`queue`, … per workflow."""

    def __init__(self, page: Page, url: str):
        self.page, self.url = page, url.rstrip("/")
        self._errors_seen = 0
        self._exceptions_seen = 0

    # -- server side ---------------------------------------------------------------------------------

    def _http(self, method: str, path: str, body=None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def open(self, *, width: int = 1920, height: int = 1080, timeout: float = 120) -> float:
        """Write :data:`FRONTEND_SETTINGS`, open the frontend and wait until its app and graph exist;
        return the seconds it took."""
        self._http("POST", "/settings", FRONTEND_SETTINGS)
        started = time.monotonic()
        self.page.set_viewport(width, height)
        self.page.navigate(self.url + "/")
        self.page.wait_for("!!(window.app && window.app.graph && window.app.api && document.querySelector('canvas'))",
                           timeout=timeout)
        self.page.pump(2.0)  # extensions finish registering; startup noise is logged before the baseline
        self.close_dialogs()
        self.mark()
        return time.monotonic() - started

    # -- state ---------------------------------------------------------------------------------------

    def mark(self) -> None:
        """Start counting console errors and exceptions from here."""
        self.page.pump()
        self._errors_seen = len(self.page.console_errors)
        self._exceptions_seen = len(self.page.exceptions)

    def new_errors(self) -> list[str]:
        """Console errors and uncaught exceptions since :meth:`mark`, without requests to other hosts
        (fonts, the node registry: the test must not depend on the internet) and :data:`BENIGN_404`."""
        self.page.pump()
        errors = []
        for text in self.page.console_errors[self._errors_seen:]:
            if text.startswith("network:"):
                local = self.url in text
                if not local or any(part in text for part in BENIGN_404):
                    continue
            errors.append(text)
        errors += self.page.exceptions[self._exceptions_seen:]
        return errors

    def visible_dialogs(self) -> list[str]:
        return [text for text in self.page.evaluate(_VISIBLE_DIALOGS) or [] if text]

    def close_dialogs(self) -> None:
        self.page.evaluate("document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close, "
                           ".p-toast-close-button').forEach(b => b.click()); true")
        self.page.pump(0.3)

    # -- workflows -----------------------------------------------------------------------------------

    def load(self, workflow: dict, name: str) -> list[str]:
        """Load a UI workflow as a new tab; return problems: visible dialogs, new errors, node types the
        frontend does not know, or nodes that did not arrive."""
        self.close_dialogs()
        self.mark()
        self.page.evaluate(f"app.loadGraphData({json.dumps(workflow)}, true, true, {json.dumps(name)}).then(() => true)",
                           timeout=60)
        self.page.pump(1.5)
        problems = [f"dialog: {text}" for text in self.visible_dialogs()]
        problems += [f"console: {text}" for text in self.new_errors()]
        loaded = self.page.evaluate(
            "app.graph._nodes.map(n => [String(n.id), n.type, !!LiteGraph.registered_node_types[n.type]])")
        known = {node_id: (kind, registered) for node_id, kind, registered in loaded}
        for node in workflow.get("nodes", []):
            node_id = str(node["id"])
            if node_id not in known:
                problems.append(f"node {node_id} ({node.get('type')}) is not in the loaded graph")
            elif not known[node_id][1]:
                problems.append(f"node {node_id}: type {known[node_id][0]!r} is not registered in the frontend")
        return problems

    def prompt(self) -> dict:
        """The API prompt the Run button would send for the current graph."""
        return self.page.evaluate("app.graphToPrompt().then(r => r.output)")

    def set_widgets(self, changes: dict[str, dict]) -> None:
        """Set widget values, ``{node id: {widget name: value}}``, as a user typing them would."""
        self.page.evaluate(f"""(() => {{
          const changes = {json.dumps(changes)};
          for (const [id, values] of Object.entries(changes)) {{
            const node = app.graph.getNodeById(Number(id));
            if (!node) throw new Error(`node ${{id}} is not in the graph`);
            for (const [name, value] of Object.entries(values)) {{
              const widget = (node.widgets || []).find(w => w.name === name);
              if (!widget) throw new Error(`node ${{id}} (${{node.type}}) has no widget ${{name}}`);
              widget.value = value;
              if (widget.callback) widget.callback(value, app.canvas, node);
            }}
          }}
          app.graph.setDirtyCanvas(true, true);
          return true;
        }})()""")

    def queue(self) -> str:
        """Press Run (``app.queuePrompt``) and return the prompt id; :class:`FrontendError` with the
        frontend's dialog text when the server rejects the prompt."""
        self.page.evaluate(_CAPTURE_QUEUE)
        try:
            self.page.evaluate("app.queuePrompt(0, 1).then(() => true)", timeout=60)
        except CDPError as exc:
            raise FrontendError(f"app.queuePrompt threw: {exc}") from None
        answers = self.page.evaluate("window.__vitruvianQueued")
        self.page.pump(0.5)
        dialogs = self.visible_dialogs()
        answer = answers[-1] if answers else {}
        if not answer.get("prompt_id") or answer.get("node_errors") or dialogs:
            raise FrontendError(f"the prompt was not queued cleanly: answer {json.dumps(answer)[:1500]}; "
                                f"dialogs {dialogs}")
        return answer["prompt_id"]

    def wait_done(self, prompt_id: str, *, timeout: float = 300) -> dict:
        """Wait on the server's ``/history`` until the prompt ends; return its outputs, or raise
        :class:`FrontendError` with the execution error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = (self._http("GET", f"/history/{prompt_id}") or {}).get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("completed") is not None:
                if status.get("status_str") == "success":
                    return entry.get("outputs", {})
                errors = [data for event, data in status.get("messages", []) if event == "execution_error"]
                raise FrontendError(f"prompt {prompt_id} failed: {json.dumps(errors)[:2000]}")
            time.sleep(0.25)
        self._http("POST", "/interrupt", {})
        raise FrontendError(f"prompt {prompt_id} did not finish within {timeout:.0f} s (interrupted)")

    def fit_view(self) -> None:
        self.page.evaluate("app.extensionManager.command.execute('Comfy.Canvas.FitView').then(() => true)")
        self.page.pump(0.5)

    def graph_box(self) -> tuple[int, int, int, int]:
        """The nodes' bounding box on screen, ``(left, top, right, bottom)`` in CSS pixels."""
        return tuple(self.page.evaluate("""(() => {
          const ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
          const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
          let box = [Infinity, Infinity, -Infinity, -Infinity];
          for (const n of app.graph._nodes) {
            box = [Math.min(box[0], n.pos[0]), Math.min(box[1], n.pos[1] - title),
                   Math.max(box[2], n.pos[0] + n.size[0]), Math.max(box[3], n.pos[1] + n.size[1])];
          }
          const x = v => Math.round((v + ds.offset[0]) * ds.scale + rect.left);
          const y = v => Math.round((v + ds.offset[1]) * ds.scale + rect.top);
          return [x(box[0]), y(box[1]), x(box[2]), y(box[3])];
        })()"""))

    def screenshot(self) -> bytes:
        self.page.evaluate("app.graph.setDirtyCanvas(true, true); true")
        self.page.pump(0.3)
        return self.page.screenshot()
