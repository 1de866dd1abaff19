"""The gram route's graph: column sums, centred row blocks, the inner products of every
tile pair of the n x n Grams (each layer's tile formed once), and, for the tests,
tr(A^3) from triples of kept tiles."""

from __future__ import annotations

from rv2dist.core import gram
from rv2dist.engine.feature_graph import shifts
from rv2dist.planning.gram import block_triples


def gram_statistics(graph, chunks, plan, center, label=""):
    """Key of the gram route's statistics (see :func:`rv2dist.core.gram.gram_statistics`;
    the arguments as :func:`rv2dist.engine.feature_graph.feature_statistics`'s)."""
    tag = ("-centred" if center else "") + label
    shift_keys = shifts(graph, chunks, "float64", center, tag)
    rows = [[layer[c] for layer in chunks] for c in range(len(plan.row_chunks))]
    summary = graph.tree(f"summary-sum{tag}", [graph.add(f"summary{tag}", (c,), gram.column_summary, row, shift_keys)
                                              for c, row in enumerate(rows)])
    if center:
        means, sums = graph.add(f"means{tag}", (), gram.column_means, summary, shift_keys), None
    else:
        means, sums = [None] * len(chunks), graph.add(f"sums{tag}", (), gram.column_sums, summary)
    prepared = [graph.add(f"prepare{tag}", (c,), gram.gram_prepare, row, means, plan.compute_dtype, sums)
                for c, row in enumerate(rows)]
    keep = "tiles" if center and plan.tests and plan.cube_group > 0 else "inner"
    tiles = {(i, j): graph.add(f"tile{tag}", (i, j), gram.gram_tile, prepared[i], prepared[j], i == j, keep)
             for i in range(len(rows)) for j in range(i, len(rows))}
    inner = ([graph.add(f"tile-inner{tag}", index, _inner, key) for index, key in tiles.items()] if keep == "tiles"
             else list(tiles.values()))
    diagonal = [graph.add(f"diagonal{tag}", (c,), _diagonal_part, p) for c, p in enumerate(prepared)]
    cubed = _cubes(graph, tiles, len(rows), plan.cube_group, tag) if keep == "tiles" else None
    return graph.add(f"statistics{tag}", (), gram.gram_statistics, summary, shift_keys,
                     graph.tree(f"tile-sum{tag}", inner), graph.tree(f"diagonal-sum{tag}", diagonal), center, cubed)


def _cubes(graph, tiles, count, group, tag):
    """Key of every layer's tr(A^3) from the kept upper tiles of its Gram: one task per
    triple of blocks of ``group`` consecutive row blocks (see :func:`rv2dist.core.gram.gram_cube`)."""
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


def _diagonal_part(prepared):
    return {key: value for key, value in prepared.items() if key != "rows"}
