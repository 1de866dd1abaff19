"""``report.html``: a job's subscriber that writes, when the job ends, every matrix of
the job (values on hover, a metric selector), each comparison's plan and time, and the
provenance into the results folder — the rv2dist page with its data embedded, readable
without the cluster."""

from __future__ import annotations

import datetime

from rv2dist.core.measures import MEASURES
from rv2dist.core.second_moments import DEFAULTS
from rv2dist.io.atomic import write_text
from rv2dist.service.events import JobEvents, JobFinished, JobStarted, ReportWritten
from rv2dist.service.outputs import routes_used
from rv2dist.service.page import comparison_entry, page_html

REPORT_NAME = "report.html"


class Report:
    """Writes ``report.html`` on :class:`~rv2dist.service.events.JobFinished` and says
    where with :class:`~rv2dist.service.events.ReportWritten` on the same bus."""

    def __init__(self):
        self.events = None
        self.started = None

    def attach(self, events: JobEvents) -> None:
        self.events = events
        events.subscribe(JobStarted, self.remember)
        events.subscribe(JobFinished, self.write)

    def remember(self, event: JobStarted) -> None:
        self.started = event

    def write(self, event: JobFinished) -> None:
        job = self.started.job
        path = job.out / REPORT_NAME
        write_text(path, page_html(report_data(self.started, event)))
        self.events.emit(ReportWritten(path))


def report_data(started: JobStarted, finished: JobFinished) -> dict:
    """The page's data of a finished job: its one job, every comparison and the provenance."""
    from rv2dist import __version__

    job = started.job
    comparisons = []
    for comparison in job.comparisons:
        result = finished.results.get(comparison)
        entry = comparison_entry(comparison, started.networks, "done" if result is not None else "not computed",
                                 result=result, metrics=job.metrics, seconds=finished.seconds.get(comparison))
        entry.update(name=comparison.name, plan=started.plans.get(comparison, ""))
        comparisons.append(entry)
    provenance = {"stores": ", ".join(f"{name} = {path}" for name, path in job.networks.items()),
                  "metrics": ", ".join(job.metrics), "center": job.center, **measure_options(job),
                  "route": routes_used(finished.results.values(), job.route),
                  "results": str(job.out), "rv2dist": __version__,
                  "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    done = sum(c["status"] == "done" for c in comparisons)
    return {"jobs": [{"id": job.name, "name": job.name, "status": finished.status, "comparisons_done": done,
                      "comparisons_total": len(comparisons), "comparisons": comparisons, "provenance": provenance}]}


def measure_options(job) -> dict:
    """The options the job's second-moment measures were computed with (defaults
    included), and ``rcond`` where the job sets it (else it follows the products' dtype)."""
    read = dict.fromkeys(key for name in job.metrics for key in MEASURES[name].options)
    given = job.measure_options
    return {key: given.get(key, DEFAULTS[key]) for key in read} | {k: v for k, v in given.items() if k == "rcond"}
