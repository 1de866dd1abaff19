"""The feature route's totals (summed over every row chunk) turned into the sufficient
statistics of every layer pair (see :mod:`rv2dist.core.rv_family`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rv2dist.core.xp import QUIET_RANGE, concat_host, f64, namespace, to_device_together, to_host_together, to_numpy
from rv2dist.core.statistics import Statistics, centred_row_sums, flag_arrays, layer_flags, off_diagonal_row_sums


@QUIET_RANGE
def feature_statistics(sums, product_pieces, mirrored, center, cubes="own-products"):
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
    cubes : {"own-products", "none"}
        ``trace_cubed``, which only the tests' skewness uses (centred data only), from
        each layer's own cross-product (``2 p^3`` per layer), or not (NaN).

    Notes
    -----
    Moments summed without their column sums (``moments="row-norms"`` of
    :func:`rv2dist.core.feature.chunk_sums`: uncentred jobs that read no ``1'Ã1``) give
    NaN ``ones``, ``rowsum_sq`` and ``rowsum_norm``.

    Returns
    -------
    rv2dist.core.statistics.Statistics
        Of every pair of layers; entries of pairs not computed are NaN.
    """
    products = _products(sums)
    moments = _moments_on_host(sums[0]["moments"])
    n = moments["n"]
    colsum = [concat_host(c) for c in moments["colsum"]]
    residual = [c / n for c in colsum] if center else [np.zeros_like(c) for c in colsum]
    column_sums = any(parts for parts in moments["colsum"])
    reduced = _reductions(products, product_pieces, mirrored, residual, colsum, n, center, column_sums, cubes)
    pairs = _pair_sums(product_pieces, mirrored, reduced, residual, n, len(colsum))
    rowdot, trace = _row_norm_sums(moments, residual, pairs.quad, n)
    if center:
        ones, row_sums = -trace, centred_row_sums(rowdot)
        reduced.trace_cubed[[len(c) > MAX_CUBED_WIDTH for c in colsum]] = np.nan
    elif not column_sums:
        ones, row_sums = (np.full(len(colsum), np.nan),
                          {key: np.full(len(colsum), np.nan) for key in ("rowsum_sq", "rowsum_norm")})
    else:
        ones, row_sums = _uncentred_row_sums(moments, colsum, trace, pairs.sum_quad, rowdot)
    flags = layer_flags(moments, trace, center)
    return Statistics(n=n, cross=pairs.cross, rowdot=rowdot, trace=trace, ones=ones, **row_sums,
                      trace_cubed=reduced.trace_cubed, **flag_arrays(flags))


def _products(sums):
    """The summed products, float64 on a device; on the host as summed (a chunk of one
    sub-block hands on its float32 product), reduced in float64 a few rows at a time by
    :func:`_host_reductions`: a float64 copy of every product would be fresh memory,
    whose first touch costs more than the reductions themselves."""
    products = [p for group in sums for p in group["products"]]
    return products if namespace(*products) is np else [f64(p) for p in products]


@dataclass(frozen=True)
class _Reduced:
    """Per product, on the host: ``plain`` the sums of squares of its piece blocks,
    ``quads`` ``m_r' P m_c`` of the residual means (zeros uncentred), ``sum_quads``
    ``s_r' P s_c`` of the column sums (uncentred with column sums; else None); and
    per layer ``trace_cubed``."""

    plain: list
    quads: list
    sum_quads: list | None
    trace_cubed: np.ndarray


