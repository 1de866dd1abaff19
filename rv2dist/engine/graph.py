"""One dask graph for a whole job, built from a :class:`~rv2dist.planning.plan.Plan`.

Every row chunk of every layer is read once and serves every product it belongs to (a
stored chunk with one consumer is read by that task, so no chunk moves between
workers); all sums over observations are tree reductions of float64 partials.  The
graph is a plain task mapping (built in one pass, without per-call collection
merging), wrapped in a :class:`dask.delayed.Delayed`; nothing runs until that is
computed.
"""

from __future__ import annotations

import contextlib
import functools

from rv2dist.core import feature, feature_totals, gram, resampling, xp
from rv2dist.engine.buffers import KEPT_BUFFERS, on_worker
from rv2dist.planning.plan import SPLIT_EVERY, block_triples


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
        """Reduce ``parts`` with :func:`xp.combine` in a tree of fan-in SPLIT_EVERY."""
        level = 0
        while len(parts) > 1:
            parts = [
                self.add(what, (level, i), xp.combine, list(parts[i : i + SPLIT_EVERY]))
                for i in range(0, len(parts), SPLIT_EVERY)
            ]
            level += 1
        return parts[0]


def _shifts(graph, chunks, dtype, center, tag):
    if not center:
        return [None] * len(chunks)
    return [graph.add(f"shift{tag}", (i,), _first_rows_mean, _head(layer[0], feature.SHIFT_ROWS), dtype)
            for i, layer in enumerate(chunks)]


def _head(chunk, count):
    """The first ``count`` rows of a chunk given as a row range to read; else the chunk."""
    return chunk.first_rows(count) if hasattr(chunk, "first_rows") else chunk


@contextlib.contextmanager
def _reading(chunks):
    """The chunks as arrays: stored rows (see :func:`rv2dist.io.chunks.stored_rows`) read
    here, in the task that uses them, into a buffer lent by :data:`KEPT_BUFFERS` (which
    lends their scratch memory too) and given back when the block ends; any other chunk
    as it is."""
    arrays, lent = [], []
    try:
        for chunk in chunks:
            if hasattr(chunk, "read_into"):
                lent.append(KEPT_BUFFERS.lend(chunk.shape, chunk.dtype))
                chunk.read_into(lent[-1], KEPT_BUFFERS)
                arrays.append(lent[-1])
            else:
                arrays.append(chunk)
        yield arrays
    finally:
        for array in lent:
            KEPT_BUFFERS.give_back(array)


def _first_rows_mean(chunk, dtype):
    with _reading([chunk]) as (rows,):
        return feature.first_rows_mean(rows, dtype)


def _chunk_sums(chunks, **arguments):
    # a distributed worker keeps only its read buffers: its memory limit counts kept
    # arrays as unmanaged memory, and the results waiting for a reduction need the room
    slabs = None if on_worker() else KEPT_BUFFERS
    with _reading(chunks) as arrays:
        return feature.chunk_sums(arrays, buffers=slabs, **arguments)


def feature_statistics(graph, chunks, plan, center, label="", weights=None, shifts=None):
    """Key of the feature route's statistics (see :func:`feature_totals.feature_statistics`);
    ``weights``: per row chunk, the key of its rows' weights (a bootstrap replicate);
    ``shifts``: the centring shifts' keys, when other statistics already have them."""
    tag = ("-centred" if center else "") + label
    shifts = shifts or _shifts(graph, chunks, plan.compute_dtype, center, tag)
    weights = weights or [None] * len(plan.row_chunks)
    column_sums = center or plan.column_sums
    blocks = [tuple(block) for block in plan.blocks]
    totals = []
    for g, group in enumerate(plan.product_groups):
        products = [(p.row_block, p.row_range, p.col_block, p.col_range) for p in plan.products[group[0]:group[1]]]
        static = dict(blocks=blocks, dtype=plan.compute_dtype, products=products, n_layers=plan.n_layers,
                      moments=g == 0, sub_rows=plan.sub_rows, column_sums=column_sums)
        parts = [
            graph.add_bound(f"chunk{tag}", (c, g), _chunk_sums, static,
                            chunks=[layer[c] for layer in chunks], shifts=shifts, weights=weights[c])
            for c in range(len(plan.row_chunks))
        ]
        totals.append(graph.tree(f"sum{tag}-{g}", parts))
    static = dict(product_pieces=[(p.row_pieces, p.col_pieces) for p in plan.products],
                  mirrored=[p.mirrored for p in plan.products], center=center, skewness=plan.tests,
                  column_sums=column_sums)
    return graph.add_bound(f"statistics{tag}", (), feature_totals.feature_statistics, static, sums=totals)


