"""Timing helper shared by the benchmarks."""

import statistics
import time


def run_times(func, repeat):
    """Run ``func`` ``repeat`` times; return (list of seconds, last value)."""
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - start)
    return times, value


def timed(func, repeat):
    """Run ``func`` ``repeat`` times; return (best seconds, median seconds, last value)."""
    times, value = run_times(func, repeat)
    return min(times), statistics.median(times), value


def timed_warm(func):
    """Seconds of the second of two consecutive calls of ``func`` (the first warms what
    the second reuses: caches, and memory the first just freed)."""
    func()
    start = time.perf_counter()
    func()
    return time.perf_counter() - start