def _reductions(products, product_pieces, mirrored, residual, colsum, n, center, column_sums, cubes):
    """The products reduced to :class:`_Reduced`.  Every reduction is queued before the
    host waits for anything, and copied back in one transfer: on a GPU each copy waits
    for the device."""
    xp = namespace(*products)
    cubed = (_cubed_traces(products, product_pieces, mirrored, residual, n, xp)
             if center and cubes == "own-products" else None)
    # per piece pair: m_r' P m_c centred; uncentred, s_r' P s_c with s the column sums
    # (the |Xs|^2 of the permutation moments), the residual means being zero
    weights = residual if center else colsum if column_sums else None
    if xp is np:
        pairs = [_host_reductions(product, rows, cols, weights) for product, (rows, cols) in zip(products, product_pieces)]
        plain, quads = [p.squares for p in pairs], [p.quad for p in pairs if p.quad is not None]
    else:
        plain, quads = _device_reductions(products, product_pieces, weights, xp)
    reduced = iter(to_host_together(plain + quads + ([cubed] if cubed is not None else [])))
    plain = [next(reduced) for _ in products]
    quads = [next(reduced) for _ in quads]
    trace_cubed = next(reduced) if cubed is not None else np.full(len(colsum), np.nan)
    if center:
        return _Reduced(plain, quads, None, trace_cubed)
    zeros = [np.zeros((len(rows), len(cols))) for rows, cols in product_pieces]
    return _Reduced(plain, zeros, quads if column_sums else None, trace_cubed)


@dataclass(frozen=True)
class _PieceSums:
    """Of one product, per (row piece, column piece): ``squares`` the sum of the squared
    entries, ``quad`` ``w_r' P w_c`` (None without weights)."""

    squares: np.ndarray
    quad: np.ndarray | None


# rows of a float32 product upcast at a time by :func:`_host_reductions` (in cache)
_ROW_BLOCK = 32


def _host_reductions(product, rows, cols, weights):
    """:class:`_PieceSums` of a host ``product`` in one pass, in float64: a few rows at a
    time are upcast into a buffer that stays in cache, their column sums of squares and
    ``w' rows`` added per row piece; the column pieces are summed at the end."""
    column_sums_of_squares = np.zeros((len(rows), product.shape[1]))
    weighted_rows = np.zeros((len(rows), product.shape[1])) if weights is not None else None
    upcast = None if product.dtype == np.float64 else np.empty((_ROW_BLOCK, product.shape[1]))
    for k, (layer, start, stop, offset) in enumerate(rows):
        step = _ROW_BLOCK if upcast is not None else max(1, stop - start)
        for first in range(0, stop - start, step):
            last = min(stop - start, first + step)
            block = product[offset + first : offset + last]
            if upcast is not None:
                block = upcast[: last - first]
                block[...] = product[offset + first : offset + last]
            if weighted_rows is not None:
                weighted_rows[k] += weights[layer][start + first : start + last] @ block
            column_sums_of_squares[k] += np.einsum("ij,ij->j", block, block)
    squares = column_sums_of_squares @ _piece_indicator(cols)
    quad = weighted_rows @ _piece_indicator(cols, weights) if weights is not None else None
    return _PieceSums(squares, quad)


def _device_reductions(products, product_pieces, weights, xp):
    """The piece sums of squares and (with ``weights``) ``w_r' P w_c`` of float64 device
    products: one squaring pass and small GEMMs instead of launches per piece."""
    indicators = iter(to_device_together(
        [_piece_indicator(pieces) for rows, cols in product_pieces for pieces in (rows, cols)], xp))
    plain = [next(indicators).T @ (product * product) @ next(indicators) for product in products]
    if weights is None:
        return plain, []
    weighted = iter(to_device_together(
        [_piece_indicator(pieces, weights) for rows, cols in product_pieces for pieces in (rows, cols)], xp))
    return plain, [next(weighted).T @ product @ next(weighted) for product in products]


@dataclass(frozen=True)
class _PairSums:
    """Per layer pair: ``cross`` the centred ``<A_l, A_m>``, ``quad`` the summed
    ``m_r' P m_c``, ``sum_quad`` the summed ``s_r' P s_c`` (NaN where not computed)."""

    cross: np.ndarray
    quad: np.ndarray
    sum_quad: np.ndarray


