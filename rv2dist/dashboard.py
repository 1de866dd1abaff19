"""The rv2dist page on the scheduler's own dashboard server.

A scheduler plugin (so it works on remote clusters too, wherever rv2dist is installed
next to the scheduler) that

- counts finished rv2dist tasks per comparison from the scheduler's transitions,
- keeps what the job runner posts (comparisons, their status, finished matrices), and
- serves ``/rv2dist`` (a page: progress and heatmaps filling in as comparisons finish)
  and ``/rv2dist/api/progress`` (the same as JSON) from the dashboard's HTTP server.
"""

from __future__ import annotations

import json
import math
import time

from distributed.diagnostics.plugin import SchedulerPlugin

PLUGIN_NAME = "rv2dist"
PAGE_PATH = "/rv2dist"
API_PATH = "/rv2dist/api/progress"


def task_token(key):
    """The comparison token of an rv2dist task key (``"rv2dist-<what>-<token>"``), else None."""
    name = key[0] if isinstance(key, tuple) else key
    if isinstance(name, str) and name.startswith("rv2dist-"):
        return name.rsplit("-", 1)[-1]
    return None


class JobBoard(SchedulerPlugin):
    """Scheduler plugin behind the rv2dist page; see the module docstring."""

    name = PLUGIN_NAME

    def __init__(self):
        self.jobs = {}
        self.finished_tasks = {}
        self.scheduler = None

    async def start(self, scheduler):
        self.scheduler = scheduler
        _add_routes(scheduler)

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory":
            token = task_token(key)
            if token is not None:
                self.finished_tasks.setdefault(token, set()).add(key)

    def post(self, job_id, job):
        """Merge what the job runner reports: job fields, and comparisons by name."""
        current = self.jobs.setdefault(job_id, {"comparisons": {}})
        comparisons = job.pop("comparisons", {})
        current.update(job)
        for name, fields in comparisons.items():
            if fields.get("status") == "running" and fields.get("token"):
                # a rerun has the same task keys: count its tasks afresh
                self.finished_tasks.pop(fields["token"], None)
            current["comparisons"].setdefault(name, {}).update(fields)
        current["updated"] = time.time()

    def remove_client(self, scheduler, client):
        """A job whose client left without saying it finished is marked stopped."""
        for job in self.jobs.values():
            if job.get("client") == client and job.get("status") == "running":
                job["status"] = "stopped"
                for fields in job["comparisons"].values():
                    if fields.get("status") in ("running", "pending"):
                        fields["status"] = "stopped"

    def tasks_done(self, token):
        return len(self.finished_tasks.get(token, ()))

    def snapshot(self):
        """Every job, newest first, with task progress filled in: plain JSON types."""
        jobs = []
        for job_id, job in sorted(self.jobs.items(), key=lambda item: -item[1].get("started", 0)):
            comparisons = []
            for name, fields in job["comparisons"].items():
                entry = dict(fields, name=name)
                if entry.get("token") and entry.get("status") == "running":
                    entry["tasks_done"] = min(self.tasks_done(entry["token"]), entry.get("tasks_total", 0))
                comparisons.append(entry)
            done = sum(c.get("status") in ("done", "skipped") for c in comparisons)
            jobs.append({**{k: v for k, v in job.items() if k != "comparisons"}, "id": job_id,
                         "comparisons_done": done, "comparisons_total": len(comparisons),
                         "comparisons": comparisons})
        return {"jobs": jobs}


def _board(scheduler):
    return scheduler.plugins.get(PLUGIN_NAME)


def post_to_board(job_id, job, dask_scheduler=None):
    """Run on the scheduler (``client.run_on_scheduler``): hand the board an update."""
    board = _board(dask_scheduler)
    if board is not None:
        board.post(job_id, job)


def tasks_done_on_board(tokens, dask_scheduler=None):
    """Run on the scheduler: finished rv2dist tasks per comparison token."""
    board = _board(dask_scheduler)
    return {token: board.tasks_done(token) for token in tokens} if board is not None else {}


def install(client) -> bool:
    """Register the board on ``client``'s scheduler unless it is there; False when the
    scheduler cannot load it (rv2dist is not installed next to it)."""
    try:
        present = client.run_on_scheduler(_has_board)
        if not present:
            client.register_plugin(JobBoard())
        return True
    except Exception:
        return False


def _has_board(dask_scheduler=None):
    return _board(dask_scheduler) is not None


