"""Working arrays kept between tasks, and for a while after a job.

A fresh array costs a page fault on each of its pages, and on a virtual machine that
hands free memory back to its host a fault costs more than the work done on the page
(measured on this project's developer VM: stored chunks decoded into kept arrays at
1,155 MiB/s, into fresh ones at 360 MiB/s).  So the arrays stored rows are read into, and
on the local scheduler the slabs the products are computed from, are lent from one pool
per process and given back when their task is done: a thread lends at most one task's
arrays at a time, so a thread keeps about one task's working memory, which its tasks use
anyway.  A distributed worker keeps only its read buffers, since its memory limit counts
kept arrays as unmanaged memory.

After a job the pool keeps the arrays that job used, for ``rv2dist.keep-buffers``
seconds of dask config (default 30; 0 frees them when the job ends), so a loop of jobs
reuses warm memory; :func:`release_buffers` frees them at once.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import weakref

import numpy as np

DEFAULT_KEEP_SECONDS = 30


class KeptBuffers:
    """C-ordered arrays lent to one task at a time and kept, per thread, for the next."""

    def __init__(self):
        self._lock = threading.Lock()
        self._free = {}
        # arrays lent since the last job ended: the ones kept after it
        self._used = set()
        # arrays lent to tasks' results, with their keys
        self._outstanding = []
        self._release_timer = None

    def lend(self, shape, dtype):
        """A C-ordered array of ``shape`` and ``dtype`` (contents undefined): a view of the
        first rows of a kept one that has enough rows, else a new one, which replaces the
        kept ones too short to serve (a short last chunk's, taken first)."""
        key = (threading.get_ident(), tuple(shape[1:]), np.dtype(dtype).str)
        with self._lock:
            return self._take(key, shape, dtype)[: shape[0]]

    def lend_result(self, shape, dtype):
        """As :meth:`lend`, for an array its task returns: it comes back by itself once
        nothing refers to it (no result, view or message in flight).

        The rows are lent as a view of an array made on a memoryview of the kept one:
        numpy gives every view taken from it that array as its base (it does not look
        past a base that is no ndarray), so a weak reference to it lives exactly as long
        as anything that can reach the memory, whatever the interpreter counts."""
        key = (threading.get_ident(), tuple(shape[1:]), np.dtype(dtype).str)
        with self._lock:
            self._reclaim()
            whole = self._take(key, shape, dtype)
            lent = np.asarray(memoryview(whole))
            self._outstanding.append((key, whole, weakref.ref(lent)))
        return lent[: shape[0]]

    def _take(self, key, shape, dtype):
        self._cancel_release()
        kept = self._free.get(key, [])
        fitting = [i for i, array in enumerate(kept) if array.shape[0] >= shape[0]]
        if fitting:
            array = kept.pop(min(fitting, key=lambda i: kept[i].shape[0]))
        else:
            self._free.pop(key, None)
            array = np.empty(shape, dtype=dtype)
        self._used.add(id(array))
        return array

    def _reclaim(self):
        """Keep again the returned arrays nothing refers to any more."""
        outstanding = []
        for key, whole, lent in self._outstanding:
            if lent() is not None:
                outstanding.append((key, whole, lent))
            else:
                self._free.setdefault(key, []).append(whole)
        self._outstanding = outstanding

    def give_back(self, array):
        """Keep ``array`` (or the array it is a row view of) for this thread's next task."""
        whole = array
        while whole.base is not None:
            whole = whole.base
        key = (threading.get_ident(), tuple(whole.shape[1:]), whole.dtype.str)
        with self._lock:
            self._free.setdefault(key, []).append(whole)

    def job_finished(self, keep_seconds):
        """Drop the kept arrays no task lent since the last job ended (other shapes); free
        the rest after ``keep_seconds`` unless a task lends one before."""
        with self._lock:
            self._reclaim()
            self._free = {key: kept for key, kept in
                          ((key, [a for a in kept if id(a) in self._used]) for key, kept in self._free.items()) if kept}
            self._used = set()
            self._cancel_release()
            if keep_seconds > 0:
                self._release_timer = threading.Timer(keep_seconds, self.release)
                self._release_timer.daemon = True
                self._release_timer.start()
        if keep_seconds <= 0:
            self.release()

    def _cancel_release(self):
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None

    def release(self):
        """Drop every kept array, of every thread (arrays lent now are kept when given back)."""
        with self._lock:
            self._cancel_release()
            self._free.clear()
            self._used.clear()
            self._outstanding.clear()

    @property
    def nbytes(self):
        """Bytes kept, over all threads."""
        with self._lock:
            return sum(array.nbytes for kept in self._free.values() for array in kept)


KEPT_BUFFERS = KeptBuffers()


def keep_seconds() -> float:
    """Seconds the pool keeps a finished job's arrays (dask config ``rv2dist.keep-buffers``).

    Raises
    ------
    ValueError
        Naming the setting and its value, when that is not a duration of 0 or more:
        jobs read it before they start, so that a typo does not fail a finished job.
    """
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get("rv2dist.keep-buffers", DEFAULT_KEEP_SECONDS)
    try:
        seconds = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError, AttributeError):
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"dask config 'rv2dist.keep-buffers' is {value!r}: give the seconds to keep a job's "
                         "working arrays, as a number (30) or a duration ('30s', '2min'); 0 frees them when "
                         "each job ends")
    return seconds


def job_finished(client=None, seconds=None):
    """The end of a job that finished: keep its arrays for ``seconds`` (default
    :func:`keep_seconds`), in this process and on every worker of ``client``; after a
    failure the workers keep theirs until the next job ends, rather than the user wait
    on a cluster that may be gone."""
    seconds = keep_seconds() if seconds is None else seconds
    _job_finished_here(seconds)
    _on_workers(client, _job_finished_here, seconds)


def _job_finished_here(seconds):
    KEPT_BUFFERS.job_finished(seconds)


def finish_job(result, seconds):
    """The last task of a job computed later (``compute=False``): ``result``, once the
    job has ended on the local scheduler.  A distributed worker's read buffers wait for
    the end a client announces to every worker (as the command line and jobs do)."""
    if not on_worker():
        KEPT_BUFFERS.job_finished(seconds)
    return result


def on_worker() -> bool:
    """Whether this runs in a task on a distributed worker (else the local scheduler)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def release_buffers(client=None):
    """Free the kept working arrays now, in this process and on every worker of ``client``."""
    KEPT_BUFFERS.release()
    _on_workers(client, release_buffers)


def _on_workers(client, func, *args):
    """``func(*args)`` on every worker of a running ``client``; a cluster gone is no error."""
    if client is not None and client.status == "running":
        with contextlib.suppress(Exception):
            client.run(func, *args)
