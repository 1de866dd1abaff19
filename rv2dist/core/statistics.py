"""Properties of the sufficient statistics themselves (small arrays only): whether the
arithmetic that summed them was in range for each layer, and the symmetric and
copied layouts of a network compared with itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from rv2dist.core.xp import concat_host, to_numpy

@dataclass(frozen=True)
class Statistics:
    """The sufficient statistics of every pair of a job's layers (both sides, in plan
    order), with Grams ``A_l = X_l X_l'`` and squared row norms ``a``; entries of pairs
    not computed are NaN.

    Attributes
    ----------
    n : float
        Observations (the sum of the weights of a bootstrap replicate).
    cross : (L, L) array
        ``<A_l, A_m>``.
    rowdot : (L, L) array
        ``sum_i a_i b_i``.
    trace : (L,) array
        ``tr A_l``.
    ones : (L,) array
        ``1' Ã_l 1`` (NaN where the job did not need the column sums).
    rowsum_sq, rowsum_norm : (L,) arrays
        ``sum_i r_i^2`` and ``sum_i r_i a_i`` of the row sums ``r = Ã1`` (see
        :func:`off_diagonal_row_sums`); the permutation variance reads them.
    trace_cubed : (L,) array
        ``tr(A^3)``, for the tests' skewness; NaN where not computed.
    finite, undefined, squares_lost : (L,) bool arrays
        Per layer (see :func:`layer_flags`).
    """

    n: Any
    cross: Any
    rowdot: Any
    trace: Any
    ones: Any
    rowsum_sq: Any
    rowsum_norm: Any
    trace_cubed: Any
    finite: Any
    undefined: Any
    squares_lost: Any

    def replace(self, **changes) -> Statistics:
        return dataclasses.replace(self, **changes)


# float32 products of values of smaller mean square lose bits in the subnormals
# (squares below 2^-126)
FLOAT32_MIN_MEAN_SQUARE = 2.0**-120
# sums of squares whose squares (the fourth-order sums <A, B>) are normal float64
# numbers, with room for a layer's 1/p spread and for sums of many terms
FLOAT64_TRACE_RANGE = (2.0**-480, 2.0**480)


def scale_faults(stats, widths, compute_dtype):
    """Per layer, why its values are too small or too large for the arithmetic that
    computed ``stats`` (``None``: they are not).  The metrics do not depend on a
    layer's scale, but their sums in floating point do."""
    faults = []
    for lost, undefined, trace, width in zip(stats.squares_lost, stats.undefined, stats.trace, widths):
        mean_square = trace / (stats.n * width)
        if lost:
            faults.append(f"is too small: every square underflowed to 0 in {compute_dtype}")
        elif undefined or not np.isfinite(trace):
            faults.append(None)
        elif compute_dtype == "float32" and mean_square < FLOAT32_MIN_MEAN_SQUARE:
            faults.append(f"is too small for float32 products (mean square {mean_square:.1e})")
        elif not FLOAT64_TRACE_RANGE[0] <= trace <= FLOAT64_TRACE_RANGE[1]:
            faults.append(f"has a sum of squares ({trace:.1e}) too {'small' if trace < 1 else 'large'} "
                          "for float64 statistics")
        else:
            faults.append(None)
    return faults


def symmetrised(stats):
    """``stats`` of a network against itself with each pair's two cells made one value:
    the same sums, accumulated in different orders, differ in their last bits."""
    return stats.replace(cross=(stats.cross + stats.cross.T) / 2, rowdot=(stats.rowdot + stats.rowdot.T) / 2)


def against_copy(stats, n_layers):
    """Statistics of a network's ``n_layers`` layers against a (permuted) copy of
    themselves, computed as ``2 n_layers`` layers of which only the cross block is
    filled, in the ``(n_layers, n_layers)`` layout of the network against itself."""
    rows, cols = slice(0, n_layers), slice(n_layers, 2 * n_layers)
    def block(value):
        return value[rows, cols] if np.ndim(value) == 2 else value[rows] if np.ndim(value) == 1 else value

    return Statistics(**{field.name: block(getattr(stats, field.name)) for field in dataclasses.fields(stats)})


# relative size of the centred sum of squares under which a layer counts as constant
ZERO_VARIANCE = 1e-10


def layer_flags(moments, trace, center):
    """Per layer: ``(finite, undefined, squares_lost)``; undefined means zero variance
    (centred; the centred sum of squares ``trace`` vanishes against the shifted one) or
    all zeros; squares lost, that the values are not all zero (a column sum is not) but
    every square underflowed to 0."""
    flags = []
    for sums, total, centred in zip(moments["colsum"], to_numpy(moments["norm_sum"]), trace):
        sums = concat_host(sums)
        finite = bool(np.all(np.isfinite(sums))) and bool(np.isfinite(total))
        lost = bool(total == 0 and np.any(sums != 0))
        undefined = not lost and (total == 0 or (center and centred <= ZERO_VARIANCE * total))
        flags.append((finite, bool(undefined), lost))
    return flags


def flag_arrays(flags):
    return {key: np.array([f[i] for f in flags]) for i, key in enumerate(("finite", "undefined", "squares_lost"))}


def off_diagonal_row_sums(xs_squared, weighted, squared_norms):
    """Sums over rows of ``r_i = (Ã1)_i = x_i.s - a_i`` (``s`` the column sums):
    ``rowsum_sq`` = sum r_i^2 = |Xs|^2 - 2 sum a_i x_i.s + sum a_i^2 and ``rowsum_norm``
    = sum r_i a_i, from ``|Xs|^2``, ``sum a_i x_i.s`` and ``sum a_i^2`` per layer."""
    return {"rowsum_sq": xs_squared - 2 * weighted + squared_norms, "rowsum_norm": weighted - squared_norms}


def centred_row_sums(rowdot):
    """Centred columns sum to zero, so ``r_i = -a_i``."""
    return off_diagonal_row_sums(0.0, 0.0, np.diag(rowdot).copy())
