"""The lines a job prints as it runs: what it skips and why it recomputes, each
comparison done or failed, and where its files are."""

from __future__ import annotations

from rv2dist.service.events import (CheckingInputs, ComparisonFailed, ComparisonFinished, ComparisonQueued,
                                    JobEvents, JobFinished, JobStarted, ReportWritten)


class Console:
    """A job's events as lines on ``stream`` (a text file), flushed as they come."""

    def __init__(self, stream):
        self.stream = stream
        self.job = None
        self.todo, self.done = 0, 0

    def attach(self, events: JobEvents) -> None:
        events.subscribe(JobStarted, self.started)
        events.subscribe(CheckingInputs, lambda event: self.say(
            f"  check {', '.join(event.networks)}: every chunk against its checksum (results kept rest on them)"))
        events.subscribe(ComparisonQueued, self.queued)
        events.subscribe(ComparisonFinished, self.finished)
        events.subscribe(ComparisonFailed, lambda event: self.say(f"  FAILED {event.comparison.name}: {event.error}"))
        events.subscribe(JobFinished, self.job_finished)
        events.subscribe(ReportWritten, lambda event: self.say(f"  report (opens without the cluster): {event.path}"))

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def started(self, event: JobStarted) -> None:
        self.job, self.todo = event.job, len(event.todo)
        self.say(f"job {self.job.name}: {len(self.job.comparisons)} comparisons; {len(event.kept)} done before "
                 f"(inputs and parameters unchanged), {self.todo} to compute")
        for comparison in event.kept:
            self.say(f"  skip {comparison.name}: done, {self.job.result_path(comparison)}")
            if comparison in event.redrawn:
                self.say(f"  drew {self.job.plot_path(comparison)}, which was missing")

    def queued(self, event: ComparisonQueued) -> None:
        if event.reason is not None:
            path = self.job.result_path(event.comparison)
            self.say(f"  recompute {event.comparison.name}: {event.reason} since {path} was written")

    def finished(self, event: ComparisonFinished) -> None:
        from rv2dist.engine.assemble import degenerate_message, shifted_message, undefined_message

        self.done += 1
        name = event.comparison.name
        self.say(f"  done {name} ({self.done}/{self.todo}): {event.path}")
        # what a call's warnings say, once per comparison
        for message in (undefined_message(event.result), shifted_message(event.result),
                        degenerate_message(event.result)):
            if message:
                self.say(f"  note {name}: {message}")

    def job_finished(self, event: JobFinished) -> None:
        if event.combined is not None:
            self.say(f"  all results in one file: {event.combined} (rv2dist.open_results({str(self.job.out)!r}))")
