"""A small text progress bar on stderr (no dependency): redrawn in place on a terminal,
a line every tenth of the way otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time


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
    """

    def __init__(self, total, label="", *, unit="it", enabled=True, stream=None):
        self.total = total
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.detail = ""
        self._start = time.perf_counter()
        self._drawn_at = 0.0
        self._tenths = -1
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, steps=1, *, force=False):
        self.done += steps
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._interactive:
            if force or now - self._drawn_at > 0.2:
                self._drawn_at = now
                print("\r" + self.line() + "\x1b[K", end="", file=self.stream, flush=True)
        elif self.total:
            tenths = int(10 * self.done / self.total)
            if tenths > self._tenths or force:
                self._tenths = tenths
                print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        detail = f" | {self.detail}" if self.detail else ""
        if self.total:
            filled = int(30 * min(1.0, self.done / self.total))
            bar = "#" * filled + "-" * (30 - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total} {rate:,.1f} {self.unit}/s {elapsed:.1f}s{detail}"
        return f"{self.label} {self.done} {self.unit} {rate:,.1f} {self.unit}/s {elapsed:.1f}s{detail}"

    def close(self):
        if self.enabled and self._interactive:
            print("\r" + self.line() + "\x1b[K", file=self.stream, flush=True)
