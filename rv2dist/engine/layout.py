"""How a job's inputs become the row chunks its tasks take: views of in-memory arrays
(never copied), keys of a dask array's chunks, or rows of a store that each task reads
itself; moved to the worker's GPU once when the job runs there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InputLayer:
    """One layer of a job: its name, its array ``(n_obs, ...)`` (numpy, dask or CuPy)
    and, when the array is a store's layer read as it is, ``rows``: a
    :class:`~rv2dist.engine.taskgraph.RowSource` per row chunk of the plan, which the
    tasks using them read themselves (the plan's ``reads="in-task"``)."""

    name: str
    array: Any
    rows: tuple | None = None


def is_dask(x) -> bool:
    return type(x).__module__.startswith("dask.") and hasattr(x, "chunks")


def backend(array) -> str:
    """Top-level module of the array's chunk type ("numpy", "cupy", ...)."""
    return type(getattr(array, "_meta", array)).__module__.split(".")[0]


def input_row_chunks(layers):
    """The row chunking all layers share when every one is a dask array with the same
    one (a store's), else None."""
    chunkings = {tuple(layer.array.chunks[0]) for layer in layers if is_dask(layer.array)}
    if len(chunkings) == 1 and all(is_dask(layer.array) for layer in layers):
        return chunkings.pop()
    return None


def _as_float(block):
    return block if block.dtype.kind == "f" else block.astype(np.float64)


def _row_chunk_list(array, row_chunks):
    """The row chunks ``(rows, units)`` of one layer as laid out by ``row_chunks``:
    views of an in-memory array, or the task keys of a dask array's chunks; and the
    dask collection those keys belong to (or None)."""
    if is_dask(array):
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim > 2:
            array = array.rechunk({i: -1 for i in range(1, array.ndim)}).reshape(array.shape[0], -1)
        array = array.rechunk({0: row_chunks, 1: -1})
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        return [(array.name, c, 0) for c in range(len(row_chunks))], array
    array = array.reshape(array.shape[0], -1)
    bounds = np.cumsum((0,) + tuple(row_chunks))
    return [_as_float(array[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])], None


def _same(value):
    return value


def _to_gpu(block):
    import cupy

    return cupy.asarray(block)


class Layouts:
    """The chunk lists of a job's layers for each row chunking its plans use, made once
    each; the dask collections they read are gathered in ``collections``.

    Parameters
    ----------
    graph : rv2dist.engine.taskgraph.TaskGraph
    layers : sequence of InputLayer
        Both sides, in plan order.
    plan : rv2dist.planning.plan.Plan
        The job's plan: its row chunks take stored rows as the layers give them; with
        resampling, in-memory chunks become tasks of their own, which the many tasks of
        the replicates refer to instead of each carrying a copy.
    """

    def __init__(self, graph, layers, plan):
        self.graph, self.layers, self.plan = graph, list(layers), plan
        self.collections = []
        self._made = {}

    def chunks(self, row_chunks):
        """Per layer, its row chunks laid out by ``row_chunks``."""
        if row_chunks not in self._made:
            self._made[row_chunks] = self._lay_out(row_chunks, len(self._made))
        return self._made[row_chunks]

    def _lay_out(self, row_chunks, index):
        chunks = []
        for i, layer in enumerate(self.layers):
            if layer.rows is not None and row_chunks == self.plan.row_chunks:
                chunks.append(list(layer.rows))
                continue
            layer_chunks, collection = _row_chunk_list(layer.array, row_chunks)
            if self.plan.resampling and collection is None:
                layer_chunks = [self.graph.add(f"rows-{index}", (i, c), _same, chunk)
                                for c, chunk in enumerate(layer_chunks)]
            chunks.append(layer_chunks)
            self.collections += [collection] if collection is not None else []
        if self.plan.device == "gpu" and not all(backend(layer.array) == "cupy" for layer in self.layers):
            # chunks are read on the host and moved to the worker's GPU once
            label = f"-{index}" if index else ""
            chunks = [[self.graph.add(f"to-device{label}", (i, c), _to_gpu, chunk) for c, chunk in enumerate(layer)]
                      for i, layer in enumerate(chunks)]
        return chunks
