"""Per-chunk mathematics on in-memory blocks.

Everything here is pure and array-namespace agnostic: it takes arrays of one array-API
namespace (numpy, cupy, array-api-strict, ...) and returns arrays of the same namespace
or Python scalars.  Nothing here knows about dask, paths or plans.

Two families of kernels serve the two exact routes:

feature route
    :func:`chunk_sums` walks one row chunk in sub-blocks: :func:`shift_slab` writes the
    shifted columns into a reused slab, :func:`chunk_moments` and the products reduce it
    to sums over observations; :func:`combine` merges partial sums of chunks;
    :func:`feature_statistics` turns the totals into the sufficient statistics of every
    layer pair.
gram route
    :func:`column_summary` (pass one: means and flags), :func:`gram_prepare` (centred row
    block), :func:`gram_tile` (Frobenius inner products of the off-diagonal Gram tile) and
    :func:`gram_statistics`.

Centring uses the shifted-data algorithm: every chunk subtracts a fixed reference row
``shift`` (the mean of the first rows, rounded to the compute dtype) before any product,
so uncentred products never see the large means of post-ReLU activations; the exact
correction for the small residual mean is applied once, in float64, on the totals.
"""

from __future__ import annotations

import numpy as np


def namespace(*arrays):
    """Return the array-API namespace of the first array that declares one."""
    for x in arrays:
        get = getattr(x, "__array_namespace__", None)
        if get is not None:
            return get()
        if type(x).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_numpy(x):
    """Copy a (small) array of any namespace to host numpy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    return np.from_dlpack(x)


def _numpy_like(xp) -> bool:
    """Whether ``xp`` has numpy's extras beyond the array API: ``out=`` arguments,
    ``einsum`` and views that write through to their base (numpy and CuPy)."""
    return xp.__name__ in ("numpy", "cupy")


def _astype(x, dtype):
    xp = namespace(x)
    if x.dtype == dtype:
        return x
    # CuPy's namespace has no ``astype`` function; its arrays have the method
    return xp.astype(x, dtype) if hasattr(xp, "astype") else x.astype(dtype)


def _f64(x):
    return _astype(x, namespace(x).float64)


SHIFT_ROWS = 1024
SUB_ROWS = 8192


def first_rows_mean(x, dtype):
    """Mean of the first rows of ``x`` in float64, rounded to ``dtype``: the centring
    shift (any fixed row near the mean serves; a few rows give one)."""
    xp = namespace(x)
    return _astype(xp.mean(_f64(x[: min(SHIFT_ROWS, x.shape[0]), :]), axis=0), getattr(xp, dtype))


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
        return _astype(chunks[index][:, start:stop], dt)
    if out is None:
        width = sum(stop - start for _, start, stop in pieces)
        out = xp.empty((chunks[0].shape[0], width), dtype=dt)
    offset = 0
    for index, start, stop in pieces:
        part = chunks[index][:, start:stop]
        target = out[:, offset : offset + stop - start]
        if shifts[index] is None:
            target[...] = part
        elif _numpy_like(xp):
            # one pass instead of a temporary and a copy
            xp.subtract(part, shifts[index][start:stop], out=target, casting="unsafe")
        else:
            out[:, offset : offset + stop - start] = _astype(part, dt) - shifts[index][start:stop]
        if row_norms is not None:
            # an unshifted piece's own rows hold the same values, contiguous where the
            # slab's are strided (0.6x the time)
            same = shifts[index] is None and part.dtype == target.dtype
            row_norms.append(_sums_of_squares(part if same else target, 1, xp))
        offset += stop - start
    return out


def _matmul_into(x, y, out):
    """``x @ y``, written into ``out`` where the namespace allows (no fresh pages)."""
    xp = namespace(x, y)
    if out is not None and _numpy_like(xp):
        return xp.matmul(x, y, out=out)
    return x @ y


def chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments=True, sub_rows=SUB_ROWS, weights=None,
               buffers=None, column_sums=True):
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
    moments : bool
        Also compute :func:`chunk_moments`.
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
    column_sums : bool
        The moments' column sums (see :func:`chunk_moments`); default True.

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
        sums = _chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments, sub_rows, weights, empty,
                           returned, xp, column_sums)
    finally:
        for array in lent:
            buffers.give_back(array)
    if sums is None:
        # float32 products overflow from about 1e19 (squares past 3.4e38): this chunk
        # again in float64; non-finite input stays non-finite and is reported as such
        return chunk_sums(chunks, blocks, shifts, "float64", products, n_layers, moments, sub_rows, weights, buffers,
                          column_sums)
    return sums


def _chunk_sums(chunks, blocks, shifts, dtype, products, n_layers, moments, sub_rows, weights, empty, returned, xp,
                column_sums):
    """:func:`chunk_sums` in ``dtype``, its working arrays from ``empty(shape, dtype)`` and
    its float64 sums of several sub-blocks from ``returned`` (None: new arrays); None
    where a float32 sum overflowed."""
    k = chunks[0].shape[0]
    used = sorted({b for b, _, c, _ in products for b in (b, c)} | (set(range(len(blocks))) if moments else set()))
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
            piece_norms = {b: [] if moments else None for b in used}
            views = {b: shift_slab(sub, [(l, s, e) for l, s, e, _ in blocks[b]], shifts, dtype,
                                   out=slabs[b][: end - begin, :], row_norms=piece_norms[b])
                     for b in used}
            sub_weights = None if weights is None else xp.asarray(weights[begin:end], dtype=xp.float64)
            if sub_weights is not None:
                views = {b: _scale_rows(view, xp.sqrt(sub_weights), xp) for b, view in views.items()}
            if moments:
                part = chunk_moments([views[b] for b in range(len(blocks))], blocks, n_layers,
                                     [piece_norms[b] for b in range(len(blocks))], sub_weights, column_sums)
                summed = part if summed is None else _accumulate(summed, part)  # this call's own arrays
            for p, (rb, rr, cb, cr) in enumerate(products):
                x, y = views[rb][:, rr[0] : rr[1]], views[cb][:, cr[0] : cr[1]]
                if buffers[p] is None and not single:
                    buffers[p] = empty((x.shape[1], y.shape[1]), dtype)
                buffers[p] = _matmul_into(x.T, y, buffers[p])
                if single:
                    continue
                if totals[p] is None and returned is not None:
                    totals[p] = returned(buffers[p].shape, "float64")
                    totals[p][...] = buffers[p]
                else:
                    totals[p] = _accumulate(totals[p], buffers[p])
    sums = buffers if single else totals
    if dtype != "float64" and not _all_finite(sums + _moment_leaves(summed), xp):
        return None
    return {"products": sums, "moments": summed}


def _scale_rows(block, factors, xp):
    """``block`` with row i multiplied by ``factors[i]`` (in place where allowed)."""
    factors = _astype(factors, block.dtype)[:, None]
    if _numpy_like(xp):
        xp.multiply(block, factors, out=block)
        return block
    return block * factors


def _moment_leaves(moments):
    if moments is None:
        return []
    return ([a for parts in moments["colsum"] for a in parts] + [moments["norm_sum"]]
            + [a for parts in moments["norm_cross"] for a in parts])


def _all_finite(arrays, xp):
    """Whether every value is finite, from one float64 sum per array (no float64 copy)
    and one host sync."""
    with np.errstate(over="ignore", invalid="ignore"):
        sums = xp.stack([xp.sum(a, dtype=xp.float64) for a in arrays])
    return bool(xp.all(xp.isfinite(sums)))


def chunk_moments(slabs, pieces, n_layers, piece_norms, weights=None, column_sums=True):
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
    column_sums : bool
        Also ``colsum`` and ``norm_cross`` (default): centring needs them, and so does
        ``1'Ã1`` of uncentred data (``rv2_null``, the tests); without them those lists
        stay empty, saving a pass over the slabs.

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
            unit[layer] = unit[layer] + _f64(piece)
    unit = xp.stack(unit, axis=1)
    count, norms = (k, unit) if weights is None else (float(xp.sum(weights)), unit * weights[:, None])
    colsum = [[] for _ in range(n_layers)]
    norm_cross = [[] for _ in range(n_layers)]
    if column_sums:
        root = xp.ones((k, 1), dtype=xp.float64) if weights is None else xp.sqrt(weights)[:, None]
        # one GEMM per slab yields the a_i-weighted column sums and, from a column of
        # ones (of sqrt(w)), the plain column sums (per-piece reductions cost more)
        multipliers = _astype(_concat(xp, [unit * root, root], axis=1), dtype)
        for slab, slab_pieces in zip(slabs, pieces):
            sums = _f64(multipliers.T @ slab)
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


def _sums_of_squares(block, axis, xp):
    """Sums of the squares of ``block`` along ``axis`` (1: squared row norms), in its dtype."""
    if xp is np:
        # no squared temporary, and one call instead of one per row (CuPy's einsum
        # costs more on the host than the reduction on the device); along rows numpy 2's
        # vecdot (a BLAS dot per row) takes 0.7x einsum's time, down columns 2.3x
        if axis == 1 and hasattr(np, "vecdot"):
            return np.vecdot(block, block)
        return xp.einsum("ij,ij->i" if axis == 1 else "ij,ij->j", block, block)
    return xp.sum(block * block, axis=axis)


def _concat(xp, arrays, axis=0):
    join = getattr(xp, "concat", None) or xp.concatenate  # array API name, or CuPy's older one
    return join(arrays, axis=axis)


def combine(parts):
    """Sum partial results of several chunks, leaf by leaf: arrays (alone, or in dicts
    and lists, as :func:`chunk_sums` returns them) in float64, accumulated in place into
    one float64 copy of the first part's; numbers added; None stays None."""
    total = _accumulate(None, parts[0])
    for part in parts[1:]:
        total = _accumulate(total, part)
    return total


