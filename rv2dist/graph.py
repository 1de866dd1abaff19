"""One dask graph for a whole job, built from a :class:`~rv2dist.plan.Plan`.

Every row chunk of every layer is read once and serves every product it belongs to;
all sums over observations are tree reductions of float64 partials.  The graph is a
plain task mapping (built in one pass, without per-call collection merging), wrapped
in a :class:`dask.delayed.Delayed`; nothing runs until that is computed.
"""

from __future__ import annotations

from . import kernels
from .plan import SPLIT_EVERY


class TaskGraph:
    """A task mapping under construction; keys are ``("rv2dist-<what>-<token>", ...)``."""

    def __init__(self, token):
        self.token = token
        self.tasks = {}

    def add(self, what, index, func, *args):
        key = (f"rv2dist-{what}-{self.token}",) + tuple(index)
        self.tasks[key] = (func, *args)
        return key

    def tree(self, what, parts):
        """Reduce ``parts`` with :func:`kernels.combine` in a tree of fan-in SPLIT_EVERY."""
        level = 0
        while len(parts) > 1:
            parts = [
                self.add(what, (level, i), kernels.combine, list(parts[i : i + SPLIT_EVERY]))
                for i in range(0, len(parts), SPLIT_EVERY)
            ]
            level += 1
        return parts[0]


def _shifts(graph, chunks, dtype, center, tag):
    if not center:
        return [None] * len(chunks)
    return [graph.add(f"shift{tag}", (i,), kernels.first_rows_mean, layer[0], dtype) for i, layer in enumerate(chunks)]


def feature_statistics(graph, chunks, plan, center):
    """Key of the feature route's statistics (see :func:`kernels.feature_statistics`)."""
    tag = "-centred" if center else ""
    shifts = _shifts(graph, chunks, plan.compute_dtype, center, tag)
    blocks = [tuple(block) for block in plan.blocks]
    totals = []
    for g, group in enumerate(plan.product_groups):
        products = [(p.row_block, p.row_range, p.col_block, p.col_range) for p in plan.products[group[0]:group[1]]]
        parts = [
            graph.add(f"chunk{tag}", (c, g), kernels.chunk_sums, [layer[c] for layer in chunks], blocks, shifts,
                      plan.compute_dtype, products, plan.n_layers, g == 0, plan.sub_rows)
            for c in range(len(plan.row_chunks))
        ]
        totals.append(graph.tree(f"sum{tag}-{g}", parts))
    return graph.add(
        f"statistics{tag}", (), kernels.feature_statistics, totals,
        [(p.row_pieces, p.col_pieces) for p in plan.products], [p.mirrored for p in plan.products],
        shifts, center,
    )


def gram_statistics(graph, chunks, plan, center):
    """Key of the gram route's statistics (see :func:`kernels.gram_statistics`)."""
    tag = "-centred" if center else ""
    shifts = _shifts(graph, chunks, "float64", center, tag)
    rows = [[layer[c] for layer in chunks] for c in range(len(plan.row_chunks))]
    summary = graph.tree(
        f"summary-sum{tag}",
        [graph.add(f"summary{tag}", (c,), kernels.column_summary, row, shifts) for c, row in enumerate(rows)],
    )
    if center:
        means = graph.add(f"means{tag}", (), kernels.column_means, summary, shifts)
    else:
        means = [None] * len(chunks)
    prepared = [
        graph.add(f"prepare{tag}", (c,), kernels.gram_prepare, row, means, plan.compute_dtype)
        for c, row in enumerate(rows)
    ]
    tiles = [
        graph.add(f"tile{tag}", (i, j), kernels.gram_tile, prepared[i], prepared[j], i == j)
        for i in range(len(rows))
        for j in range(i, len(rows))
    ]
    diagonal = [graph.add(f"diagonal{tag}", (c,), _diagonal_part, p) for c, p in enumerate(prepared)]
    return graph.add(
        f"statistics{tag}", (), kernels.gram_statistics, summary, shifts,
        graph.tree(f"tile-sum{tag}", tiles), graph.tree(f"diagonal-sum{tag}", diagonal), center,
    )


def _diagonal_part(prepared):
    return {"norm_outer": prepared["norm_outer"], "norm_sum": prepared["norm_sum"]}


ROUTE_BUILDERS = {"feature": feature_statistics, "gram": gram_statistics}


def build_statistics(graph, chunks, plan, center):
    """Add the tasks of all layer pairs' sufficient statistics; return their key.

    Parameters
    ----------
    graph : TaskGraph
    chunks : sequence of sequence
        Per layer of both sides in plan order, its row chunks ``(rows, units)`` as laid
        out by ``plan.row_chunks``: in-memory arrays or keys of tasks that make them.
    plan : Plan
    center : bool
        Centre columns before the products.
    """
    return ROUTE_BUILDERS[plan.route](graph, chunks, plan, center)


def to_device(graph, chunks, move):
    """Chunks moved by ``move`` (e.g. to the worker's GPU) once each, as task keys."""
    return [[graph.add("to-device", (i, c), move, chunk) for c, chunk in enumerate(layer)]
            for i, layer in enumerate(chunks)]
