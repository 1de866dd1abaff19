"""The RV family: RV, RV2, linear CKA, debiased CKA, RSA of linear kernels and of
squared distances, and the permutation level of RV2, each a ratio of inner products of
n x n matrices, from the sufficient statistics of every layer pair (small arrays only;
no n x n matrix, no sum beyond those both routes compute).

A :class:`~rv2dist.core.statistics.Statistics` holds, for
every computed pair of layers ``(l, m)`` with Grams ``A_l = X_l X_l'``: ``cross``
``<A_l, A_m>``, ``rowdot`` ``sum_i a_i b_i`` (``a`` the squared row norms), ``trace``
``tr A_l``, ``ones`` ``1' Ã_l 1`` and ``n`` the number of observations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Numerator:
    """The inner product a ratio measure divides by its diagonal's geometric mean.

    Under a random permutation of one side's observations the inner product is
    ``alpha T1 + beta T2 + const`` with ``T1 = <Ã, B̃_pi>`` and ``T2 = sum_i a_i b_pi(i)``
    (see :mod:`rv2dist.core.significance`): ``terms(n)`` gives ``(alpha, beta)``.
    """

    inner: Callable
    terms: Callable


def _gram_inner(stats):
    return stats.cross


def _off_diagonal_inner(stats):
    return stats.cross - stats.rowdot


def _unbiased_hsic(stats):
    """Song et al.'s unbiased HSIC of centred data, without its constant factor
    ``1 / (n (n - 3))``, which cancels in the ratio."""
    n = stats.n
    trace = stats.trace
    return stats.cross - n / (n - 2.0) * stats.rowdot + np.outer(trace, trace) / ((n - 1.0) * (n - 2.0))


def _rsa_covariance(stats):
    """``N`` times the covariance of the ``N = n (n - 1)`` off-diagonal entries of the
    linear-kernel similarity matrices ``A_l = X_l X_l'`` (Kriegeskorte et al. 2008):
    ``sum_{i != j} A_ij B_ij = <A, B> - sum_i a_i b_i`` and ``sum_{i != j} A_ij = 1'Ã1``
    (``-tr A`` for centred columns)."""
    ones = np.asarray(stats.ones, dtype=np.float64)
    return stats.cross - stats.rowdot - np.outer(ones, ones) / (stats.n * (stats.n - 1.0))


def _distance_covariance(stats):
    """The same for the squared Euclidean distances ``D_ij = |x_i - x_j|^2``, from
    centred statistics (distances do not depend on centring; this formula does): with
    ``D_ij = a_i + a_j - 2 A_ij`` and ``A1 = 0``, ``sum_{i != j} D_ij = 2 n tr A`` and
    ``sum_{i != j} D_ij E_ij = 2 n sum_i a_i b_i + 2 tr A tr B + 4 <A, B>``."""
    n = stats.n
    trace = np.asarray(stats.trace, dtype=np.float64)
    return 2.0 * n * stats.rowdot + 4.0 * stats.cross - 2.0 * (n + 1.0) / (n - 1.0) * np.outer(trace, trace)


GRAM = Numerator(_gram_inner, lambda n: (1.0, 1.0))
OFF_DIAGONAL = Numerator(_off_diagonal_inner, lambda n: (1.0, 0.0))
UNBIASED_HSIC = Numerator(_unbiased_hsic, lambda n: (1.0, -2.0 / (n - 2.0)))
# <A, B> = T1 + T2: 4 <A, B> + 2 n sum a_i b_i = 4 T1 + (2 n + 4) T2
RSA = Numerator(_rsa_covariance, lambda n: (1.0, 0.0))
RSA_DISTANCES = Numerator(_distance_covariance, lambda n: (4.0, 2.0 * n + 4.0))


def geometric_means(diagonal):
    """``sqrt(d_l d_m)`` for every pair, as ``sqrt(d_l) sqrt(d_m)``: the product itself
    leaves float64's range for layers of large or small scale (sums past 2^512).  On
    the diagonal ``|d_l|`` itself, so that a layer against itself is exactly 1."""
    with np.errstate(invalid="ignore"):
        root = np.sqrt(diagonal)
    means = np.outer(root, root)
    np.fill_diagonal(means, np.abs(diagonal))
    return means


def ratio(numerator):
    """The measure ``<., .> / sqrt(<A, A> <B, B>)`` of inner product ``numerator``."""

    def measure(stats):
        inner = numerator.inner(stats)
        with np.errstate(invalid="ignore", divide="ignore"):
            return inner / geometric_means(np.diag(inner).copy())

    return measure


def rv2_null(stats):
    """Expected RV2 under random permutation of the rows of one side:
    ``(1'Ã1)(1'B̃1) / (n (n - 1) |Ã| |B̃|)``, ``tr A tr B / (...)`` for centred data."""
    n = stats.n
    inner = np.diag(_off_diagonal_inner(stats)).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.outer(stats.ones, stats.ones) / (n * (n - 1.0) * geometric_means(inner))
