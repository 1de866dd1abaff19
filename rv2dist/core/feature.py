"""The feature route's chunk kernels: every sum over the rows of one row chunk.

:func:`chunk_sums` walks one row chunk in sub-blocks: :func:`shift_slab` writes the
shifted columns of several layers into a reused slab, :func:`chunk_moments` and the
cross-products reduce it to sums over observations.  The partial sums of all chunks are
added by :func:`rv2dist.core.xp.combine`, and :mod:`rv2dist.core.feature_totals` turns
the totals into sufficient statistics.

Centring uses the shifted-data algorithm: every chunk subtracts a fixed reference row
``shift`` (the mean of the first rows, rounded to the compute dtype) before any product,
so uncentred products never see the large means of post-ReLU activations; the exact
correction for the small residual mean is applied once, in float64, on the totals.
"""

from __future__ import annotations

import numpy as np

from rv2dist.core.host_blas import cross_matmul
from rv2dist.core.xp import accumulate, all_finite, astype, concat, f64, matmul_into, namespace, numpy_like, sums_of_squares


SHIFT_ROWS = 1024


SUB_ROWS = 8192


def first_rows_mean(x, dtype):
    """Mean of the first rows of ``x`` in float64, rounded to ``dtype``: the centring
    shift (any fixed row near the mean serves; a few rows give one)."""
    xp = namespace(x)
    rows = min(SHIFT_ROWS, x.shape[0])
    # summed in float64 without a float64 copy of the rows
    return astype(xp.sum(x[:rows, :], axis=0, dtype=xp.float64) / rows, getattr(xp, dtype))


