"""The rv2dist page on the scheduler's own dashboard server.

A scheduler plugin (so it works on remote clusters too, wherever rv2dist is installed
next to the scheduler) that

- counts finished rv2dist tasks per comparison from the scheduler's transitions,
- keeps what the job runner posts (comparisons, their status, finished matrices), and
- serves ``/rv2dist`` (a page: progress with an ETA, and heatmaps with a metric selector
  filling in as comparisons finish) and ``/rv2dist/api/progress`` (the same as JSON)
  from the dashboard's HTTP server.

The page is rv2dist's own small HTML file (:mod:`rv2dist.service.page`) rather than a
Bokeh app: it needs no JavaScript library, so the same file, with the data embedded, is
the job's offline ``report.html`` that outlives the cluster.  What a job posts comes
from its events (:mod:`rv2dist.service.live`).
"""

from __future__ import annotations

import json
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from rv2dist.service.events import TaskProgress, Tasks
from rv2dist.service.page import finite, page_html

PLUGIN_NAME = "rv2dist"
PAGE_PATH = "/rv2dist"
API_PATH = "/rv2dist/api/progress"


def task_token(key):
    """The comparison token of an rv2dist task key (``"rv2dist-<what>-<token>"``), else None."""
    name = key[0] if isinstance(key, tuple) else key
    if isinstance(name, str) and name.startswith("rv2dist-"):
        return name.rsplit("-", 1)[-1]
    return None


def tasks_of(lazy) -> Tasks:
    """The :class:`~rv2dist.service.events.Tasks` of a lazy rv2dist result: the token of
    its output key, and how many keys of its graph carry it (what the board counts)."""
    token = task_token(lazy.key)
    return Tasks(token, sum(task_token(key) == token for key in lazy.__dask_graph__()))


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


def task_poll(client, events, tokens):
    """An ``on_poll`` for :func:`rv2dist.service.cluster.watch`: emit the board's
    :class:`~rv2dist.service.events.TaskProgress` of the tokens ``tokens()`` names, when a
    subscriber listens and the scheduler has the board."""
    def poll():
        if events.wants(TaskProgress):
            done = client.run_on_scheduler(tasks_done_on_board, list(tokens()))
            if done:
                events.emit(TaskProgress(done))
    return poll


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
            self.write(json.dumps(finite(board.snapshot() if board else {"jobs": []})))

    class Page(web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(page_html())

    application.add_handlers(r".*", [(API_PATH, Progress), (PAGE_PATH + "/?", Page)])
    scheduler._rv2dist_routes = True
