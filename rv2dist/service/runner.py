"""Running a job (:mod:`rv2dist.service.jobfile`): every comparison not already done,
on one cluster, told as events.

Every comparison is submitted at once, so the scheduler reads a store's chunks once for
all the comparisons that share it.  Each result is written atomically the moment it is
finished, with a fingerprint of its inputs and parameters; running the job again skips
results whose fingerprint still matches and recomputes the others
(:mod:`rv2dist.service.resume`).  What is shown of a run — its lines, its bar, the live
page and ``report.html`` — subscribes to the events it emits
(:mod:`rv2dist.service.events`); :func:`run_job` attaches those.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

from rv2dist.engine import buffers
from rv2dist.io.reader import open_activations
from rv2dist.io.schema import network_name
from rv2dist.service import dashboard, resume
from rv2dist.service.cluster import ClusterLostError, watch
from rv2dist.service.console import Console
from rv2dist.service.events import (CheckingInputs, ComparisonFailed, ComparisonFinished, ComparisonQueued,
                                    ComparisonStarted, JobEvents, JobFinished, JobInterrupted, JobStarted)
from rv2dist.service.jobfile import Comparison, Job, JobError
from rv2dist.service.live import LiveBoard
from rv2dist.service.outputs import draw, write_combined, write_comparison
from rv2dist.service.progress import JobBar
from rv2dist.service.report import Report


@dataclass(frozen=True)
class JobSummary:
    """The comparisons a run computed and those it kept from earlier runs, by name."""

    computed: tuple[str, ...]
    skipped: tuple[str, ...]


def run_job(job: Job, client, *, device="auto", progress=True, stream=None) -> JobSummary:
    """Run every comparison of ``job`` on ``client`` that is not already done, with its
    lines on ``stream``, a progress bar, the live page and ``report.html``.

    Parameters
    ----------
    job : Job
        From :func:`~rv2dist.service.jobfile.load_job`.
    client : distributed.Client
        The cluster to run on.
    device : {"auto", "cpu", "gpu"}
        Where the chunk products run, as :func:`rv2dist.similarity` takes it (auto:
        the GPUs of a cluster whose workers declare a ``GPU`` resource).
    progress : bool
        A progress bar on stderr (overall, and per running comparison).
    stream : file, optional
        Where the per-comparison lines go (default stdout).

    Returns
    -------
    JobSummary
        The comparisons computed now and those kept, by name.

    Raises
    ------
    JobError
        After every other comparison has finished, when some failed (naming them).
    """
    events = JobEvents()
    bar = JobBar(enabled=progress)
    # in this order: the bar closes before the last lines, which name the report after it is written
    for subscriber in (bar, LiveBoard(client), Console(stream or sys.stdout), Report()):
        subscriber.attach(events)
    try:
        return run(job, client, events, device=device)
    finally:
        bar.close()


def run(job: Job, client, events: JobEvents, *, device="auto") -> JobSummary:
    """:func:`run_job` with the subscribers ``events`` has, and no others."""
    return _JobRun(job, client, events, device).run()


class _JobRun:
    """One run of a job: its stores opened, what earlier runs left, and what this one
    computes (``results`` holds every current result, kept or new)."""

    def __init__(self, job: Job, client, events: JobEvents, device):
        self.job, self.client, self.events = job, client, events
        used = sorted({c.a for c in job.comparisons} | {c.b for c in job.comparisons})
        self.datasets = {name: open_activations(job.networks[name]) for name in used}
        self.networks = {name: network_name(self.datasets[name], name) for name in used}
        self.inputs = resume.Inputs.of(job, used)
        self.results = {c: self.inputs.kept_result(c) for c in job.comparisons}
        self.kept = {c: result for c, result in self.results.items() if result is not None}
        self.todo = tuple(c for c in job.comparisons if c not in self.kept)
        self.options = dict(metric=list(job.metrics), center=job.center, route=job.route, client=client,
                            align_obs=job.align_obs, device=device, **job.resampling, **job.measure_options)
        self.futures, self.pending, self.tasks = {}, set(), {}
        self.seconds, self.failed, self.submitted = {}, {}, 0.0

    def sides(self, comparison: Comparison):
        a, b = self.datasets[comparison.a], self.datasets[comparison.b]
        return a, None if comparison.a == comparison.b else b

    def run(self) -> JobSummary:
        self.start()
        try:
            self.check_kept_inputs()
            for comparison in self.todo:
                self.events.emit(ComparisonQueued(comparison, self.inputs.why_recompute(comparison)))
            self.submit()
            self.collect()
        except BaseException as error:
            said = self.interrupted(error)
            if said is None:
                raise
            raise said from None
        buffers.job_finished(self.client)
        status = "failed" if self.failed else "finished"
        combined = write_combined(self.job, self.results, self.networks)
        self.events.emit(JobFinished(status, dict(self.results), dict(self.seconds), combined))
        if self.failed:
            raise JobError(f"job {self.job.name}: {len(self.failed)} comparison(s) failed "
                           f"({', '.join(c.name for c in self.failed)}); first: {next(iter(self.failed.values()))}")
        return JobSummary(tuple(c.name for c in self.todo if c not in self.failed),
                          tuple(c.name for c in self.kept))

    def start(self) -> None:
        """Draw the kept results' missing heatmaps, plan every comparison (shapes only,
        for the report) and say so."""
        from rv2dist.api import plan

        redrawn = tuple(c for c in self.kept if self.job.plots and not self.job.plot_path(c).exists())
        for comparison in redrawn:
            draw(self.job, comparison, self.kept[comparison])
        plans = {c: repr(plan(*self.sides(c), **self.options)) for c in self.job.comparisons}
        self.job.out.mkdir(parents=True, exist_ok=True)  # once every comparison plans: no folder left by an error
        self.events.emit(JobStarted(self.job, self.networks, self.kept, redrawn, self.todo, plans))

    def check_kept_inputs(self) -> None:
        checks = resume.input_checks(self.datasets, self.kept)
        if checks:
            self.events.emit(CheckingInputs(tuple(resume.kept_networks(self.kept))))
            resume.run_checks(self.client, checks)

    def submit(self) -> None:
        """Build every graph and hand them to the cluster together."""
        from rv2dist.api import similarity

        # a store in several comparisons is read by tasks of its own, which their graphs share
        shared = {name for name in self.datasets if sum(name in (c.a, c.b) for c in self.todo) > 1}
        lazies = []
        for comparison in self.todo:
            reads = "read-tasks" if {comparison.a, comparison.b} & shared else "auto"
            lazy = similarity(*self.sides(comparison), **self.options, compute=False, reads=reads)
            self.tasks[comparison] = dashboard.tasks_of(lazy)
            self.events.emit(ComparisonStarted(comparison, self.tasks[comparison]))
            lazies.append(lazy)
        self.submitted = time.perf_counter()
        # comparisons of the same data (one store under two names) have the same keys and
        # so one future: each of them is written when it finishes
        for future, comparison in zip(self.client.compute(lazies) if lazies else [], self.todo):
            self.futures.setdefault(future, []).append(comparison)
        self.pending = set(self.futures)

    def running_tokens(self) -> list[str]:
        return [self.tasks[c].token for future in self.pending for c in self.futures[future]]

    def collect(self) -> None:
        """Write each result as it finishes; note each failure and go on."""
        poll = dashboard.task_poll(self.client, self.events, self.running_tokens)
        for future in watch(self.client, self.futures, on_poll=poll):
            self.pending.discard(future)
            for comparison in self.futures[future]:
                if future.status == "error":
                    self.fail(comparison, future.exception())
                else:
                    self.finish(comparison, future.result().copy())  # its own attrs when a future serves two

    def fail(self, comparison: Comparison, error: BaseException) -> None:
        self.failed[comparison] = f"{type(error).__name__}: {error}"
        self.events.emit(ComparisonFailed(comparison, self.failed[comparison]))

    def finish(self, comparison: Comparison, result) -> None:
        self.seconds[comparison] = time.perf_counter() - self.submitted
        write_comparison(self.job, comparison, result, self.networks, self.inputs.provenance(comparison))
        self.results[comparison] = result
        self.events.emit(ComparisonFinished(comparison, result, self.job.result_path(comparison),
                                            self.seconds[comparison]))

    def interrupted(self, error: BaseException) -> BaseException | None:
        """Stop the job's tasks; the error to raise in place of ``error``, saying what
        was saved (None: ``error`` itself)."""
        # best effort only: with the scheduler gone these fail too, and must not hide why
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.futures))
        with contextlib.suppress(Exception):
            self.events.emit(JobInterrupted(error))
        saved = (f"{len(self.seconds)} of {len(self.todo)} comparisons computed this run were saved in "
                 f"{self.job.out}; run the job again to resume")
        if isinstance(error, ClusterLostError):
            return ClusterLostError(f"{error}; {saved}")
        if isinstance(error, KeyboardInterrupt):
            return KeyboardInterrupt(saved)
        return None