def _accumulate(total, part):
    """``total + part`` for one leaf or structure; ``total`` None for the first part."""
    if isinstance(part, dict):
        return {key: _accumulate(None if total is None else total[key], value) for key, value in part.items()}
    if isinstance(part, list):
        return [_accumulate(None if total is None else total[i], value) for i, value in enumerate(part)]
    if part is None or not hasattr(part, "shape"):
        return part if total is None else total + part
    if total is None:
        owned = _f64(part)
        return owned + 0.0 if owned is part else owned  # never the part itself: it may be reused
    total += part
    return total


def _concat_host(pieces):
    return np.concatenate([to_numpy(p) for p in pieces]) if pieces else np.zeros(0)


# relative size of the centred sum of squares under which a layer counts as constant
ZERO_VARIANCE = 1e-10


# sums out of float64's range are reported by layer name once the job ends (see
# rv2dist.core.metrics.scale_faults), not as numpy's warnings along the way
_QUIET_RANGE = np.errstate(over="ignore", invalid="ignore")


def layer_flags(moments, trace, center):
    """Per layer: ``(finite, undefined, squares_lost)``; undefined means zero variance
    (centred; the centred sum of squares ``trace`` vanishes against the shifted one) or
    all zeros; squares lost, that the values are not all zero (a column sum is not) but
    every square underflowed to 0."""
    flags = []
    for sums, total, centred in zip(moments["colsum"], to_numpy(moments["norm_sum"]), trace):
        sums = _concat_host(sums)
        finite = bool(np.all(np.isfinite(sums))) and bool(np.isfinite(total))
        lost = bool(total == 0 and np.any(sums != 0))
        undefined = not lost and (total == 0 or (center and centred <= ZERO_VARIANCE * total))
        flags.append((finite, bool(undefined), lost))
    return flags


