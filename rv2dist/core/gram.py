"""The gram route's kernels: Frobenius inner products of off-diagonal Gram tiles.

:func:`column_summary` (pass one: column sums and squares), :func:`gram_prepare` (a
centred row block of every layer), :func:`gram_tile` (the inner products of one tile
pair of every layer's Gram), :func:`gram_cube` (``tr(A^3)`` from triples of kept tiles,
for the tests' skewness) and :func:`gram_statistics` (the sufficient statistics).
"""

from __future__ import annotations

import numpy as np

from rv2dist.core.xp import QUIET_RANGE, all_finite, astype, concat, concat_host, f64, namespace, numpy_like, sums_of_squares, swap_last, to_numpy
from rv2dist.core.statistics import Statistics, centred_row_sums, flag_arrays, layer_flags


def _float64_row_blocks(chunk, offset, block_bytes=2**25):
    """``chunk - offset`` in float64, a few rows at a time through one reused buffer
    (a float64 copy of a wide chunk would double its memory, and fresh pages cost time)."""
    xp = namespace(chunk)
    k, width = chunk.shape
    rows = max(1, min(k, block_bytes // (8 * max(1, width))))
    buffer = xp.empty((rows, width), dtype=xp.float64)
    for start in range(0, k, rows):
        part = chunk[start : start + rows, :]
        view = buffer[: part.shape[0], :]
        if offset is None:
            view[...] = part
        elif numpy_like(xp):
            # Inf in a layer makes NaN here, reported afterwards as an error naming it
            with np.errstate(invalid="ignore"):
                xp.subtract(part, offset, out=view, dtype=xp.float64)
        else:
            view = f64(part) - offset
        yield view


def column_summary(chunks, shifts):
    """Pass one of the gram route: per layer sums of shifted columns and of their squares."""
    xp = namespace(*chunks)
    colsum, norm_sum = [], []
    for chunk, shift in zip(chunks, shifts):
        total, squares = 0.0, 0.0
        for block in _float64_row_blocks(chunk, None if shift is None else f64(shift)):
            total = total + xp.sum(block, axis=0)
            squares = squares + xp.sum(sums_of_squares(block, 1, xp))
        colsum.append([total])
        norm_sum.append(squares)
    return {"n": chunks[0].shape[0], "colsum": colsum, "norm_sum": xp.stack(norm_sum)}


def column_means(summary, shifts):
    """Exact float64 column means from :func:`column_summary` totals and the shifts."""
    n = summary["n"]
    means = []
    for parts, shift in zip(summary["colsum"], shifts):
        mean = parts[0] / n
        if shift is not None:
            mean = mean + f64(shift)
        means.append(mean)
    return means


def column_sums(summary):
    """Per layer, the column sums of unshifted data from :func:`column_summary` totals."""
    return [parts[0] for parts in summary["colsum"]]


@QUIET_RANGE
def gram_prepare(chunks, means, dtype, sums=None):
    """Centre one row block of every layer (float64), round to ``dtype``, and sum the
    products of the squared row norms that the diagonal of the Grams holds.

    With ``sums`` (per layer the column sums ``s``; uncentred data), also the sums over
    the block's rows of ``r_i^2`` and ``r_i a_i``, ``r_i = x_i.s - a_i`` the row sums of
    the Gram without its diagonal (the permutation moments need them)."""
    xp = namespace(*chunks)
    rows, norms, row_sums = [], [], []
    for index, (chunk, mean) in enumerate(zip(chunks, means)):
        out = xp.empty(chunk.shape, dtype=getattr(xp, dtype))
        layer_norms, start, squares, weighted = [], 0, 0.0, 0.0
        for block in _float64_row_blocks(chunk, mean):
            block_norms = sums_of_squares(block, 1, xp)
            layer_norms.append(block_norms)
            if sums is not None:
                r = block @ f64(sums[index]) - block_norms
                squares, weighted = squares + xp.sum(r * r), weighted + xp.sum(r * block_norms)
            out[start : start + block.shape[0], :] = astype(block, out.dtype)
            start += block.shape[0]
        rows.append(out)
        norms.append(concat(xp, layer_norms))
        row_sums.append((squares, weighted))
    norms = xp.stack(norms, axis=1)
    prepared = {"rows": rows, "norm_outer": norms.T @ norms, "norm_sum": xp.sum(norms, axis=0)}
    if sums is not None:
        prepared["rowsum_sq"] = xp.stack([xp.asarray(q, dtype=xp.float64) for q, _ in row_sums])
        prepared["rowsum_norm"] = xp.stack([xp.asarray(w, dtype=xp.float64) for _, w in row_sums])
    return prepared


def gram_tile(block_i, block_j, diagonal, keep="inner"):
    """Frobenius inner products ``<G_l, G_m>`` of the off-diagonal parts of the Gram
    tiles ``G_l = X_l[i] X_l[j]'`` of every layer, weighted 2 off the block diagonal
    (``diagonal``: the tile is on the block diagonal).  ``keep="tiles"``: ``{"inner":
    those, "tiles": (L, b_i, b_j) float64}``, the tiles with their diagonal, for
    :func:`gram_cube`; ``keep="inner"`` the inner products alone."""
    rows_i, rows_j = block_i["rows"], block_j["rows"]
    xp = namespace(*rows_i)
    with np.errstate(over="ignore", invalid="ignore"):
        inner, tiles = _tile_inner(rows_i, rows_j, diagonal, xp, keep)
    if rows_i[0].dtype != xp.float64 and not all_finite([inner], xp):
        # float32 tiles overflow from about 1e19: this tile again in float64
        return gram_tile(_rows_f64(block_i), _rows_f64(block_j), diagonal, keep)
    return {"inner": inner, "tiles": tiles} if keep == "tiles" else inner


def _tile_inner(rows_i, rows_j, diagonal, xp, keep):
    tiles_kept = keep == "tiles"
    b_i, b_j = rows_i[0].shape[0], rows_j[0].shape[0]
    factor = 1.0 if diagonal else 2.0
    if numpy_like(xp):
        # each tile lands in its row of one float64 array, its diagonal zeroed in place:
        # no float64 copy, mask or stacked copy per tile (kept tiles get it back after)
        flat = xp.empty((len(rows_i), b_i * b_j), dtype=xp.float64)
        kept = xp.empty((len(rows_i), b_i), dtype=xp.float64) if diagonal and tiles_kept else None
        for index, (row, x, y) in enumerate(zip(flat, rows_i, rows_j)):
            tile = row.reshape(b_i, b_j)
            tile[...] = x @ y.T
            if diagonal:
                if kept is not None:
                    kept[index] = xp.diagonal(tile)
                xp.fill_diagonal(tile, 0.0)
        inner = factor * (flat @ flat.T)
        for row, values in zip(flat, kept if kept is not None else ()):
            xp.fill_diagonal(row.reshape(b_i, b_j), values)
        return inner, xp.reshape(flat, (len(rows_i), b_i, b_j)) if tiles_kept else None
    flat, tiles = [], []
    for x, y in zip(rows_i, rows_j):
        tile = f64(x @ y.T)
        tiles.append(tile)
        if diagonal:
            tile = tile * (1.0 - xp.eye(b_i, dtype=xp.float64))
        flat.append(xp.reshape(tile, (b_i * b_j,)))
    flat = xp.stack(flat, axis=0)
    return factor * (flat @ flat.T), xp.stack(tiles, axis=0) if tiles_kept else None


def gram_cube(first, second, third, flips, orders):
    """``orders * tr(G_IJ G_JK G_KI)`` for every layer: blocks ``I <= J <= K`` of the
    centred n x n Gram, each given as rows of kept tiles of :func:`gram_tile` (``flips``
    marks those of the lower half, kept transposed; ``G_KI = G_IK'``).  The term is the
    same for every order of ``(I, J, K)`` (the trace is invariant under cycling and
    transposing), so summed over the triples ``I <= J <= K``, each times its number of
    distinct orders, it is ``tr(A^3)`` of every layer's Gram ``A``: the skewness of the
    tests, without an n x n matrix."""
    g_ij, g_jk, g_ik = (_gram_block(tiles, flipped) for tiles, flipped in zip((first, second, third), flips))
    xp = namespace(g_ij)
    return orders * xp.sum((g_ij @ g_jk) * g_ik, axis=(1, 2))


def _gram_block(tiles, flipped):
    """``(L, rows, columns)`` block of every layer's Gram from rows of kept tiles, those
    marked ``flipped`` transposed."""
    parts = [[swap_last(t["tiles"]) if flip else t["tiles"] for t, flip in zip(row, flips)]
             for row, flips in zip(tiles, flipped)]
    if len(parts) == 1 and len(parts[0]) == 1:
        return parts[0][0]
    xp = namespace(parts[0][0])
    return concat(xp, [concat(xp, row, axis=2) for row in parts], axis=1)


def _rows_f64(block):
    return {**block, "rows": [f64(x) for x in block["rows"]]}


@QUIET_RANGE
def gram_statistics(summary, shifts, inner, prepared, center, cubed=None):
    """Sufficient statistics from the gram route's totals (see :func:`feature_statistics`);
    ``cubed``: the per-layer sum of :func:`gram_cube` (``tr(A^3)``), when the tests
    want it."""
    n = summary["n"]
    rowdot = to_numpy(prepared["norm_outer"])
    trace = to_numpy(prepared["norm_sum"])
    if center:
        ones = -trace
        row_sums = centred_row_sums(rowdot)
    else:
        sums = [concat_host(parts) for parts in summary["colsum"]]
        ones = np.array([s @ s for s in sums]) - trace
        row_sums = {key: to_numpy(prepared[key]) for key in ("rowsum_sq", "rowsum_norm")}
    flags = layer_flags(summary, trace, center)
    trace_cubed = np.full(len(trace), np.nan) if cubed is None else to_numpy(cubed).astype(np.float64)
    return Statistics(n=n, cross=to_numpy(inner) + rowdot, rowdot=rowdot, trace=trace, ones=ones, **row_sums,
                      trace_cubed=trace_cubed, **flag_arrays(flags))