def gram_statistics(graph, chunks, plan, center, label=""):
    """Key of the gram route's statistics (see :func:`gram.gram_statistics`)."""
    tag = ("-centred" if center else "") + label
    shifts = _shifts(graph, chunks, "float64", center, tag)
    rows = [[layer[c] for layer in chunks] for c in range(len(plan.row_chunks))]
    summary = graph.tree(
        f"summary-sum{tag}",
        [graph.add(f"summary{tag}", (c,), gram.column_summary, row, shifts) for c, row in enumerate(rows)],
    )
    if center:
        means, sums = graph.add(f"means{tag}", (), gram.column_means, summary, shifts), None
    else:
        means, sums = [None] * len(chunks), graph.add(f"sums{tag}", (), gram.column_sums, summary)
    prepared = [
        graph.add(f"prepare{tag}", (c,), gram.gram_prepare, row, means, plan.compute_dtype, sums)
        for c, row in enumerate(rows)
    ]
    cubes = center and plan.tests and plan.cube_group > 0
    tiles = {(i, j): graph.add(f"tile{tag}", (i, j), gram.gram_tile, prepared[i], prepared[j], i == j, cubes)
             for i in range(len(rows)) for j in range(i, len(rows))}
    inner = ([graph.add(f"tile-inner{tag}", index, _inner, key) for index, key in tiles.items()] if cubes
             else list(tiles.values()))
    diagonal = [graph.add(f"diagonal{tag}", (c,), _diagonal_part, p) for c, p in enumerate(prepared)]
    cubed = _cubes(graph, tiles, len(rows), plan.cube_group, tag) if cubes else None
    return graph.add(
        f"statistics{tag}", (), gram.gram_statistics, summary, shifts,
        graph.tree(f"tile-sum{tag}", inner), graph.tree(f"diagonal-sum{tag}", diagonal), center, cubed,
    )


def _cubes(graph, tiles, count, group, tag):
    """Key of every layer's tr(A^3) from the kept upper tiles of its Gram: one task per
    triple of blocks of ``group`` consecutive row blocks (see :func:`gram.gram_cube`)."""
    blocks = [range(start, min(start + group, count)) for start in range(0, count, group)]

    def block(first, second):
        # tile (i, j) of the lower half is tile (j, i) transposed
        return ([[tiles[min(i, j), max(i, j)] for j in blocks[second]] for i in blocks[first]],
                [[i > j for j in blocks[second]] for i in blocks[first]])

    parts = []
    for i, j, k, orders in block_triples(len(blocks)):
        (first, flips_1), (second, flips_2), (third, flips_3) = block(i, j), block(j, k), block(i, k)
        parts.append(graph.add_bound(f"cube{tag}", (i, j, k), gram.gram_cube,
                                     dict(flips=(flips_1, flips_2, flips_3), orders=orders),
                                     first=first, second=second, third=third))
    return graph.tree(f"cube-sum{tag}", parts)


def _inner(tile):
    return tile["inner"]


def _call_by_name(func, names, *values):
    return func(**dict(zip(names, values)))


def _diagonal_part(prepared):
    return {key: value for key, value in prepared.items() if key != "rows"}


ROUTE_BUILDERS = {"feature": feature_statistics, "gram": gram_statistics}


def build_statistics(graph, chunks, plan, center, label=""):
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
    label : str
        Distinguishes the task keys of several statistics of one job.
    """
    return ROUTE_BUILDERS[plan.route](graph, chunks, plan, center, label)


def permuted_statistics(graph, chunks_a, chunks_b, plan, center, seed, count):
    """Keys of the statistics of ``a`` against ``b`` with ``b``'s rows permuted, for
    ``count`` seeded permutations; each permuted chunk gathers its rows from ``b``'s
    consecutive row chunks."""
    n = plan.n_obs
    edges = chunk_edges(plan.row_chunks)
    # each layer of b once in the graph (in-memory chunks would otherwise be embedded in,
    # and shipped with, every gathering task)
    sources = [graph.add("permutation-source", (i,), _as_list, *layer) for i, layer in enumerate(chunks_b)]
    keys = []
    for k in range(count):
        order = graph.add("permutation", (k,), resampling.permutation, seed, k, n)
        gathered = [[graph.add("permuted", (k, i, c), _gather, source, order, edges[c], edges[c + 1])
                     for c in range(len(plan.row_chunks))] for i, source in enumerate(sources)]
        keys.append(build_statistics(graph, list(chunks_a) + gathered, plan, center, f"-permutation{k}"))
    return keys


def _as_list(*parts):
    return list(parts)


def _gather(chunks, order, start, stop):
    return resampling.gather_rows(chunks, order[start:stop])


def bootstrap_statistics(graph, chunks, plan, center, seed, count):
    """Keys of the statistics of ``count`` Poisson bootstrap replicates (feature route):
    the counts of each row chunk are drawn once and serve every replicate."""
    edges = chunk_edges(plan.row_chunks)
    counts = [graph.add("counts", (c,), resampling.poisson_weights, seed, edges[c], edges[c + 1], count)
              for c in range(len(plan.row_chunks))]
    # the shifts do not depend on the weights: one set serves every replicate
    shifts = _shifts(graph, chunks, plan.compute_dtype, center, ("-centred" if center else "") + "-replicates")
    keys = []
    for r in range(count):
        weights = [graph.add("weights", (c, r), _column, counts[c], r) for c in range(len(counts))]
        keys.append(feature_statistics(graph, chunks, plan, center, f"-replicate{r}", weights, shifts))
    return keys


def chunk_edges(row_chunks):
    """Where each row chunk starts, and the end of the last."""
    edges = [0]
    for rows in row_chunks:
        edges.append(edges[-1] + rows)
    return edges


def _column(matrix, index):
    return matrix[:, index]


def to_device(graph, chunks, move, label=""):
    """Chunks moved by ``move`` (e.g. to the worker's GPU) once each, as task keys."""
    return [[graph.add(f"to-device{label}", (i, c), move, chunk) for c, chunk in enumerate(layer)]
            for i, layer in enumerate(chunks)]