def _flag_arrays(flags):
    return {key: np.array([f[i] for f in flags]) for i, key in enumerate(("finite", "undefined", "squares_lost"))}


@_QUIET_RANGE
def feature_statistics(sums, product_pieces, mirrored, center, skewness=True, column_sums=True):
    """Sufficient statistics of every layer pair from the feature route's totals.

    Parameters
    ----------
    sums : sequence of dict
        Per product group, the :func:`combine` of :func:`chunk_sums` over all chunks;
        the first group holds the moments.
    product_pieces : sequence of (rows, cols)
        Per product (groups in order), the pieces ``(layer, start, stop, offset)``
        along its rows and columns.
    mirrored : sequence of bool
        Whether the product also stands for its transpose (an off-diagonal block pair
        of a symmetric job).
    center : bool
        Whether the statistics are of column-centred data (uncentred ones are of
        unshifted rows).
    skewness : bool
        Also compute ``trace_cubed``, which only the tests' skewness uses (centred
        data only; it costs ``2 p^3`` per layer); NaN otherwise.
    column_sums : bool
        Whether the moments hold the column sums (see :func:`chunk_moments`; centred
        statistics always need them).  Without, ``ones``, ``rowsum_sq`` and
        ``rowsum_norm`` are NaN.

    Returns
    -------
    dict
        ``n``, ``cross`` ``<A_l, A_m>`` (L, L), ``rowdot`` ``sum_i a_i b_i`` (L, L),
        ``trace`` ``sum_i a_i`` (L,), ``ones`` ``1'Ã1`` (L,), ``rowsum_sq`` and
        ``rowsum_norm`` (L,) (see :func:`_row_sums`), ``finite``, ``undefined`` and
        ``squares_lost`` flags (L,) (see :func:`layer_flags`); entries of pairs not
        computed are NaN.
    """
    products = [_f64(p) for group in sums for p in group["products"]]
    xp = namespace(*products)
    # every product's reductions are queued before the host waits for anything, and
    # copied back in one transfer: on a GPU each copy waits for the device; the plain
    # sums of squares need no means, so they queue behind the chunk products
    indicators = iter(_to_device_together(
        [_piece_indicator(pieces) for rows, cols in product_pieces for pieces in (rows, cols)], xp))
    plain = [_piece_squares(product, rows, next(indicators), next(indicators), xp)
             for product, (rows, _) in zip(products, product_pieces)]
    moments = _moments_on_host(sums[0]["moments"])
    n = moments["n"]
    n_layers = len(moments["colsum"])
    colsum = [_concat_host(c) for c in moments["colsum"]]
    residual = [c / n for c in colsum] if center else [np.zeros_like(c) for c in colsum]
    cubed = _cubed_traces(products, product_pieces, mirrored, residual, n, xp) if center and skewness else None
    # per piece pair: m_r' P m_c centred; uncentred, s_r' P s_c with s the column sums
    # (the |Xs|^2 of the permutation moments), the residual means being zero
    with_sums = center or column_sums
    weights = iter(_to_device_together(
        [_piece_indicator(pieces, residual if center else colsum) for rows, cols in product_pieces
         for pieces in (rows, cols)], xp) if with_sums else ())
    quads = [next(weights).T @ product @ next(weights) for product in products] if with_sums else []
    reduced = iter(_to_host_together(plain + quads + ([cubed] if cubed is not None else [])))
    plain = [next(reduced) for _ in products]
    quads = [next(reduced) for _ in quads]
    sum_quads = None
    if not center:
        sum_quads = quads if column_sums else None
        quads = [np.zeros((len(rows), len(cols))) for rows, cols in product_pieces]
    trace_cubed = next(reduced) if cubed is not None else np.full(n_layers, np.nan)
    cross = np.zeros((n_layers, n_layers))
    quad = np.zeros((n_layers, n_layers))
    sum_quad = np.zeros((n_layers, n_layers))
    computed = np.zeros((n_layers, n_layers), dtype=bool)
    squared = [c * c for c in residual]
    for p, ((rows, cols), mirror, plain_sums, quad_sums) in enumerate(zip(product_pieces, mirrored, plain, quads)):
        # |P - n m_r m_c'|^2 = |P|^2 - 2n m_r' P m_c + n^2 |m_r|^2 |m_c|^2, expanded so
        # that no p x q temporary is made (the residual means m are small)
        squares = (plain_sums - 2 * n * quad_sums
                   + n * n * np.outer(_piece_sums(rows, squared), _piece_sums(cols, squared)))
        cells = [(np.array([p[0] for p in rows])[:, None], np.array([p[0] for p in cols])[None, :])]
        if mirror:
            cells.append(cells[0][::-1])
        for index in cells:
            np.add.at(cross, index, squares)
            np.add.at(quad, index, quad_sums)
            if sum_quads is not None:
                np.add.at(sum_quad, index, sum_quads[p])
            computed[index] = True
    cross[~computed] = np.nan
    quad[~computed] = np.nan
    norm_sum = to_numpy(moments["norm_sum"])
    norm_outer = to_numpy(moments["norm_outer"])
    norm_cross = [[to_numpy(p) for p in parts] for parts in moments["norm_cross"]]
    sq = np.array([r @ r for r in residual])
    # a_i y_i summed, restricted to layer m's columns: row l of N'X over layer m
    nx_dot = np.zeros((n_layers, n_layers))
    for m, parts in enumerate(norm_cross):
        if parts:
            nx_dot[:, m] = np.concatenate(parts, axis=1) @ residual[m]
    # |x_i - mean|^2 = a'_i - 2 x'_i.mean' + |mean'|^2 with x' the shifted rows, mean' their mean
    rowdot = (
        norm_outer
        - 2 * nx_dot
        - 2 * nx_dot.T
        + np.outer(norm_sum, sq)
        + np.outer(sq, norm_sum)
        + 4 * quad
        - 3 * n * np.outer(sq, sq)
    )
    trace = norm_sum - n * sq
    if center:
        ones = -trace
        row_sums = _centred_row_sums(rowdot)
        trace_cubed[[len(c) > MAX_CUBED_WIDTH for c in colsum]] = np.nan
    elif not column_sums:
        ones = np.full(n_layers, np.nan)
        row_sums = {"rowsum_sq": np.full(n_layers, np.nan), "rowsum_norm": np.full(n_layers, np.nan)}
    else:
        # no shift without centring: the column sums are colsum, the rows unshifted
        ones = np.array([c @ c for c in colsum]) - trace
        # sum_i a_i x_i.s over layer l's own columns
        weighted = np.array([np.concatenate([p[l] for p in norm_cross[l]]) @ colsum[l] if norm_cross[l] else 0.0
                             for l in range(n_layers)])
        row_sums = _row_sums(np.diag(sum_quad), weighted, np.diag(rowdot))
    flags = layer_flags(moments, trace, center)
    return {
        "n": n,
        "cross": cross,
        "rowdot": rowdot,
        "trace": trace,
        "ones": ones,
        **row_sums,
        "trace_cubed": trace_cubed,
        **_flag_arrays(flags),
    }