def shift_slab(chunks, pieces, shifts, dtype, out=None, row_norms=None):
    """Gather column pieces of several layers into one shifted slab.

    Parameters
    ----------
    chunks : sequence of arrays
        One row chunk per layer, shape ``(k, p_l)``.
    pieces : sequence of (int, int, int)
        ``(index into chunks, first column, stop column)`` in slab order.
    shifts : sequence of arrays or None
        Per layer, the row subtracted before products (``None``: no centring).
    dtype : str
        Compute dtype of the slab (``"float32"`` or ``"float64"``).
    out : array, optional
        A ``(k, width)`` buffer of ``dtype`` to write into (reused between calls).
    row_norms : list, optional
        Receives, per piece, the ``(k,)`` squared row norms of the values written (in
        ``dtype``), taken while the piece is still in cache (see :func:`chunk_moments`).
    """
    xp = namespace(*chunks)
    dt = getattr(xp, dtype)
    if len(pieces) == 1 and shifts[pieces[0][0]] is None and out is None and row_norms is None:
        index, start, stop = pieces[0]
        return astype(chunks[index][:, start:stop], dt)
    k = chunks[0].shape[0]
    if out is None:
        out = xp.empty((k, sum(stop - start for _, start, stop in pieces)), dtype=dt)
    if xp is not np:
        norms = _shift_pieces(chunks, pieces, shifts, out, row_norms is not None, xp)
    else:
        # a tile of rows at a time: its row norms are taken while it is in cache
        norms = [np.empty(k, dtype=dt) for _ in pieces] if row_norms is not None else None
        rows = max(1, TILE_ELEMENTS // max(1, out.shape[1]))
        for first in range(0, k, rows):
            last = min(k, first + rows)
            tile_norms = _shift_pieces([c[first:last] for c in chunks], pieces, shifts, out[first:last],
                                       norms is not None, xp)
            for piece_norms, piece_tile_norms in zip(norms or (), tile_norms or ()):
                piece_norms[first:last] = piece_tile_norms
    if row_norms is not None:
        row_norms.extend(norms)
    return out


# values of a slab written at a time on the host, their row norms then read from cache
# (64 rows of the study's 4,224 units; fewer would pay numpy's per-call costs)
TILE_ELEMENTS = 2**18


def _shift_pieces(chunks, pieces, shifts, out, with_norms, xp):
    """:func:`shift_slab`'s passes over all rows of ``chunks`` at once: each piece
    written into ``out``; per piece its row norms (or None without ``with_norms``)."""
    norms = [] if with_norms else None
    offset = 0
    for index, start, stop in pieces:
        part = chunks[index][:, start:stop]
        target = out[:, offset : offset + stop - start]
        if shifts[index] is None:
            target[...] = part
        elif numpy_like(xp):
            # one pass instead of a temporary and a copy
            xp.subtract(part, shifts[index][start:stop], out=target, casting="unsafe")
        else:
            out[:, offset : offset + stop - start] = astype(part, out.dtype) - shifts[index][start:stop]
        if with_norms:
            # an unshifted piece's own rows hold the same values, contiguous where the
            # slab's are strided (0.6x the time)
            same = shifts[index] is None and part.dtype == target.dtype
            norms.append(sums_of_squares(part if same else target, 1, xp))
        offset += stop - start
    return norms


# what a chunk task sums besides the products: nothing (all but the first product group
# of a job), the row norms' sums, or those and the column sums (see chunk_moments)
MOMENTS = ("none", "row-norms", "column-sums")


def chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments="column-sums", sub_rows=SUB_ROWS,
               weights=None, buffers=None, blas="numpy"):
    """Every sum over the rows of one chunk that the feature route needs.

    The chunk is walked in sub-blocks of ``sub_rows`` rows through slab and product
    buffers allocated once, so the extra passes stay in reused memory.

    Parameters
    ----------
    chunks : sequence of arrays
        One row chunk per layer, ``(k, p_l)``.
    blocks : sequence of sequence of (int, int, int, int)
        Column blocks: pieces ``(layer, start, stop, offset in block)``.
    shifts : sequence of arrays or None
        Per layer, the row subtracted before products.
    dtype : str
        Compute dtype of the products.
    products : sequence of (int, (int, int), int, (int, int))
        ``(row block, row range, column block, column range)`` of each product.
    n_layers : int
        Number of layers.
    moments : {"column-sums", "row-norms", "none"}
        What :func:`chunk_moments` adds: the sums of the squared row norms and the
        column sums (centring needs them, and so does ``1'Ã1`` of uncentred data), the
        row norms' sums alone, or no moments at all.
    sub_rows : int
        Most rows per sub-block; the chunk is cut into equal sub-blocks.
    weights : numpy.ndarray, optional
        ``(k,)`` non-negative weights of the rows (a bootstrap replicate's counts):
        every sum over rows becomes a weighted sum.  The slab rows are scaled by
        ``sqrt(w)``, so the products ``X' W Y`` cost no more than plain ones.
    buffers : rv2dist.engine.buffers.KeptBuffers, optional
        Where numpy slabs and per-sub-block product buffers are lent from and given back
        to before returning (kept memory, no fresh pages), and the returned float64 sums
        of several sub-blocks lent from, to come back once unreferenced; default: new
        arrays.
    blas : {"numpy", "torch", "auto"}
        The host BLAS of the products of two different operands (see
        :func:`rv2dist.core.host_blas.cross_matmul`); a layer against itself, and every
        product on a device, is taken by the array's own namespace.

    Returns
    -------
    dict
        ``products``: the sums of ``X_b[:, range]' Y_c[:, range]`` over the chunk's
        rows, in float64; for a chunk of one sub-block, its products as they are, in the
        compute dtype (:func:`combine` and :func:`feature_statistics` sum in float64);
        ``moments``: the summed :func:`chunk_moments` (or None).
    """
    xp = namespace(*chunks)
    lending = buffers is not None and xp is np
    lent = []

    def empty(shape, dt):
        if not lending:
            return xp.empty(shape, dtype=getattr(xp, dt))
        lent.append(buffers.lend(shape, dt))
        return lent[-1]

    # the float64 sums this call returns: from the pool too (kept memory), back in it
    # once nothing refers to them
    returned = buffers.lend_result if lending else None
    try:
        matmuls = _matmuls(products, chunks[0].shape[0], blas, xp)
        sums = _chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments, sub_rows, weights, empty,
                           returned, matmuls, xp)
    finally:
        for array in lent:
            buffers.give_back(array)
    if sums is None:
        # float32 products overflow from about 1e19 (squares past 3.4e38): this chunk
        # again in float64; non-finite input stays non-finite and is reported as such
        return chunk_sums(chunks, blocks, shifts, "float64", products, n_layers, moments, sub_rows, weights, buffers,
                          blas)
    return sums


