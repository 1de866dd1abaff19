"""The statistics of every layer pair, by the plan's route: the builder the route's
record names (see :mod:`rv2dist.planning.routes`)."""

from __future__ import annotations

import importlib

from rv2dist.planning.routes import ROUTES


def _builder(route):
    module, function = ROUTES[route].graph.split(":")
    return getattr(importlib.import_module(module), function)


def build_statistics(graph, chunks, plan, center, label=""):
    """Add the tasks of all layer pairs' sufficient statistics; return their key.

    Parameters
    ----------
    graph : rv2dist.engine.taskgraph.TaskGraph
    chunks : sequence of sequence
        Per layer of both sides in plan order, its row chunks ``(rows, units)`` as laid
        out by ``plan.row_chunks``: in-memory arrays, keys of tasks that make them, or
        :class:`~rv2dist.engine.taskgraph.RowSource` s.
    plan : rv2dist.planning.plan.Plan
    center : bool
        Centre columns before the products.
    label : str
        Distinguishes the task keys of several statistics of one job.
    """
    return _builder(plan.route)(graph, chunks, plan, center, label)
