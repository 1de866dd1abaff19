"""From sufficient statistics to similarity metrics (small arrays only).

A statistics mapping (see :func:`rv2dist.core.kernels.feature_statistics`) holds, for every
computed pair of layers ``(l, m)`` with Grams ``A_l = X_l X_l'``:

``cross``   ``<A_l, A_m>``, ``rowdot`` ``sum_i a_i b_i`` (``a`` the squared row norms),
``trace``   ``tr A_l``, ``ones`` ``1' Ã_l 1``, ``n`` the number of observations.
"""

from __future__ import annotations

import numpy as np

METRICS = ("rv2", "rv", "cka", "cka_debiased", "rv2_null")
# long_name and description attrs of each metric's variable in a result
DESCRIPTIONS = {
    "rv2": ("modified RV coefficient (RV2)", "<A~, B~> / sqrt(<A~, A~> <B~, B~>), the Grams without their "
            "diagonals (Smilde et al. 2009); near 0 for unrelated layers, 1 for equal ones up to rotation and scale"),
    "rv": ("RV coefficient", "<A, B> / sqrt(<A, A> <B, B>) of the Gram matrices (Escoufier 1973)"),
    "cka": ("linear CKA", "centred kernel alignment with linear kernels: RV of the centred data "
            "(Kornblith et al. 2019)"),
    "cka_debiased": ("debiased linear CKA", "linear CKA with the unbiased HSIC estimator (Song et al. 2012); "
                     "may be slightly negative"),
    "rv2_null": ("expected RV2 under permutation", "the mean of RV2 when the observations of one side are "
                 "shuffled: the level an RV2 is compared against"),
}
CENTRED_ONLY = frozenset({"cka", "cka_debiased"})
# the unbiased HSIC divides by n (n - 3)
MIN_OBS = {"cka_debiased": 4}


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
    for lost, undefined, trace, width in zip(stats["squares_lost"], stats["undefined"], stats["trace"], widths):
        mean_square = trace / (stats["n"] * width)
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


def _geometric_means(diagonal):
    """``sqrt(d_l d_m)`` for every pair, as ``sqrt(d_l) sqrt(d_m)``: the product itself
    leaves float64's range for layers of large or small scale (sums past 2^512).  On
    the diagonal ``|d_l|`` itself, so that a layer against itself is exactly 1."""
    with np.errstate(invalid="ignore"):
        root = np.sqrt(diagonal)
    means = np.outer(root, root)
    np.fill_diagonal(means, np.abs(diagonal))
    return means


def _normalise(numerator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / _geometric_means(np.diag(numerator).copy())


def _off_diagonal_inner(stats):
    return stats["cross"] - stats["rowdot"]


def _gram_inner(stats):
    return stats["cross"]


def rv(stats):
    """RV = <A, B> / sqrt(<A, A> <B, B>)."""
    return _normalise(_gram_inner(stats))


def rv2(stats):
    """RV2 = <Ã, B̃> / sqrt(<Ã, Ã> <B̃, B̃>), Ã the Gram without its diagonal."""
    return _normalise(_off_diagonal_inner(stats))


def _unbiased_hsic(stats):
    n = stats["n"]
    trace = stats["trace"]
    return (
        stats["cross"]
        - n / (n - 2.0) * stats["rowdot"]
        + np.outer(trace, trace) / ((n - 1.0) * (n - 2.0))
    )


def cka_debiased(stats):
    """Linear CKA with Song et al.'s unbiased HSIC (valid for centred statistics).

    Kornblith's ``feature_space_linear_cka(debiased=True)``; the constant factor
    ``1 / (n (n - 3))`` cancels in the ratio.
    """
    return _normalise(_unbiased_hsic(stats))


def rv2_null(stats):
    """Expected RV2 under random permutation of the rows of one side:
    ``(1'Ã1)(1'B̃1) / (n (n - 1) |Ã| |B̃|)``, ``tr A tr B / (...)`` for centred data."""
    n = stats["n"]
    inner = np.diag(_off_diagonal_inner(stats)).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.outer(stats["ones"], stats["ones"]) / (n * (n - 1.0) * _geometric_means(inner))


_FORMULAS = {"rv2": rv2, "rv": rv, "cka": rv, "cka_debiased": cka_debiased, "rv2_null": rv2_null}
# the inner product each ratio metric divides by its diagonal's geometric mean
NUMERATORS = {"rv2": _off_diagonal_inner, "rv": _gram_inner, "cka": _gram_inner, "cka_debiased": _unbiased_hsic}


def symmetrised(stats):
    """``stats`` of a network against itself with each pair's two cells made one value:
    the same sums, accumulated in different orders, differ in their last bits."""
    return {**stats, **{key: (stats[key] + stats[key].T) / 2 for key in ("cross", "rowdot")}}


def against_copy(stats, n_layers):
    """Statistics of a network's ``n_layers`` layers against a (permuted) copy of
    themselves, computed as ``2 n_layers`` layers of which only the cross block is
    filled, in the ``(n_layers, n_layers)`` layout of the network against itself."""
    rows, cols = slice(0, n_layers), slice(n_layers, 2 * n_layers)
    return {key: value[rows, cols] if np.ndim(value) == 2 else value[rows] if np.ndim(value) == 1 else value
            for key, value in stats.items()}


def metric_matrix(name, stats):
    """The full (L, L) matrix of metric ``name``; undefined layers give NaN rows/columns,
    and fewer (weighted) observations than the metric needs an all-NaN matrix."""
    if stats["n"] < MIN_OBS.get(name, 0):
        return np.full(np.shape(stats["cross"]), np.nan)
    values = _FORMULAS[name](stats)
    undefined = np.asarray(stats["undefined"], dtype=bool)
    values[undefined, :] = np.nan
    values[:, undefined] = np.nan
    return values


def needs_centring(name, center):
    """Whether metric ``name`` is computed from centred statistics."""
    return True if name in CENTRED_ONLY else bool(center)