# widest layer whose tr(A^3) is computed (p^3 operations on its p x p cross-product)
MAX_CUBED_WIDTH = 4096


def _cubed_traces(products, product_pieces, mirrored, residual, n, xp):
    """Per layer ``tr(A^3) = tr((X_c'X_c)^3)`` of the centred data, from the blocks of
    its own cross-product among ``products`` (0 for layers wider than MAX_CUBED_WIDTH,
    which are not assembled).  Feeds the skewness of the permutation distribution."""
    widths = [len(r) for r in residual]
    own = {layer: xp.zeros((width, width), dtype=xp.float64)
           for layer, width in enumerate(widths) if width <= MAX_CUBED_WIDTH}
    for product, (rows, cols), mirror in zip(products, product_pieces, mirrored):
        for layer, r_start, r_stop, r_offset in rows:
            for col_layer, c_start, c_stop, c_offset in cols:
                if layer != col_layer or layer not in own:
                    continue
                block = product[r_offset : r_offset + r_stop - r_start, c_offset : c_offset + c_stop - c_start]
                own[layer][r_start:r_stop, c_start:c_stop] = block
                if mirror:
                    own[layer][c_start:c_stop, r_start:r_stop] = block.T
    means = iter(_to_device_together([residual[layer][:, None] for layer in own], xp) if own else ())
    traces = []
    for layer in range(len(widths)):
        if layer not in own:
            traces.append(xp.zeros((), dtype=xp.float64))
            continue
        mean = next(means)
        centred = own[layer] - n * (mean @ mean.T)
        traces.append(xp.sum((centred @ centred) * centred))
    return xp.stack(traces)


