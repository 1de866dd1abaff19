"""A whole job as one dask graph: every statistic set, every resampling pass and the
result's assembly, built from a :class:`~rv2dist.planning.plan.Plan`.

Every row chunk of every layer is read once and serves every product it belongs to;
all sums over observations are tree reductions of float64 partials.
"""

from __future__ import annotations

from rv2dist.engine.assemble import assemble
from rv2dist.engine.blocks_graph import job_block_values, permuted_block_values
from rv2dist.engine.buffers import finish_job
from rv2dist.engine.feature_graph import blas_setting, chunk_totals, statistics_of, statistics_tag
from rv2dist.engine.layout import Layouts, is_dask
from rv2dist.engine.resampling_graph import bootstrap_statistics, permuted_statistics
from rv2dist.engine.statistics_graph import build_statistics
from rv2dist.engine.taskgraph import TaskGraph


def inputs_token(layers):
    """Names the inputs in task keys: dask arrays by their names, in-memory arrays by a
    random token (hashing every byte would cost as much as a pass of the products)."""
    import uuid

    from dask.base import tokenize

    return tokenize([layer.array.name if is_dask(layer.array) else uuid.uuid4().hex for layer in layers])


def _statistics(graph, chunks, plan, spec, flag):
    """Keys of one statistic set of the job: its statistics and, for the centred set of
    a job asking for second-moment measures, ``(layer decompositions, values)``."""
    if not (flag and spec.block_measures):
        return build_statistics(graph, chunks, plan, flag), None
    tag = statistics_tag(flag, "")
    totals = chunk_totals(graph, chunks, plan, flag, tag)
    return statistics_of(graph, totals, plan, flag, tag), job_block_values(graph, totals, plan, spec, tag)


def _resampled(graph, layouts, plan, spec, layers):
    """Keys of the permuted and bootstrap statistics and of their second-moment values,
    ``{kind: ([keys per statistic set], [value keys per statistic set])}``; ``layers``
    the key of the job's layer decompositions (None without second-moment measures)."""
    chunks = layouts.chunks(plan.row_chunks)
    la, seed = plan.n_layers_a, spec.resampling.seed
    resampled = {}
    for sub in plan.resampling:
        sub_chunks = layouts.chunks(sub.plan.row_chunks)
        passes = []
        for flag in spec.flags:
            with_blocks = layers is not None and flag
            if sub.kind == "permutation":
                blocks = ((lambda totals, tag, sub=sub: permuted_block_values(graph, totals, sub.plan, plan, spec,
                                                                                layers, tag)) if with_blocks else None)
                # b's rows are gathered from the job's own chunks (a's second copy in a self job)
                chunks_b = chunks[:la] if plan.self_job else chunks[la:]
                passes.append(permuted_statistics(graph, sub_chunks[:la], chunks_b, sub.plan, flag, seed, sub.count,
                                                  blocks))
            else:
                blocks = ((lambda totals, tag, sub=sub: job_block_values(graph, totals, sub.plan, spec, tag)[1])
                          if with_blocks else None)
                passes.append(bootstrap_statistics(graph, sub_chunks, sub.plan, flag, seed, sub.count, blocks))
        resampled[sub.kind] = ([keys for keys, _ in passes], [values for _, values in passes])
    return resampled


def job_graph(layers, plan, spec, *, annotations=None, finish_seconds=None):
    """The :class:`dask.delayed.Delayed` of a job's result.

    Parameters
    ----------
    layers : sequence of rv2dist.engine.layout.InputLayer
        Both sides' layers, in plan order.
    plan : rv2dist.planning.plan.Plan
    spec : rv2dist.engine.assemble.ResultSpec
    annotations : dict, optional
        Dask annotations of every task (e.g. ``{"resources": {"GPU": 1}}``).
    finish_seconds : float, optional
        For a result computed later: its last task ends the job, keeping its working
        arrays this many seconds (see :func:`rv2dist.engine.buffers.finish_job`).
    """
    import contextlib

    import dask
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    blas_setting()  # a bad value is named whichever route the job takes
    graph = TaskGraph(inputs_token(layers))
    layouts = Layouts(graph, layers, plan)
    sets = [_statistics(graph, layouts.chunks(plan.row_chunks), plan, spec, flag) for flag in spec.flags]
    layers_key = next((blocks[0] for _, blocks in sets if blocks is not None), None)
    resampled = _resampled(graph, layouts, plan, spec, layers_key)
    final = graph.add_bound("result", (), assemble, dict(spec=spec, plan=plan),
                            statistics=[statistics for statistics, _ in sets],
                            block_values=next((blocks[1] for _, blocks in sets if blocks is not None), None),
                            kinds=list(resampled), resampled=[keys for keys, _ in resampled.values()],
                            resampled_values=[values for _, values in resampled.values()])
    if finish_seconds is not None:
        # computed by whoever, the job's end still starts the clock on its kept arrays
        final = graph.add("job-end", (), finish_job, final, finish_seconds)
    with dask.annotate(**annotations) if annotations else contextlib.nullcontext():
        layer = HighLevelGraph.from_collections(final[0], graph.tasks, dependencies=layouts.collections)
    return Delayed(final, layer, layer=final[0])
