"""What happens while a job runs, as events, and the bus that hands them out.

The runner (:mod:`rv2dist.service.runner`) and the ``compare`` verb only emit; what is
shown or written about the work subscribes: the lines on the terminal
(:mod:`~rv2dist.service.console`), the progress bars (:mod:`~rv2dist.service.progress`),
the live page on the scheduler (:mod:`~rv2dist.service.live`) and ``report.html``
(:mod:`~rv2dist.service.report`).  A subscriber is any object with an
``attach(events)`` method that subscribes its handlers::

    class Timer:
        def attach(self, events):
            events.subscribe(JobStarted, lambda event: ...)
            events.subscribe(JobFinished, lambda event: ...)

Handlers run in the emitting thread, in the order they subscribed, and an error in
one is the job's error (a report that cannot be written fails the job, as a result
that cannot be written does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scheduler loads this module with the board: it stays light
    from rv2dist.service.jobfile import Comparison, Job


@dataclass(frozen=True)
class Tasks:
    """The tasks of one lazy result: the token in their keys, and how many there are."""

    token: str
    total: int


@dataclass(frozen=True)
class JobStarted:
    """The job's comparisons are known: ``kept`` were done before with the same inputs
    and parameters (``{comparison: result}``; the heatmaps of ``redrawn`` among them
    were missing and are drawn again), ``todo`` are computed now.  ``networks`` maps
    the job's network names to their stores' own, ``plans`` each comparison to the
    printout of its plan."""

    job: Job
    networks: Mapping[str, str]
    kept: Mapping[Comparison, object]
    redrawn: tuple[Comparison, ...]
    todo: tuple[Comparison, ...]
    plans: Mapping[Comparison, str]


@dataclass(frozen=True)
class CheckingInputs:
    """The stores of kept results (``networks``) are read against their checksums."""

    networks: tuple[str, ...]


@dataclass(frozen=True)
class ComparisonQueued:
    """``comparison`` is computed this run; ``reason`` says what changed since its
    result was written (None: it has none)."""

    comparison: Comparison
    reason: str | None


@dataclass(frozen=True)
class ComparisonStarted:
    """``comparison``'s graph is built and goes to the cluster next: ``tasks`` says how
    to count its tasks."""

    comparison: Comparison
    tasks: Tasks


@dataclass(frozen=True)
class TaskProgress:
    """Finished tasks so far, by token (:class:`Tasks`), of the graphs still running."""

    done: Mapping[str, int]


@dataclass(frozen=True)
class ComparisonFinished:
    """``comparison``'s ``result`` is written to ``path``, ``seconds`` after submission."""

    comparison: Comparison
    result: object
    path: Path
    seconds: float


@dataclass(frozen=True)
class ComparisonFailed:
    """``comparison`` failed; ``error`` says how (its type and message)."""

    comparison: Comparison
    error: str


@dataclass(frozen=True)
class JobFinished:
    """Every comparison has finished or failed (``status`` "finished" or "failed");
    ``results`` holds the job's current results (kept and new), ``seconds`` the new
    ones' times, ``combined`` the path of all results in one file (None: none)."""

    status: str
    results: Mapping[Comparison, object]
    seconds: Mapping[Comparison, float]
    combined: Path | None


@dataclass(frozen=True)
class JobInterrupted:
    """The job stopped before its end (Ctrl-C, a lost cluster, an error)."""

    error: BaseException


@dataclass(frozen=True)
class ReportWritten:
    """``report.html`` is at ``path`` (emitted by :class:`~rv2dist.service.report.Report`)."""

    path: Path


class JobEvents:
    """The bus: handlers subscribe to an event type; :meth:`emit` calls those of the
    event's type in the order they subscribed."""

    def __init__(self):
        self._handlers: dict[type, list[Callable]] = {}

    def subscribe(self, kind: type, handler: Callable) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def wants(self, kind: type) -> bool:
        """Whether any handler listens to ``kind`` (to skip work only they need)."""
        return bool(self._handlers.get(kind))

    def emit(self, event) -> None:
        for handler in self._handlers.get(type(event), ()):
            handler(event)