def _row_sums(xs_squared, weighted, squared_norms):
    """Sums over rows of ``r_i = (Ã1)_i = x_i.s - a_i`` (``s`` the column sums):
    ``rowsum_sq`` = sum r_i^2 = |Xs|^2 - 2 sum a_i x_i.s + sum a_i^2 and ``rowsum_norm``
    = sum r_i a_i, from ``|Xs|^2``, ``sum a_i x_i.s`` and ``sum a_i^2`` per layer."""
    return {"rowsum_sq": xs_squared - 2 * weighted + squared_norms, "rowsum_norm": weighted - squared_norms}


def _centred_row_sums(rowdot):
    """Centred columns sum to zero, so ``r_i = -a_i``."""
    return _row_sums(0.0, 0.0, np.diag(rowdot).copy())


def _moments_on_host(moments):
    """The moments as numpy arrays, copied from a device in one transfer."""
    leaves = [a for parts in moments["colsum"] for a in parts]
    leaves += [moments["norm_sum"], moments["norm_outer"]]
    leaves += [a for parts in moments["norm_cross"] for a in parts]
    host = iter(_to_host_together(leaves))
    return {
        "n": moments["n"],
        "colsum": [[next(host) for _ in parts] for parts in moments["colsum"]],
        "norm_sum": next(host),
        "norm_outer": next(host),
        "norm_cross": [[next(host) for _ in parts] for parts in moments["norm_cross"]],
    }


