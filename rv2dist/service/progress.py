"""The one progress bar of rv2dist, drawn by tqdm: redrawn in place with an ETA on a
terminal, and a line every tenth of the way otherwise (logs, CI), in the same format;
and the line a long job prints of its cost before it starts."""

from __future__ import annotations

import sys
import time

# switched off for the whole process by ``rv2dist -q``
ENABLED = True


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
        ``False`` prints nothing.
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
        self.enabled = enabled and ENABLED
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


def announce_cost(plan, enabled=True, stream=None):
    """Print the plan's cost line (:func:`rv2dist.planning.plan.cost_line`) on ``stream``
    (default stderr) when ``enabled``, the process's progress output is on (``rv2dist
    -q`` turns it off) and the work passes :data:`rv2dist.api.COST_LINE_FLOP`."""
    from rv2dist.api import COST_LINE_FLOP
    from rv2dist.planning.plan import cost_line

    if enabled and ENABLED and plan.total_flops >= COST_LINE_FLOP:
        print(cost_line(plan), file=stream or sys.stderr, flush=True)
