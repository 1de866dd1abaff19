"""The second-moment measures of a job (CCA, SVCCA, PWCCA, Procrustes, shape metrics,
regression) from the feature route's totals: the centred p x p blocks of every layer
and of every pair the result holds, assembled from the summed products, then one
eigendecomposition per layer and the measures of every cell (see
:mod:`rv2dist.core.second_moments` for each formula).

Pure and array-namespace agnostic: on a GPU the blocks and their linear algebra stay
in CuPy; only the small matrices of values come back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rv2dist.core import second_moments as sm
from rv2dist.core.xp import QUIET_RANGE, concat, f64, namespace

# relative eigenvalue cut-offs by the dtype of the summed products: float32 products
# carry errors near 1e-7 of a block's largest eigenvalue, which whitening would magnify
RCOND_BY_DTYPE = {"float64": 1e-8, "float32": 1e-5}


@dataclass(frozen=True)
class MeasureOptions:
    """The options of the second-moment measures, validated.

    Attributes
    ----------
    alpha : float
        ``shape_metric``'s partial whitening in [0, 1]: 1 rotations only (Procrustes
        angle), 0 any invertible linear map (CCA); netrep's convention.
    ridge_lambda : float
        ``ridge``'s penalty >= 0, relative to the mean eigenvalue of the predicting layer.
    svcca_variance : float
        Share of each layer's variance SVCCA keeps, in (0, 1].
    rcond : float or None
        Relative eigenvalue cut-off of whitening, pseudo-inverses and ranks; None: by
        the products' dtype (:data:`RCOND_BY_DTYPE`).
    """

    alpha: float = sm.DEFAULTS["alpha"]
    ridge_lambda: float = sm.DEFAULTS["ridge_lambda"]
    svcca_variance: float = sm.DEFAULTS["svcca_variance"]
    rcond: float | None = None

    def cut_off(self, compute_dtype) -> float:
        return RCOND_BY_DTYPE.get(compute_dtype, RCOND_BY_DTYPE["float64"]) if self.rcond is None else self.rcond


def check_measure_options(alpha=sm.DEFAULTS["alpha"], ridge_lambda=sm.DEFAULTS["ridge_lambda"],
                          svcca_variance=sm.DEFAULTS["svcca_variance"], rcond=None) -> MeasureOptions:
    """The options as a :class:`MeasureOptions`; a ValueError naming the option and the
    value outside its range."""
    return MeasureOptions(sm.check_option("alpha", alpha), sm.check_option("ridge_lambda", ridge_lambda),
                          sm.check_option("svcca_variance", svcca_variance),
                          None if rcond is None else sm.check_option("rcond", rcond))


@dataclass(frozen=True)
class Blocks:
    """Centred second-moment blocks: ``n`` observations (the weights' sum for a
    bootstrap replicate), ``own[l]`` each layer's ``C_ll`` (None where not summed) and
    ``cross[(l, m)]`` the ``C_lm`` of every cell asked for (layers in plan order)."""

    n: float
    own: tuple
    cross: dict


def _piece_pairs(products, product_pieces, mirrored):
    """Every block of a product as ``(row layer, column layer, rows, columns, block)``,
    and its transpose for a mirrored product."""
    for product, (rows, cols), mirror in zip(products, product_pieces, mirrored):
        for layer, start, stop, offset in rows:
            for col_layer, col_start, col_stop, col_offset in cols:
                part = product[offset: offset + stop - start, col_offset: col_offset + col_stop - col_start]
                yield layer, col_layer, (start, stop), (col_start, col_stop), part
                if mirror:
                    yield col_layer, layer, (col_start, col_stop), (start, stop), part.T


@QUIET_RANGE  # sums past float64 are named by layer when the job ends, not as numpy's warnings
def centred_blocks(sums, product_pieces, mirrored, widths, cells) -> Blocks:
    """The :class:`Blocks` of ``cells`` (and of their layers) from the feature route's
    totals of centred (shifted) data: ``C = P - s_x s_y' / n``, ``P`` the summed
    products and ``s`` the column sums of the shifted rows (nothing cancels: the shift
    is near the mean).

    Parameters
    ----------
    sums : sequence of dict
        Per product group, the combined chunk sums; the first group holds the moments.
    product_pieces, mirrored
        As :func:`rv2dist.core.feature_totals.feature_statistics` takes them.
    widths : sequence of int
        Units of every layer, in plan order.
    cells : sequence of (int, int)
        The layer pairs wanted.
    """
    products = [f64(p) for group in sums for p in group["products"]]
    xp = namespace(*products)
    moments = sums[0]["moments"]
    n = float(moments["n"])
    layers = {index for cell in cells for index in cell}
    wanted = {(l, l) for l in layers} | set(cells)
    full = {key: xp.zeros((widths[key[0]], widths[key[1]]), dtype=xp.float64) for key in wanted}
    for row, col, (start, stop), (col_start, col_stop), part in _piece_pairs(products, product_pieces, mirrored):
        if (row, col) in full:
            full[row, col][start:stop, col_start:col_stop] = part
    column_sums = {l: concat(xp, [f64(p) for p in moments["colsum"][l]]) for l in layers}
    centred = {key: sm.centred_cross(block, column_sums[key[0]], column_sums[key[1]], n) for key, block in full.items()}
    own = tuple(centred.get((l, l)) for l in range(len(widths)))
    return Blocks(n, own, {cell: centred[cell] for cell in cells})


@dataclass(frozen=True)
class BlockValues:
    """What the second-moment measures give for a job's cells: ``values[measure]`` an
    ``(La, Lb)`` matrix; ``ranks`` each layer's numerical rank (rows' layers, then
    columns'); ``forced`` per cell how many canonical correlations are 1 whatever the
    data (rank against the number of observations: Kornblith et al. 2019)."""

    values: dict
    ranks: tuple
    forced: np.ndarray


def decompose(blocks: Blocks, cut_off) -> dict:
    """``{layer: LayerBlocks}``: each layer's ``C`` decomposed once, for every cell and
    measure."""
    return {l: sm.layer_blocks(c, blocks.n, rcond=cut_off) for l, c in enumerate(blocks.own) if c is not None}


def _pairs(layers, blocks, cells, measures):
    """``((row, col), PairBlocks)`` of each cell, its SVD with vectors taken first when
    a measure needs the canonical vectors (the correlations then reuse its values)."""
    vectors = any(measure.canonical_vectors for measure in measures)
    for row, col in cells:
        pair = sm.pair_blocks(layers[row], layers[col], blocks.cross[row, col])
        if vectors and pair.defined:
            pair.canonical  # noqa: B018  (computed and kept on the pair)
        yield (row, col), pair


def _cell(pair, measures, options):
    return [measure.pair_value(pair, options) for measure in measures], sm.forced_ones(pair)


def cell_values(layers, blocks, cells, measures, options):
    """Per cell, ``(values per measure, forced ones)``; ``measures`` the
    :class:`~rv2dist.core.measures.Measure` s of the second-moment family."""
    return {cell: _cell(pair, measures, options) for cell, pair in _pairs(layers, blocks, cells, measures)}


def _cell_values_both_ways(layers, blocks, cells, measures, options):
    """:func:`cell_values` of ``cells`` and of each off-diagonal one the other way round,
    ``(col, row)``, from the same pair reversed (its SVD reused; a symmetric measure's
    value copied)."""
    found = {}
    for (row, col), pair in _pairs(layers, blocks, cells, measures):
        values, forced = found[row, col] = _cell(pair, measures, options)
        if row != col:
            back = pair.reversed()
            found[col, row] = ([value if measure.symmetric else measure.pair_value(back, options)
                                for measure, value in zip(measures, values)], forced)
    return found


def block_values(layers, blocks, rows, cols, measures, options, symmetric_cells=False) -> BlockValues:
    """The matrices of ``measures`` over ``rows`` x ``cols`` (layer indices of
    ``blocks``), the layers decomposed in ``layers`` (see :func:`decompose`; a layer's
    index there may stand for its copy's); ``symmetric_cells``: a network against
    itself, where each pair of the upper triangle gives its lower cell too."""
    cells = [(r, c) for r in rows for c in cols]
    computed = [(r, c) for r, c in cells if r <= c] if symmetric_cells else cells
    found = (_cell_values_both_ways if symmetric_cells else cell_values)(layers, blocks, computed, measures, options)
    shape = (len(rows), len(cols))
    values = {measure.name: np.full(shape, math.nan) for measure in measures}
    forced = np.zeros(shape, dtype=int)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell, forced[i, j] = found[r, c]
            for measure, value in zip(measures, cell):
                values[measure.name][i, j] = value
    ranks = tuple(layers[l].rank if l in layers else 0 for l in list(rows) + list(cols))
    return BlockValues(values, ranks, forced)


def with_copies(layers, offset, count):
    """``layers`` and, at ``offset + l``, a copy of layer ``l`` of the first ``count``:
    a network against a (permuted) copy of itself, whose pairs are no layer against
    itself."""
    import dataclasses

    return {**layers, **{offset + l: dataclasses.replace(layers[l]) for l in range(count)}}