def _to_host_together(arrays):
    """``arrays`` as float64 numpy arrays, copied from a device in one transfer: each
    separate copy waits for the device, and a hundred of them cost more than the
    products they summarise."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return [np.asarray(a, dtype=np.float64) for a in arrays]
    xp = namespace(*arrays)
    flat = to_numpy(_concat(xp, [xp.reshape(_f64(a), (-1,)) for a in arrays]))
    return _split(flat, [a.shape for a in arrays])


def _to_device_together(arrays, xp):
    """Host numpy ``arrays`` as arrays of ``xp``, copied in one transfer."""
    if xp is np:
        return arrays
    flat = xp.asarray(np.concatenate([a.reshape(-1) for a in arrays]), dtype=xp.float64)
    return _split(flat, [a.shape for a in arrays])


def _split(flat, shapes):
    xp = namespace(flat)
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    return [xp.reshape(flat[int(start):int(stop)], shape) for shape, start, stop in zip(shapes, bounds[:-1], bounds[1:])]


def _piece_squares(product, pieces, row_indicator, col_indicator, xp):
    """Per piece pair, the sum of the squares of that block of ``product``."""
    if xp is np:
        # per row piece, without a squared temporary of the whole product
        columns = [_sums_of_squares(product[offset : offset + stop - start, :], 0, xp)
                   for _, start, stop, offset in pieces]
        return xp.stack(columns, axis=0) @ col_indicator
    # on a device: one pass and two small GEMMs instead of launches per piece
    return row_indicator.T @ (product * product) @ col_indicator


def _piece_indicator(pieces, residual=None):
    """Which piece each row (or column) of a product belongs to, as a matrix
    ``(width, pieces)``: ones, or each row's residual mean when ``residual`` is given."""
    width = max(offset + stop - start for _, start, stop, offset in pieces)
    indicator = np.zeros((width, len(pieces)))
    for k, (layer, start, stop, offset) in enumerate(pieces):
        indicator[offset : offset + stop - start, k] = 1.0 if residual is None else residual[layer][start:stop]
    return indicator


