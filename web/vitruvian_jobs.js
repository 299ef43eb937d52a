// Vitruvian training jobs panel: lists the pack's jobs (state, step, loss curve) and cancels them.
// Data: GET /vitruvian/jobs, GET /vitruvian/jobs/{id}, POST /vitruvian/jobs/{id}/cancel, and the
// "vitruvian.job" websocket message the server sends when a job changes. A sidebar tab when the frontend
// offers one (ComfyUI frontend >= 1.2), else a small floating panel toggled by a button.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const ENDED = new Set(["finished", "cancelled", "failed"]);
const COLORS = {
  starting: "#888", waiting: "#b0a030", running: "#3a8ee6", cancelling: "#d08020",
  finished: "#3aa55a", cancelled: "#999", failed: "#d04040",
};
const jobs = new Map();
let root = null;
let timer = null;

function el(tag, style = {}, text = "") {
  const node = document.createElement(tag);
  Object.assign(node.style, style);
  if (text) node.textContent = text;
  return node;
}

function sparkline(losses, width = 160, height = 36) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const values = (losses || []).map((p) => Number(p[1])).filter((v) => Number.isFinite(v));
  if (values.length < 2) return svg;
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const pts = values.map((v, i) => `${(i / (values.length - 1)) * (width - 4) + 2},${height - 2 - ((v - lo) / span) * (height - 4)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#e07020");
  line.setAttribute("stroke-width", "1.5");
  svg.appendChild(line);
  return svg;
}

function fmt(v, digits = 4) {
  return typeof v === "number" && Number.isFinite(v) ? v.toPrecision(digits) : "–";
}

function eta(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.round(seconds);
  return ` · eta ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function cancel(id) {
  const answer = await api.fetchApi(`/vitruvian/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  const data = await answer.json();
  if (!answer.ok) alert(`Vitruvian: ${data.error || answer.statusText}`);
  else merge(data);
  render();
}

function merge(status) {
  const old = jobs.get(status.id) || {};
  jobs.set(status.id, { ...old, ...status, losses: status.losses || old.losses || [] });
}

function row(job) {
  const box = el("div", { borderBottom: "1px solid #4446", padding: "6px 4px", fontSize: "12px" });
  const head = el("div", { display: "flex", gap: "6px", alignItems: "center" });
  const badge = el("span", { background: COLORS[job.state] || "#666", color: "#fff", borderRadius: "3px",
    padding: "0 5px", fontSize: "11px" }, job.state);
  head.append(badge, el("span", { fontFamily: "monospace" }, job.id));
  if (!ENDED.has(job.state)) {
    const button = el("button", { marginLeft: "auto", fontSize: "11px", cursor: "pointer" }, "Cancel");
    button.title = "Stop the job; it keeps its last checkpoint (resume with the job id)";
    button.onclick = () => cancel(job.id);
    head.append(button);
  }
  const line = el("div", { opacity: 0.85, margin: "2px 0" },
    `${job.objective} ${job.name} · step ${job.step}/${job.steps} · loss ${fmt(job.loss)}${ENDED.has(job.state) ? "" : eta(job.eta)}`);
  box.append(head, line, sparkline(job.losses));
  if (job.error) box.append(el("div", { color: "#e66", whiteSpace: "pre-wrap" }, job.error));
  if (job.published) box.append(el("div", { opacity: 0.7 }, `LoRA: ${job.published.split(/[\\/]/).slice(-2).join("/")}`));
  return box;
}

function render() {
  if (!root) return;
  root.replaceChildren();
  const title = el("div", { fontWeight: "bold", margin: "4px 0 6px" }, "Vitruvian training jobs");
  root.append(title);
  const list = [...jobs.values()].sort((a, b) => b.created - a.created);
  if (!list.length) root.append(el("div", { opacity: 0.7 }, "No jobs yet: run a workflow with Train LoRA as a Job."));
  for (const job of list.slice(0, 30)) root.append(row(job));
}

async function refresh() {
  try {
    const answer = await api.fetchApi("/vitruvian/jobs");
    if (!answer.ok) return;
    const data = await answer.json();
    jobs.clear();
    for (const job of data.jobs || []) merge(job);
    render();
  } catch (e) {
    console.warn("Vitruvian: could not list jobs", e);
  }
}

function mount(container) {
  root = container;
  refresh();
  if (!timer) timer = setInterval(() => root && root.isConnected && refresh(), 5000);
}

function floatingPanel() {
  const panel = el("div", { position: "fixed", right: "12px", bottom: "56px", width: "320px", maxHeight: "60vh",
    overflow: "auto", background: "var(--comfy-menu-bg, #222)", color: "var(--fg-color, #ddd)", zIndex: 1000,
    border: "1px solid #555", borderRadius: "6px", padding: "6px", display: "none" });
  const toggle = el("button", { position: "fixed", right: "12px", bottom: "12px", zIndex: 1000, cursor: "pointer" },
    "Vitruvian jobs");
  toggle.onclick = () => {
    panel.style.display = panel.style.display === "none" ? "block" : "none";
    if (panel.style.display === "block") mount(panel);
  };
  document.body.append(panel, toggle);
}

app.registerExtension({
  name: "vitruvian.jobs",
  async setup() {
    api.addEventListener("vitruvian.job", async ({ detail }) => {
      merge(detail);
      if (root && root.isConnected) {
        const answer = await api.fetchApi(`/vitruvian/jobs/${encodeURIComponent(detail.id)}`);
        if (answer.ok) merge(await answer.json());
        render();
      }
    });
    const manager = app.extensionManager;
    if (manager && typeof manager.registerSidebarTab === "function") {
      manager.registerSidebarTab({
        id: "vitruvian-jobs", icon: "pi pi-chart-line", title: "Vitruvian jobs", tooltip: "Vitruvian training jobs",
        type: "custom", render: (container) => mount(container),
      });
    } else {
      floatingPanel();
    }
  },
});
