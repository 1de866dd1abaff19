"""Representational similarity analysis (Kriegeskorte et al. 2008) from the sufficient
statistics both routes already compute (see :mod:`rv2dist.metrics`): ``n``, ``cross``
``<A_l, A_m>``, ``rowdot`` ``Σ_i a_i b_i``, ``trace`` ``Σ_i a_i`` and ``ones``
``1'Ã_l 1``.  No n x n matrix and no extra sum over observations.

Each measure is the Pearson correlation of the ``N = n (n - 1)`` off-diagonal entries
of two n x n matrices, ``Σ D E - Σ D Σ E / N`` over the square roots of the same for
``D`` and ``E`` themselves.
"""

from __future__ import annotations

import numpy as np

from rv2dist.core.metrics import _normalise


def _off_diagonal_count(stats):
    n = stats["n"]
    return n * (n - 1.0)


def rsa(stats):
    """(L, L) Pearson correlations of the off-diagonal entries of the linear-kernel
    similarity matrices ``A_l = X_l X_l'``: of centred columns from centred statistics
    (the default), of the raw columns from uncentred ones.

    ``Σ_{i≠j} A_ij B_ij = <A, B> - Σ_i a_i b_i`` and ``Σ_{i≠j} A_ij = 1'Ã1`` (``-tr A``
    centred).
    """
    ones = np.asarray(stats["ones"], dtype=np.float64)
    covariance = stats["cross"] - stats["rowdot"] - np.outer(ones, ones) / _off_diagonal_count(stats)
    return _normalise(covariance)


def rsa_euclidean(stats):
    """(L, L) Pearson correlations of the off-diagonal entries of the squared Euclidean
    distance matrices ``D_ij = |x_i - x_j|²``, from centred statistics (distances do
    not depend on centring; the formula does).

    With centred rows ``D_ij = a_i + a_j - 2 A_ij`` and ``A1 = 0``, so
    ``Σ_{i≠j} D_ij = 2 n tr A`` and ``Σ_{i≠j} D_ij E_ij = 2 n Σ_i a_i b_i + 2 tr A tr B
    + 4 <A, B>``.
    """
    n = stats["n"]
    trace = np.asarray(stats["trace"], dtype=np.float64)
    covariance = (2.0 * n * stats["rowdot"] + 4.0 * stats["cross"]
                  - 2.0 * (n + 1.0) / (n - 1.0) * np.outer(trace, trace))
    return _normalise(covariance)
