"""The feature route's graph: per row chunk the cross-products of every layer pair,
summed over chunks in float64 trees, then the statistics of every pair.

Every row chunk of every layer serves every product it belongs to in one task per
product group (a stored chunk with one consumer is read by that task, so no chunk
moves between workers).
"""

from __future__ import annotations

from rv2dist.core import feature, feature_totals, host_blas
from rv2dist.engine.buffers import KEPT_BUFFERS, on_worker
from rv2dist.engine.taskgraph import head, reading


def _first_rows_mean(chunk, dtype):
    with reading([chunk]) as (rows,):
        return feature.first_rows_mean(rows, dtype)


def shifts(graph, chunks, dtype, center, tag):
    """Keys of each layer's centring shift (the mean of its first rows), or Nones."""
    if not center:
        return [None] * len(chunks)
    return [graph.add(f"shift{tag}", (i,), _first_rows_mean, head(layer[0], feature.SHIFT_ROWS), dtype)
            for i, layer in enumerate(chunks)]


def _chunk_sums(chunks, **arguments):
    # a distributed worker keeps only its read buffers: its memory limit counts kept
    # arrays as unmanaged memory, and the results waiting for a reduction need the room
    slabs = None if on_worker() else KEPT_BUFFERS
    with reading(chunks) as arrays:
        return feature.chunk_sums(arrays, buffers=slabs, **arguments)


def blas_setting():
    """The host BLAS of cross-products (dask config ``rv2dist.blas``: ``"auto"``,
    ``"numpy"`` or ``"torch"``; see :func:`rv2dist.core.host_blas.cross_matmul`)."""
    import dask

    return host_blas.check_blas(dask.config.get("rv2dist.blas", "auto"))


def _moments(group, center, plan):
    """What the chunk tasks of product group ``group`` sum besides the products."""
    if group:
        return "none"
    return "column-sums" if center or plan.column_sums else "row-norms"


def chunk_totals(graph, chunks, plan, center, tag, weights=None, shift_keys=None):
    """Keys of the feature route's totals: per product group, the chunks' sums (products
    and, in the first group, moments) added over every row chunk in a float64 tree.

    Parameters
    ----------
    graph : rv2dist.engine.taskgraph.TaskGraph
    chunks : sequence of sequence
        Per layer of both sides in plan order, its row chunks as laid out by
        ``plan.row_chunks``.
    plan : rv2dist.planning.plan.Plan
    center : bool
        Centre columns before the products.
    tag : str
        Distinguishes the task keys of several statistics of one job.
    weights : list, optional
        Per row chunk, the key of its rows' weights (a bootstrap replicate).
    shift_keys : list, optional
        The centring shifts' keys, when other statistics already have them.
    """
    shift_keys = shift_keys or shifts(graph, chunks, plan.compute_dtype, center, tag)
    blas = blas_setting()
    weights = weights or [None] * len(plan.row_chunks)
    blocks = [tuple(block) for block in plan.blocks]
    totals = []
    for g, (start, stop) in enumerate(plan.product_groups):
        products = [(p.row_block, p.row_range, p.col_block, p.col_range) for p in plan.products[start:stop]]
        static = dict(blocks=blocks, dtype=plan.compute_dtype, products=products, n_layers=plan.n_layers,
                      moments=_moments(g, center, plan), sub_rows=plan.sub_rows, blas=blas)
        parts = [graph.add_bound(f"chunk{tag}", (c, g), _chunk_sums, static, chunks=[layer[c] for layer in chunks],
                                 shifts=shift_keys, weights=weights[c])
                 for c in range(len(plan.row_chunks))]
        totals.append(graph.tree(f"sum{tag}-{g}", parts))
    return totals


def statistics_of(graph, totals, plan, center, tag):
    """Key of the statistics of every layer pair from the totals (see
    :func:`rv2dist.core.feature_totals.feature_statistics`)."""
    static = dict(product_pieces=[(p.row_pieces, p.col_pieces) for p in plan.products],
                  mirrored=[p.mirrored for p in plan.products], center=center,
                  cubes="own-products" if center and plan.tests else "none")
    return graph.add_bound(f"statistics{tag}", (), feature_totals.feature_statistics, static, sums=totals)


def statistics_tag(center, label):
    """The task-key tag of a statistic set."""
    return ("-centred" if center else "") + label


def feature_statistics(graph, chunks, plan, center, label="", weights=None, shift_keys=None):
    """Key of the feature route's statistics (the arguments as :func:`chunk_totals`'s,
    ``label`` distinguishing the statistic sets of one job)."""
    tag = statistics_tag(center, label)
    return statistics_of(graph, chunk_totals(graph, chunks, plan, center, tag, weights, shift_keys), plan, center,
                         tag)
