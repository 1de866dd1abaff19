"""The task mapping a job's graph is built in, and how its tasks meet their inputs.

A graph is a plain task mapping (built in one pass, without per-call collection
merging), wrapped in a :class:`dask.delayed.Delayed` by :mod:`rv2dist.engine.build`;
nothing runs until that is computed.  A task's chunk is an in-memory array, the key of
a task that makes one, or a :class:`RowSource`: rows of a store that the task reads
itself, into an array lent by the process's pool of kept buffers.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Protocol, runtime_checkable

from rv2dist.core import xp
from rv2dist.engine.buffers import KEPT_BUFFERS
from rv2dist.planning.feature import SPLIT_EVERY


@runtime_checkable
class RowSource(Protocol):
    """Rows of a stored layer that the task using them reads (see
    :func:`rv2dist.io.chunks.stored_rows`)."""

    shape: tuple
    dtype: object

    def first_rows(self, count: int) -> RowSource:
        """The first ``count`` rows, as a source."""

    def read_into(self, out, pool=None) -> None:
        """Read the rows into ``out`` (C-ordered, of ``shape``), scratch lent by ``pool``."""


class TaskGraph:
    """A task mapping under construction; keys are ``("rv2dist-<what>-<token>", ...)``."""

    def __init__(self, token):
        self.token = token
        self.tasks = {}

    def add(self, what, index, func, *args):
        key = (f"rv2dist-{what}-{self.token}",) + tuple(index)
        self.tasks[key] = (func, *args)
        return key

    def add_bound(self, what, index, func, static, **dynamic):
        """Add ``func(**static, **dynamic)``.  ``static`` holds plain data only (no keys):
        bound into one partial, it is a single literal to dask, which would otherwise walk
        its nested lists (the plan's blocks and pieces) node by node on every compute;
        ``dynamic`` values may hold keys."""
        bound = functools.partial(_call_by_name, functools.partial(func, **static), tuple(dynamic))
        return self.add(what, index, bound, *dynamic.values())

    def tree(self, what, parts):
        """Reduce ``parts`` with :func:`rv2dist.core.xp.combine` in a tree of fan-in
        SPLIT_EVERY."""
        level = 0
        while len(parts) > 1:
            parts = [self.add(what, (level, i), xp.combine, list(parts[i : i + SPLIT_EVERY]))
                     for i in range(0, len(parts), SPLIT_EVERY)]
            level += 1
        return parts[0]


def _call_by_name(func, names, *values):
    return func(**dict(zip(names, values)))


def head(chunk, count):
    """The first ``count`` rows of a chunk to read; any other chunk as it is (its user
    takes the rows it needs)."""
    return chunk.first_rows(count) if isinstance(chunk, RowSource) else chunk


@contextlib.contextmanager
def reading(chunks):
    """The chunks as ``(rows, units)`` arrays: a :class:`RowSource` read here, in the
    task that uses it, into an array lent by the pool and given back when the block
    ends; any other chunk as it is."""
    lent = []
    try:
        arrays = []
        for chunk in chunks:
            if isinstance(chunk, RowSource):
                lent.append(KEPT_BUFFERS.lend(chunk.shape, chunk.dtype))
                chunk.read_into(lent[-1], KEPT_BUFFERS)
                chunk = lent[-1].reshape(lent[-1].shape[0], -1)
            arrays.append(chunk)
        yield arrays
    finally:
        for array in lent:
            KEPT_BUFFERS.give_back(array)