def _piece_sums(pieces, values):
    """Per piece, the sum of its layer's ``values`` over the piece's columns."""
    return np.array([values[layer][start:stop].sum() for layer, start, stop, _ in pieces])


# observations per stream of bootstrap counts: the counts of an observation depend on
# the seed and its index only, never on the chunking
WEIGHT_BLOCK = 4096


def poisson_weights(seed, start, stop, replicates):
    """Poisson(1) counts of observations ``start:stop`` for every bootstrap replicate.

    Returns
    -------
    numpy.ndarray
        ``(stop - start, replicates)`` float64; block ``j`` of WEIGHT_BLOCK observations
        draws from its own stream keyed ``(seed, 1, j)``.
    """
    first, last = start // WEIGHT_BLOCK, (stop - 1) // WEIGHT_BLOCK
    counts = np.concatenate([np.random.default_rng([seed, 1, block]).poisson(1.0, size=(WEIGHT_BLOCK, replicates))
                             for block in range(first, last + 1)])
    offset = first * WEIGHT_BLOCK
    return counts[start - offset : stop - offset].astype(np.float64)


def permutation(seed, index, n):
    """The ``index``-th random permutation of ``n`` observations for ``seed``."""
    return np.random.default_rng([seed, 0, index]).permutation(n)


def gather_rows(chunks, indices):
    """Rows ``indices`` (global positions) of a layer laid out as consecutive row
    ``chunks``, in that order: one take (a scatter chunk by chunk costs four times more)."""
    xp = namespace(*chunks)
    whole = chunks[0] if len(chunks) == 1 else _concat(xp, list(chunks))
    return xp.take(whole, xp.asarray(indices), axis=0)


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
        elif _numpy_like(xp):
            # Inf in a layer makes NaN here, reported afterwards as an error naming it
            with np.errstate(invalid="ignore"):
                xp.subtract(part, offset, out=view, dtype=xp.float64)
        else:
            view = _f64(part) - offset
        yield view


def column_summary(chunks, shifts):
    """Pass one of the gram route: per layer sums of shifted columns and of their squares."""
    xp = namespace(*chunks)
    colsum, norm_sum = [], []
    for chunk, shift in zip(chunks, shifts):
        total, squares = 0.0, 0.0
        for block in _float64_row_blocks(chunk, None if shift is None else _f64(shift)):
            total = total + xp.sum(block, axis=0)
            squares = squares + xp.sum(_sums_of_squares(block, 1, xp))
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
            mean = mean + _f64(shift)
        means.append(mean)
    return means


def column_sums(summary):
    """Per layer, the column sums of unshifted data from :func:`column_summary` totals."""
    return [parts[0] for parts in summary["colsum"]]


@_QUIET_RANGE
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
            block_norms = _sums_of_squares(block, 1, xp)
            layer_norms.append(block_norms)
            if sums is not None:
                r = block @ _f64(sums[index]) - block_norms
                squares, weighted = squares + xp.sum(r * r), weighted + xp.sum(r * block_norms)
            out[start : start + block.shape[0], :] = _astype(block, out.dtype)
            start += block.shape[0]
        rows.append(out)
        norms.append(_concat(xp, layer_norms))
        row_sums.append((squares, weighted))
    norms = xp.stack(norms, axis=1)
    prepared = {"rows": rows, "norm_outer": norms.T @ norms, "norm_sum": xp.sum(norms, axis=0)}
    if sums is not None:
        prepared["rowsum_sq"] = xp.stack([xp.asarray(q, dtype=xp.float64) for q, _ in row_sums])
        prepared["rowsum_norm"] = xp.stack([xp.asarray(w, dtype=xp.float64) for _, w in row_sums])
    return prepared