def _pair_sums(product_pieces, mirrored, reduced, residual, n, n_layers):
    """The products' piece blocks added into every layer pair's sums."""
    cross, quad, sum_quad = (np.zeros((n_layers, n_layers)) for _ in range(3))
    computed = np.zeros((n_layers, n_layers), dtype=bool)
    squared = [c * c for c in residual]
    for p, ((rows, cols), mirror) in enumerate(zip(product_pieces, mirrored)):
        # |P - n m_r m_c'|^2 = |P|^2 - 2n m_r' P m_c + n^2 |m_r|^2 |m_c|^2, expanded so
        # that no p x q temporary is made (the residual means m are small)
        squares = (reduced.plain[p] - 2 * n * reduced.quads[p]
                   + n * n * np.outer(_piece_sums(rows, squared), _piece_sums(cols, squared)))
        cells = [(np.array([p[0] for p in rows])[:, None], np.array([p[0] for p in cols])[None, :])]
        if mirror:
            cells.append(cells[0][::-1])
        for index in cells:
            np.add.at(cross, index, squares)
            np.add.at(quad, index, reduced.quads[p])
            if reduced.sum_quads is not None:
                np.add.at(sum_quad, index, reduced.sum_quads[p])
            computed[index] = True
    cross[~computed] = np.nan
    quad[~computed] = np.nan
    return _PairSums(cross, quad, sum_quad)


def _row_norm_sums(moments, residual, quad, n):
    """``rowdot`` (sums of products of centred squared row norms) and ``trace`` from
    the shifted rows' sums: ``|x_i - mean|^2 = a'_i - 2 x'_i.mean' + |mean'|^2`` with
    ``x'`` the shifted rows and ``mean'`` their mean."""
    n_layers = len(residual)
    norm_sum = to_numpy(moments["norm_sum"])
    norm_outer = to_numpy(moments["norm_outer"])
    norm_cross = [[to_numpy(p) for p in parts] for parts in moments["norm_cross"]]
    sq = np.array([r @ r for r in residual])
    # a_i y_i summed, restricted to layer m's columns: row l of N'X over layer m
    nx_dot = np.zeros((n_layers, n_layers))
    for m, parts in enumerate(norm_cross):
        if parts:
            nx_dot[:, m] = np.concatenate(parts, axis=1) @ residual[m]
    rowdot = (
        norm_outer
        - 2 * nx_dot
        - 2 * nx_dot.T
        + np.outer(norm_sum, sq)
        + np.outer(sq, norm_sum)
        + 4 * quad
        - 3 * n * np.outer(sq, sq)
    )
    return rowdot, norm_sum - n * sq


def _uncentred_row_sums(moments, colsum, trace, sum_quad, rowdot):
    """``ones`` and the row sums of uncentred statistics (no shift: the column sums are
    ``colsum``, the rows unshifted)."""
    norm_cross = [[to_numpy(p) for p in parts] for parts in moments["norm_cross"]]
    ones = np.array([c @ c for c in colsum]) - trace
    # sum_i a_i x_i.s over layer l's own columns
    weighted = np.array([np.concatenate([p[l] for p in norm_cross[l]]) @ colsum[l] if norm_cross[l] else 0.0
                         for l in range(len(colsum))])
    return ones, off_diagonal_row_sums(np.diag(sum_quad), weighted, np.diag(rowdot))


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
    means = iter(to_device_together([residual[layer][:, None] for layer in own], xp) if own else ())
    traces = []
    for layer in range(len(widths)):
        if layer not in own:
            traces.append(xp.zeros((), dtype=xp.float64))
            continue
        mean = next(means)
        centred = own[layer] - n * (mean @ mean.T)
        traces.append(xp.sum((centred @ centred) * centred))
    return xp.stack(traces)


def _moments_on_host(moments):
    """The moments as numpy arrays, copied from a device in one transfer."""
    leaves = [a for parts in moments["colsum"] for a in parts]
    leaves += [moments["norm_sum"], moments["norm_outer"]]
    leaves += [a for parts in moments["norm_cross"] for a in parts]
    host = iter(to_host_together(leaves))
    return {
        "n": moments["n"],
        "colsum": [[next(host) for _ in parts] for parts in moments["colsum"]],
        "norm_sum": next(host),
        "norm_outer": next(host),
        "norm_cross": [[next(host) for _ in parts] for parts in moments["norm_cross"]],
    }


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