def _matmuls(products, rows, blas, xp):
    """Per product, the ``matmul(x, y, out)`` that computes it."""
    own = [(rb, rr) == (cb, cr) for rb, rr, cb, cr in products]
    if xp is not np or all(own):
        return [matmul_into] * len(products)
    flop = sum(2 * rows * (rr[1] - rr[0]) * (cr[1] - cr[0]) for (_, rr, _, cr), mine in zip(products, own) if not mine)
    cross = cross_matmul(blas, flop)
    return [matmul_into if mine else cross for mine in own]


def _chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments, sub_rows, weights, empty, returned,
                matmuls, xp):
    """:func:`chunk_sums` in ``dtype``, its working arrays from ``empty(shape, dtype)``,
    its float64 sums of several sub-blocks from ``returned`` (None: new arrays) and its
    products from ``matmuls``; None where a float32 sum overflowed."""
    if moments not in MOMENTS:
        raise ValueError(f"unknown moments {moments!r}; choose one of {', '.join(MOMENTS)}")
    k = chunks[0].shape[0]
    with_moments = moments != "none"
    used = sorted({b for b, _, c, _ in products for b in (b, c)} | (set(range(len(blocks))) if with_moments else set()))
    # equal sub-blocks: a short last one would pay a whole output pass for few rows
    rows = -(-k // -(-k // sub_rows))
    # one sub-block: its products go on as they are, the float64 sums starting in the
    # reduction (the same sums, with no float64 copy made here and half the bytes moved)
    single = rows >= k
    slabs = {b: empty((rows, sum(stop - start for _, start, stop, _ in blocks[b])), dtype) for b in used}
    buffers = [None] * len(products)
    totals = [None] * len(products)
    summed = None
    # an overflow in a float32 attempt is caught below and the chunk redone in float64
    with np.errstate(over="ignore", invalid="ignore"):
        for begin in range(0, k, rows):
            end = min(k, begin + rows)
            sub = [c[begin:end, :] for c in chunks]
            piece_norms = {b: [] if with_moments else None for b in used}
            views = {b: shift_slab(sub, [(l, s, e) for l, s, e, _ in blocks[b]], shifts, dtype,
                                   out=slabs[b][: end - begin, :], row_norms=piece_norms[b])
                     for b in used}
            sub_weights = None if weights is None else xp.asarray(weights[begin:end], dtype=xp.float64)
            if sub_weights is not None:
                views = {b: _scale_rows(view, xp.sqrt(sub_weights), xp) for b, view in views.items()}
            if with_moments:
                part = chunk_moments([views[b] for b in range(len(blocks))], blocks, n_layers,
                                     [piece_norms[b] for b in range(len(blocks))], sub_weights, moments)
                summed = part if summed is None else accumulate(summed, part)  # this call's own arrays
            for p, (rb, rr, cb, cr) in enumerate(products):
                x, y = views[rb][:, rr[0] : rr[1]], views[cb][:, cr[0] : cr[1]]
                if buffers[p] is None and not single:
                    buffers[p] = empty((x.shape[1], y.shape[1]), dtype)
                buffers[p] = matmuls[p](x.T, y, buffers[p])
                if single:
                    continue
                if totals[p] is None and returned is not None:
                    totals[p] = returned(buffers[p].shape, "float64")
                    totals[p][...] = buffers[p]
                else:
                    totals[p] = accumulate(totals[p], buffers[p])
    sums = buffers if single else totals
    if dtype != "float64" and not _sums_finite(sums, summed, xp):
        return None
    return {"products": sums, "moments": summed}


# the moments' sum of squares below which no float32 product can overflow (float32's
# largest value is 3.4e38: a margin for rounding)
_NO_OVERFLOW = 1e37


def _sums_finite(products, moments, xp):
    """Whether every sum of a float32 chunk is finite.  An entry of a product, and every
    partial sum of it, is at most the squared Frobenius norm of the slabs (Cauchy-Schwarz),
    which the moments hold: where that is well inside float32's range only the moments
    are looked at, not the products."""
    leaves = _moment_leaves(moments)
    if moments is not None and all_finite(leaves, xp) and float(xp.sum(moments["norm_sum"])) < _NO_OVERFLOW:
        return True
    return all_finite(products + leaves, xp)


def _scale_rows(block, factors, xp):
    """``block`` with row i multiplied by ``factors[i]`` (in place where allowed)."""
    factors = astype(factors, block.dtype)[:, None]
    if numpy_like(xp):
        xp.multiply(block, factors, out=block)
        return block
    return block * factors


def _moment_leaves(moments):
    if moments is None:
        return []
    return ([a for parts in moments["colsum"] for a in parts] + [moments["norm_sum"]]
            + [a for parts in moments["norm_cross"] for a in parts])


def chunk_moments(slabs, pieces, n_layers, piece_norms, weights=None, moments="column-sums"):
    """Sums over the rows of one chunk that the feature route needs besides X'Y.

    Parameters
    ----------
    slabs : sequence of arrays
        Shifted slabs of one row chunk, ``(k, width_b)`` each.
    pieces : sequence of sequence of (int, int, int, int)
        Per slab, ``(layer, layer column start, layer column stop, slab column start)``.
    n_layers : int
        Number of layers the pieces refer to.
    piece_norms : sequence of sequence of arrays
        Per slab and piece, the ``(k,)`` squared row norms of its shifted, unweighted
        rows (as :func:`shift_slab` gives them).
    weights : array, optional
        ``(k,)`` float64 row weights ``w``, the slabs' rows already scaled by
        ``sqrt(w)``: then every sum is weighted and ``n`` is ``sum w``.
    moments : {"column-sums", "row-norms"}
        With ``"column-sums"`` (default) also ``colsum`` and ``norm_cross``: centring
        needs them, and so does ``1'Ã1`` of uncentred data (``rv2_null``, ``rsa``, the
        tests); with ``"row-norms"`` those lists stay empty, saving a pass over the slabs.

    Returns
    -------
    dict
        ``n`` rows; per layer ``colsum`` (list of per-piece float64 arrays); ``norm_sum``
        (L,), ``norm_outer`` (L, L) and ``norm_cross`` (per layer and piece,
        ``(L, width)``): sums of the squared row norms ``a_i``, of ``a_i b_i`` and of
        ``a_i y_i``.

    Notes
    -----
    Within the chunk, sums run in the slab dtype like the products (row norms over
    units, column sums over rows); every sum across pieces and chunks is float64.
    """
    xp = namespace(*slabs)
    k, dtype = slabs[0].shape[0], slabs[0].dtype
    unit = [0.0] * n_layers
    for slab_pieces, slab_norms in zip(pieces, piece_norms):
        for (layer, _, _, _), piece in zip(slab_pieces, slab_norms):
            unit[layer] = unit[layer] + f64(piece)
    unit = xp.stack(unit, axis=1)
    count, norms = (k, unit) if weights is None else (float(xp.sum(weights)), unit * weights[:, None])
    colsum = [[] for _ in range(n_layers)]
    norm_cross = [[] for _ in range(n_layers)]
    if moments == "column-sums":
        root = xp.ones((k, 1), dtype=xp.float64) if weights is None else xp.sqrt(weights)[:, None]
        # one GEMM per slab yields the a_i-weighted column sums and, from a column of
        # ones (of sqrt(w)), the plain column sums (per-piece reductions cost more)
        multipliers = astype(concat(xp, [unit * root, root], axis=1), dtype)
        for slab, slab_pieces in zip(slabs, pieces):
            sums = f64(multipliers.T @ slab)
            for layer, start, stop, offset in slab_pieces:
                colsum[layer].append(sums[n_layers, offset : offset + stop - start])
                norm_cross[layer].append(sums[:n_layers, offset : offset + stop - start])
    return {
        "n": count,
        "colsum": colsum,
        "norm_sum": xp.sum(norms, axis=0),
        "norm_outer": norms.T @ unit,
        "norm_cross": norm_cross,
    }
