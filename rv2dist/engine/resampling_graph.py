"""The graphs of resampled statistics: seeded permutations of b's rows and Poisson
bootstrap replicates, each a pass of the products over the data read once."""

from __future__ import annotations

from rv2dist.core import resampling
from rv2dist.engine.feature_graph import chunk_totals, shifts, statistics_of, statistics_tag
from rv2dist.engine.statistics_graph import build_statistics


def _pass(graph, chunks, plan, center, label, blocks, weights=None, shift_keys=None):
    """Keys of one resampling pass: its statistics and, with ``blocks(totals, tag)``
    (the feature route's second-moment measures), their values (else None)."""
    if blocks is None and weights is None:
        return build_statistics(graph, chunks, plan, center, label), None
    tag = statistics_tag(center, label)
    totals = chunk_totals(graph, chunks, plan, center, tag, weights, shift_keys)
    return statistics_of(graph, totals, plan, center, tag), blocks(totals, tag) if blocks is not None else None


def permuted_statistics(graph, chunks_a, chunks_b, plan, center, seed, count, blocks=None):
    """Keys of the statistics of ``a`` against ``b`` with ``b``'s rows permuted, for
    ``count`` seeded permutations, and of their second-moment values (see
    :func:`_pass`); each permuted chunk gathers its rows from ``b``'s consecutive row
    chunks."""
    edges = chunk_edges(plan.row_chunks)
    # each layer of b once in the graph (in-memory chunks would otherwise be embedded in,
    # and shipped with, every gathering task)
    sources = [graph.add("permutation-source", (i,), _as_list, *layer) for i, layer in enumerate(chunks_b)]
    keys, values = [], []
    for k in range(count):
        order = graph.add("permutation", (k,), resampling.permutation, seed, k, plan.n_obs)
        gathered = [[graph.add("permuted", (k, i, c), _gather, source, order, edges[c], edges[c + 1])
                     for c in range(len(plan.row_chunks))] for i, source in enumerate(sources)]
        statistics, block_values = _pass(graph, list(chunks_a) + gathered, plan, center, f"-permutation{k}", blocks)
        keys.append(statistics)
        values.append(block_values)
    return keys, values


def _as_list(*parts):
    return list(parts)


def _gather(chunks, order, start, stop):
    return resampling.gather_rows(chunks, order[start:stop])


def bootstrap_statistics(graph, chunks, plan, center, seed, count, blocks=None):
    """Keys of the statistics of ``count`` Poisson bootstrap replicates (a route that
    takes weights), and of their second-moment values (see :func:`_pass`): the counts
    of each row chunk are drawn once and serve every replicate."""
    edges = chunk_edges(plan.row_chunks)
    counts = [graph.add("counts", (c,), resampling.poisson_weights, seed, edges[c], edges[c + 1], count)
              for c in range(len(plan.row_chunks))]
    # the shifts do not depend on the weights: one set serves every replicate
    shift_keys = shifts(graph, chunks, plan.compute_dtype, center, ("-centred" if center else "") + "-replicates")
    keys, values = [], []
    for r in range(count):
        weights = [graph.add("weights", (c, r), _column, counts[c], r) for c in range(len(counts))]
        statistics, block_values = _pass(graph, chunks, plan, center, f"-replicate{r}", blocks, weights, shift_keys)
        keys.append(statistics)
        values.append(block_values)
    return keys, values


def chunk_edges(row_chunks):
    """Where each row chunk starts, and the end of the last."""
    edges = [0]
    for rows in row_chunks:
        edges.append(edges[-1] + rows)
    return edges


def _column(matrix, index):
    return matrix[:, index]