def gram_tile(block_i, block_j, diagonal, keep=False):
    """Frobenius inner products ``<G_l, G_m>`` of the off-diagonal parts of the Gram
    tiles ``G_l = X_l[i] X_l[j]'`` of every layer, weighted 2 off the block diagonal.
    ``keep``: ``{"inner": those, "tiles": (L, b_i, b_j) float64}``, the tiles with
    their diagonal, for :func:`gram_cube`."""
    rows_i, rows_j = block_i["rows"], block_j["rows"]
    xp = namespace(*rows_i)
    with np.errstate(over="ignore", invalid="ignore"):
        inner, tiles = _tile_inner(rows_i, rows_j, diagonal, xp, keep)
    if rows_i[0].dtype != xp.float64 and not _all_finite([inner], xp):
        # float32 tiles overflow from about 1e19: this tile again in float64
        return gram_tile(_rows_f64(block_i), _rows_f64(block_j), diagonal, keep)
    return {"inner": inner, "tiles": tiles} if keep else inner


def _tile_inner(rows_i, rows_j, diagonal, xp, keep):
    b_i, b_j = rows_i[0].shape[0], rows_j[0].shape[0]
    factor = 1.0 if diagonal else 2.0
    if _numpy_like(xp):
        # each tile lands in its row of one float64 array, its diagonal zeroed in place:
        # no float64 copy, mask or stacked copy per tile (kept tiles get it back after)
        flat = xp.empty((len(rows_i), b_i * b_j), dtype=xp.float64)
        kept = xp.empty((len(rows_i), b_i), dtype=xp.float64) if diagonal and keep else None
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
        return inner, xp.reshape(flat, (len(rows_i), b_i, b_j)) if keep else None
    flat, tiles = [], []
    for x, y in zip(rows_i, rows_j):
        tile = _f64(x @ y.T)
        tiles.append(tile)
        if diagonal:
            tile = tile * (1.0 - xp.eye(b_i, dtype=xp.float64))
        flat.append(xp.reshape(tile, (b_i * b_j,)))
    flat = xp.stack(flat, axis=0)
    return factor * (flat @ flat.T), xp.stack(tiles, axis=0) if keep else None


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
    parts = [[_swap_last(t["tiles"]) if flip else t["tiles"] for t, flip in zip(row, flips)]
             for row, flips in zip(tiles, flipped)]
    if len(parts) == 1 and len(parts[0]) == 1:
        return parts[0][0]
    xp = namespace(parts[0][0])
    return _concat(xp, [_concat(xp, row, axis=2) for row in parts], axis=1)


def _swap_last(x):
    """``x`` with its last two axes swapped (``.mT`` of the array API, or CuPy's swapaxes)."""
    return x.mT if hasattr(x, "mT") else x.swapaxes(-1, -2)


def _rows_f64(block):
    return {**block, "rows": [_f64(x) for x in block["rows"]]}


@_QUIET_RANGE
def gram_statistics(summary, shifts, inner, prepared, center, cubed=None):
    """Sufficient statistics from the gram route's totals (see :func:`feature_statistics`);
    ``cubed``: the per-layer sum of :func:`gram_cube` (``tr(A^3)``), when the tests
    want it."""
    n = summary["n"]
    rowdot = to_numpy(prepared["norm_outer"])
    trace = to_numpy(prepared["norm_sum"])
    if center:
        ones = -trace
        row_sums = _centred_row_sums(rowdot)
    else:
        sums = [_concat_host(parts) for parts in summary["colsum"]]
        ones = np.array([s @ s for s in sums]) - trace
        row_sums = {key: to_numpy(prepared[key]) for key in ("rowsum_sq", "rowsum_norm")}
    flags = layer_flags(summary, trace, center)
    return {
        "n": n,
        "cross": to_numpy(inner) + rowdot,
        "rowdot": rowdot,
        "trace": trace,
        "ones": ones,
        **row_sums,
        "trace_cubed": np.full(len(trace), np.nan) if cubed is None else to_numpy(cubed).astype(np.float64),
        **_flag_arrays(flags),
    }
