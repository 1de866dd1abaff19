"""The live page's subscriber: a job's events posted to the board on the scheduler
(:mod:`rv2dist.service.dashboard`), which serves them at ``/rv2dist``."""

from __future__ import annotations

import datetime
import uuid

from rv2dist.service import dashboard
from rv2dist.service.events import (ComparisonFailed, ComparisonFinished, ComparisonStarted, JobEvents,
                                    JobFinished, JobInterrupted, JobStarted)
from rv2dist.service.page import comparison_entry


class LiveBoard:
    """Posts what a job does on ``client`` to the board, if its scheduler has one
    (installed when the job starts; without rv2dist next to the scheduler, nothing)."""

    def __init__(self, client):
        self.client = client
        self.ready = False
        self.job_id = ""
        self.networks, self.metrics = {}, ()

    def attach(self, events: JobEvents) -> None:
        events.subscribe(JobStarted, self.started)
        events.subscribe(ComparisonStarted, self.started_comparison)
        events.subscribe(ComparisonFinished, self.finished)
        events.subscribe(ComparisonFailed, self.failed)
        events.subscribe(JobFinished, lambda event: self.post({}, status=event.status))
        events.subscribe(JobInterrupted, lambda event: self.post({}, status="interrupted"))

    def post(self, comparisons, **job_fields) -> None:
        if self.ready:
            self.client.run_on_scheduler(dashboard.post_to_board, self.job_id,
                                         {"comparisons": comparisons, **job_fields})

    def started(self, event: JobStarted) -> None:
        job = event.job
        self.ready = dashboard.install(self.client)
        self.job_id = f"{job.name}-{uuid.uuid4().hex[:8]}"
        self.networks, self.metrics = event.networks, job.metrics
        entries = {c.name: comparison_entry(c, self.networks, "skipped", result=result, metrics=self.metrics)
                   for c, result in event.kept.items()}
        entries |= {c.name: comparison_entry(c, self.networks, "pending") for c in event.todo}
        self.post(entries, name=job.name, status="running", started=datetime.datetime.now().timestamp(),
                  client=self.client.id)

    def started_comparison(self, event: ComparisonStarted) -> None:
        self.post({event.comparison.name: {"status": "running", "token": event.tasks.token,
                                           "tasks_total": event.tasks.total}})

    def finished(self, event: ComparisonFinished) -> None:
        self.post({event.comparison.name: comparison_entry(event.comparison, self.networks, "done",
                                                           result=event.result, metrics=self.metrics,
                                                           seconds=event.seconds)})

    def failed(self, event: ComparisonFailed) -> None:
        self.post({event.comparison.name: {"status": "failed", "error": event.error}})
