"""The one progress bar of rv2dist, drawn by tqdm: redrawn in place with an ETA on a
terminal, and a line every tenth of the way otherwise (logs, CI), in the same format;
the bars that follow a job's events (comparisons done, tasks done); and the line a
long job prints of its cost before it starts.

Whether a bar shows is the caller's ``enabled``/``progress`` argument (``rv2dist -q``
passes False) and, for the whole process, dask config ``rv2dist.progress``; the command
line sets neither for the process.
"""

from __future__ import annotations

import sys
import time

from rv2dist.service.events import (ComparisonFailed, ComparisonFinished, ComparisonStarted, JobEvents,
                                    JobFinished, JobInterrupted, JobStarted, TaskProgress, Tasks)


class ProgressBar:
    """Progress of ``total`` steps (``None``: unknown), labelled, on ``stream``.

    Parameters
    ----------
    total : int or None
        Steps to do; with ``None`` only the count and rate are shown.
    label : str
        Printed before the bar.
    unit : str
        Name of a step, shown with the rate.
    enabled : bool
        ``False`` prints nothing (nor does dask config ``rv2dist.progress: false``).
    stream : file, optional
        Default ``sys.stderr``.

    Attributes
    ----------
    detail : str
        Shown after the bar (what is running); set it, then ``update(0)``.
    """

    def __init__(self, total, label="", *, unit="it", enabled=True, stream=None):
        from tqdm import tqdm

        self.total, self.label, self.unit = total, label, unit
        self.enabled = shown(enabled)
        self.stream = stream or sys.stderr
        self.done = 0
        self.detail = ""
        self._start = time.perf_counter()
        self._tenths = -1
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True,
                         leave=True) if self.enabled and interactive else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, steps=1):
        self.done += steps
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.detail, refresh=False)
            self._bar.update(steps)
            if not steps:
                self._bar.refresh()
        elif self.total:
            tenths = int(10 * self.done / self.total)
            if tenths > self._tenths:
                self._tenths = tenths
                print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """The bar as one line of text, as tqdm formats it (count, rate, elapsed, ETA)."""
        from tqdm import tqdm

        # no width: a log line is never cut (a fixed one would clip long labels and details)
        return tqdm.format_meter(self.done, self.total, time.perf_counter() - self._start, ncols=None,
                                 prefix=self.label, unit=self.unit, postfix=self.detail or None, ascii=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()


class JobBar:
    """A job's bar of comparisons, with the running ones' share of tasks done after it
    (``"a__b 40%, a__c 10%"``; three at most); shown only when ``enabled``."""

    SHOWN = 3

    def __init__(self, enabled=True, stream=None):
        self.enabled, self.stream = shown(enabled), stream
        self.bar = None
        self.tasks = {}

    def attach(self, events: JobEvents) -> None:
        events.subscribe(JobStarted, self.started)
        events.subscribe(ComparisonStarted, self.started_comparison)
        if self.enabled:  # the counts cost a call to the scheduler per poll
            events.subscribe(TaskProgress, self.running)
        events.subscribe(ComparisonFinished, self.step)
        events.subscribe(ComparisonFailed, self.step)
        events.subscribe(JobFinished, self.close)
        events.subscribe(JobInterrupted, self.close)

    def started(self, event: JobStarted) -> None:
        self.bar = ProgressBar(len(event.todo), f"job {event.job.name}", unit="comparison",
                               enabled=self.enabled and bool(event.todo), stream=self.stream)

    def started_comparison(self, event: ComparisonStarted) -> None:
        self.tasks[event.comparison] = event.tasks

    def running(self, event: TaskProgress) -> None:
        running = [(c, tasks) for c, tasks in self.tasks.items() if tasks.token in event.done]
        self.bar.detail = ", ".join(f"{c.name} {100 * event.done[tasks.token] // max(1, tasks.total)}%"
                                    for c, tasks in running[:self.SHOWN]) + (" ..." if len(running) > self.SHOWN else "")
        self.bar.update(0)

    def step(self, event) -> None:
        self.tasks.pop(event.comparison, None)
        self.bar.update()

    def close(self, event=None) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskBar(ProgressBar):
    """A bar of one lazy result's tasks (:class:`~rv2dist.service.events.Tasks`), moved
    by :class:`~rv2dist.service.events.TaskProgress`."""

    def __init__(self, tasks: Tasks, label="", *, enabled=True, stream=None):
        super().__init__(tasks.total, label, unit="task", enabled=enabled, stream=stream)
        self.token = tasks.token

    def attach(self, events: JobEvents) -> None:
        if self.enabled:  # the counts cost a call to the scheduler per poll
            events.subscribe(TaskProgress, self.moved)

    def moved(self, event: TaskProgress) -> None:
        if self.token in event.done:
            self.update(event.done[self.token] - self.done)


def shown(enabled=True) -> bool:
    """Whether progress output shows: ``enabled`` (a call's ``progress=``; ``rv2dist -q``
    passes False) and dask config ``rv2dist.progress`` (default true) for the process."""
    import dask

    return bool(enabled) and bool(dask.config.get("rv2dist.progress", True))


def announce_cost(plan, enabled=True, stream=None):
    """Print the plan's cost line (:func:`rv2dist.planning.plan.cost_line`) on ``stream``
    (default stderr) when progress output is :func:`shown` and the work passes
    :data:`rv2dist.api.COST_LINE_FLOP`."""
    from rv2dist.api import COST_LINE_FLOP
    from rv2dist.planning.plan import cost_line

    if shown(enabled) and plan.total_flops >= COST_LINE_FLOP:
        print(cost_line(plan), file=stream or sys.stderr, flush=True)