def page_link(dashboard_link: str) -> str:
    """The rv2dist page's URL from the Dask dashboard's (``.../status``)."""
    if not dashboard_link:
        return ""
    base = dashboard_link.rsplit("/status", 1)[0].rstrip("/")
    return base + PAGE_PATH


def _add_routes(scheduler):
    application = getattr(scheduler, "http_application", None)
    if application is None or getattr(scheduler, "_rv2dist_routes", False):
        return
    from tornado import web

    class Progress(web.RequestHandler):
        def get(self):
            board = _board(scheduler)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.write(json.dumps(_finite(board.snapshot() if board else {"jobs": []})))

    class Page(web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(PAGE_HTML)

    application.add_handlers(r".*", [(API_PATH, Progress), (PAGE_PATH + "/?", Page)])
    scheduler._rv2dist_routes = True


def _finite(value):
    """JSON has no NaN: undefined metric values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>rv2dist</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
.card { display: inline-block; vertical-align: top; margin: 0 1em 1em 0; padding: .6em;
        border: 1px solid #ccc; border-radius: 6px; }
.bar { width: 260px; height: 8px; background: #eee; border-radius: 4px; margin: .3em 0; }
.bar div { height: 8px; background: #3b7dd8; border-radius: 4px; }
.status { color: #666; font-size: 12px; }
svg text { font-size: 9px; fill: #333; }
</style></head>
<body>
<h1>rv2dist</h1>
<div id="jobs">waiting for a job...</div>
<script>
// Every name and message is set with textContent, never parsed as HTML: job, network
// and layer names and error strings come from users' files.
const api = location.pathname.replace(/\\/?$/, "") + "/api/progress";
const SVG = "http://www.w3.org/2000/svg";
// viridis, five stops
const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(v, lo, hi) {
  if (v === null) return "#ddd";
  let t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  const c = stops[i].map((s, k) => Math.round(s + f * (stops[i + 1][k] - s)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function node(tag, attributes = {}, text = null, namespace = null) {
  const e = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) e.setAttribute(key, value);
  if (text !== null) e.textContent = text;
  return e;
}
function heatmap(c) {
  const cell = 18, left = 44, top = 40;
  const rows = c.layers_a.length, cols = c.layers_b.length;
  const flat = c.values.flat().filter(v => v !== null);
  const lo = Math.min(0, ...flat), hi = Math.max(1, ...flat);
  const svg = node("svg", {class: "heatmap", width: left + cols * cell + 4, height: top + rows * cell + 4}, null, SVG);
  c.layers_b.forEach((name, j) => {
    const x = left + j * cell + 3, y = top - 4;
    svg.append(node("text", {x, y, transform: `rotate(-60 ${x} ${y})`}, String(name), SVG));
  });
  c.layers_a.forEach((name, i) => {
    svg.append(node("text", {x: 2, y: top + i * cell + 12}, String(name), SVG));
    c.values[i].forEach((v, j) => {
      const rect = node("rect", {x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1,
                                 fill: colour(v, lo, hi)}, null, SVG);
      rect.append(node("title", {}, `${name} / ${c.layers_b[j]}: ${v === null ? "undefined" : v.toFixed(3)}`, SVG));
      svg.append(rect);
    });
  });
  return svg;
}
function card(c) {
  const total = c.tasks_total || 0;
  const done = c.status === "done" || c.status === "skipped" ? total : (c.tasks_done || 0);
  const percent = total ? Math.round(100 * done / total) : 0;
  const box = node("div", {class: "card"});
  box.append(node("b", {}, `${c.network_a} vs ${c.network_b}`));
  box.append(node("div", {class: "status"}, c.status + (c.metric ? " - " + c.metric : "")));
  const bar = node("div", {class: "bar"});
  bar.append(node("div", {style: `width:${c.status === "pending" ? 0 : percent}%`}));
  box.append(bar);
  if (c.values) box.append(heatmap(c));
  if (c.error) box.append(node("div", {class: "status"}, String(c.error)));
  return box;
}
async function refresh() {
  const target = document.getElementById("jobs");
  try {
    const data = await (await fetch(api, {cache: "no-store"})).json();
    if (!data.jobs.length) return;
    target.replaceChildren(...data.jobs.flatMap(job => {
      const title = node("h2", {}, String(job.name) + " ");
      title.append(node("span", {class: "status"},
        `${job.status} - ${job.comparisons_done} of ${job.comparisons_total} comparisons`));
      return [title, ...job.comparisons.map(card)];
    }));
  } catch (error) { target.textContent = "no answer: " + error; }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""
