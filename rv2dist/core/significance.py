"""Significance from the sufficient statistics: exact permutation moments, z-scores,
p-values and multiple-testing corrections (small arrays only).

Under a uniformly random permutation ``pi`` of the observations of one side, every
ratio metric is ``(alpha T1 + beta T2 + const) / scale`` with a constant ``scale`` and

``T1 = <Ã, B̃_pi>``
    a Mantel (quadratic assignment) statistic of two symmetric zero-diagonal matrices;
``T2 = sum_i a_i b_pi(i)``
    a linear permutation statistic of the squared row norms (the Grams' diagonals).

``<A, B> = T1 + T2``; RV2 is ``T1``; debiased CKA's unbiased HSIC is
``T1 - 2 T2 / (n - 2) + tr A tr B / ((n - 1)(n - 2))``.  The exact mean and variance of
``T1`` (Mantel 1967; Hubert 1987), of ``T2`` and their covariance depend on each side
only through ``n`` and six sums: ``S1 = 1'Ã1``, ``S2 = |Ã|^2``, ``S3 = sum_i r_i^2``
(``r = Ã1``), ``Q = sum_i r_i a_i``, ``sum a_i`` and ``sum a_i^2``.  They are written
with the off-diagonal mean of ``Ã`` and the mean of ``a`` removed first (neither
changes a variance), so that no two large terms cancel.  The derivation is in
docs/statistics.md.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from rv2dist.core.measures import MEASURES

# the measures with exact permutation moments and Monte Carlo permutation p-values
TESTED = tuple(name for name, measure in MEASURES.items() if measure.numerator is not None)
CORRECTIONS = ("holm", "bh")
# the Mantel variance divides by n - 3
MIN_OBS = 4
# corrected p-values below this are starred in heatmaps and on the dashboard page
MARK_LEVEL = 0.05
# the smallest p-value reported: further out the fitted law's tail leaves float64 (it
# underflows to 0 from about 1e-308); a p-value at the floor means p <= P_FLOOR, and
# the z-score is what tells such cells apart
P_FLOOR = 1e-300


def check_tests(names, tests) -> None:
    """``tests=True`` adds the exact tests of the measures among ``names`` that have
    them; a ValueError naming them when none has (the option would add nothing)."""
    if tests and not any(name in TESTED for name in names):
        raise ValueError(f"tests=True gives the exact permutation tests of {', '.join(TESTED)}; none of the metrics "
                         f"asked for ({', '.join(names)}) has them: permutations=K gives Monte Carlo p-values of "
                         "every measure")


def _side(stats):
    """Per layer: the sums the moments need, each with its mean part removed."""
    n = stats.n
    s1, a1 = stats.ones, stats.trace
    a2 = np.diag(stats.rowdot)
    s2 = np.diag(stats.cross) - a2
    return {
        "s1": s1,
        "a1": a1,
        "s2": s2 - s1 * s1 / (n * (n - 1.0)),
        "s3": stats.rowsum_sq - s1 * s1 / n,
        "q": stats.rowsum_norm - s1 * a1 / n,
        "a2": a2 - a1 * a1 / n,
    }


def permutation_moments(stats):
    """Exact means, variances and covariance of ``T1`` and ``T2`` for every layer pair.

    Parameters
    ----------
    stats : dict
        Sufficient statistics (:class:`~rv2dist.core.statistics.Statistics`).

    Returns
    -------
    dict of (L, L) arrays
        ``mean1``, ``var1``, ``mean2``, ``var2``, ``cov``.
    """
    n = float(stats.n)
    side = _side(stats)
    outer = np.outer
    s2, s3 = side["s2"], side["s3"]
    mixed = s3 - s2
    disjoint = 2 * s2 - 4 * s3
    with np.errstate(invalid="ignore"):
        return {
            "mean1": outer(side["s1"], side["s1"]) / (n * (n - 1)),
            "var1": (2 * outer(s2, s2) / (n * (n - 1))
                     + 4 * outer(mixed, mixed) / (n * (n - 1) * (n - 2))
                     + outer(disjoint, disjoint) / (n * (n - 1) * (n - 2) * (n - 3))),
            "mean2": outer(side["a1"], side["a1"]) / n,
            "var2": outer(side["a2"], side["a2"]) / (n - 1),
            "cov": 2 * outer(side["q"], side["q"]) / ((n - 1) * (n - 2)),
        }


def null_moments(name, stats):
    """Mean and variance of metric ``name`` under permutation, for every layer pair.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(L, L)`` means and variances; NaN where a layer's metric is undefined.
    """
    n = float(stats.n)
    moments = permutation_moments(stats)
    inner = MEASURES[name].numerator
    alpha, beta = inner.terms(n)
    numerator = inner.inner(stats)
    diagonal = np.diag(numerator)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.outer(diagonal, diagonal))
        # the constant part: the numerator minus its permutation-varying terms, which for
        # the observed pair are T1 = <Ã, B̃> and T2 = sum a_i b_i
        t1 = stats.cross - stats.rowdot
        constant = numerator - alpha * t1 - beta * stats.rowdot
        mean = (alpha * moments["mean1"] + beta * moments["mean2"] + constant) / scale
        variance = (alpha * alpha * moments["var1"] + beta * beta * moments["var2"]
                    + 2 * alpha * beta * moments["cov"]) / (scale * scale)
    return mean, variance


def z_scores(value, mean, variance):
    """``(value - mean) / sd``; NaN where the variance is not positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 0, (value - mean) / np.sqrt(np.where(variance > 0, variance, 1.0)), np.nan)


def skewness(stats):
    """Large-n skewness of the permutation distribution of every centred metric.

    With centred columns the permuted cross-product ``X'Y_pi`` has asymptotically
    independent Gaussian entries in the singular bases, so ``|X'Y_pi|^2`` (the leading
    term of every numerator) tends to ``sum_kl lambda_k mu_l g_kl^2 / (n - 1)``: its
    skewness is ``2 sqrt(2) c_A c_B`` with ``c = tr(A^3) / tr(A^2)^(3/2)``.  NaN where
    ``tr(A^3)`` is not known (uncentred data, the gram route, very wide layers).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = stats.trace_cubed / np.diag(stats.cross) ** 1.5
    return 2.0 * math.sqrt(2.0) * np.outer(shape, shape)


def upper_p(z, skew):
    """Upper one-sided p-values of standardised statistics ``z``: a Pearson type III
    (shifted gamma) law of skewness ``skew`` where it is known, as FactoMineR's
    ``coeffRV`` does, else the standard normal (NaN z stays NaN); never below
    :data:`P_FLOOR`."""
    from scipy.stats import norm, pearson3

    z = np.asarray(z, dtype=float)
    skew = np.broadcast_to(skew, z.shape)
    known = np.isfinite(skew)
    with np.errstate(invalid="ignore"):
        p = np.where(known, pearson3.sf(z, np.where(known, skew, 0.0)), norm.sf(z))
    return np.maximum(p, P_FLOOR)  # NaN stays NaN


def at_floor(p):
    """Where p-values of :func:`upper_p` rest on :data:`P_FLOOR` (their true value may
    be any smaller one); False where NaN."""
    return np.asarray(p, dtype=float) <= P_FLOOR


# figures show z in place of the star where the p-value rests on the floor
FLOOR_NOTE = f"numbers: z where p <= {P_FLOOR:g}"


def floor_z(p, z):
    """The z-scores of the cells whose p-value rests on the floor, NaN elsewhere; None
    when no cell's does."""
    floor = at_floor(p)
    return np.where(floor, np.asarray(z, dtype=float), np.nan) if floor.any() else None


def choose_correction(correction):
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
    return correction


def correct(p_values, correction="holm"):
    """Adjusted p-values of one family of tests (NaN entries are not in the family).

    Parameters
    ----------
    p_values : array_like
        Any shape.
    correction : {"holm", "bh"}
        Holm's step-down (controls the family-wise error) or Benjamini-Hochberg's
        step-up (controls the false discovery rate).
    """
    correction = choose_correction(correction)
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    values = p[tested]
    m = values.size
    if m == 0:
        return adjusted
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    if correction == "holm":
        steps = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        steps = np.minimum.accumulate((m * ranked / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, steps)
    adjusted[tested] = out
    return adjusted


def family(shape, self_job):
    """Cells of a result matrix that are separate hypotheses: all of them for two
    networks; for one network against itself the pairs of distinct layers, once each
    (the lower triangle mirrors the upper, the diagonal compares a layer with itself)."""
    if not self_job:
        return np.ones(shape, dtype=bool)
    return np.triu(np.ones(shape, dtype=bool), k=1)


def corrected_matrix(p, self_job, correction):
    """:func:`correct` applied to the :func:`family` of a result matrix ``p``; cells
    outside the family are NaN, the lower triangle of a self job mirrors the upper."""
    members = family(p.shape, self_job)
    adjusted = np.full(p.shape, np.nan)
    adjusted[members] = correct(p[members], correction)
    if self_job:
        lower = np.tril_indices(p.shape[0], k=-1)
        adjusted[lower] = adjusted.T[lower]
    return adjusted


def permutation_p(name, stats, permuted):
    """Monte Carlo p-values ``(1 + #{permuted >= observed}) / (K + 1)`` of metric
    ``name`` from the statistics of ``K`` permutations (their own-layer terms do not
    change under permutation and come from ``stats``)."""
    numerator = MEASURES[name].numerator.inner
    diagonal = np.diag(numerator(stats))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.outer(diagonal, diagonal))
        observed = numerator(stats) / scale
        exceed = np.zeros(observed.shape)
        for permuted_stats in permuted:
            values = numerator(stats.replace(cross=permuted_stats.cross, rowdot=permuted_stats.rowdot)) / scale
            # a permutation that reproduces the observed value counts, despite rounding
            exceed += values >= observed - 1e-12 * np.abs(observed)
    p = (1.0 + exceed) / (len(permuted) + 1.0)
    p[np.isnan(observed)] = np.nan
    return p


def fewest_replicates(confidence):
    """The fewest bootstrap replicates whose ``confidence`` percentile interval does
    not rest on the most extreme replicates (its ends lie between the second smallest
    and the second largest)."""
    return math.ceil(2.0 / (1.0 - confidence) - 1e-9) + 1


def percentile_interval(replicates, confidence):
    """The ``confidence`` percentile interval of bootstrap replicates, cell by cell."""
    values = np.stack(replicates)
    tail = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        low, high = np.nanquantile(values, [tail, 1.0 - tail], axis=0)
    return low, high


def estimates_outside(observed, low, high) -> int:
    """How many cells' estimates lie outside their own bootstrap interval: resampling
    shifts the measure there (duplicated observations act as fewer, and a measure
    biased by the number of observations moves), so the interval is no confidence
    interval for it."""
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero((observed < low) | (observed > high)))


def undefined_replicates(replicates, observed):
    """How many bootstrap replicates are undefined (NaN) in a cell where the observed
    value is defined: their weights left too few observations, or a layer without
    variance, for the metric."""
    defined = np.isfinite(observed)
    return int(sum(bool(np.isnan(r[defined]).any()) for r in replicates))


# said in the interval's description when it leaves out the estimate in some cells
OUTSIDE = ("; in {outside} cell(s) the estimate lies outside it: a resample's duplicated observations shift the "
           "measure, so there it is no confidence interval")
# said in the interval's description when some replicates were undefined
LEFT_OUT = ("; {undefined} of the {bootstrap} replicates left the metric undefined (too few weighted observations, "
            "or a layer without variance in the resample) and are left out")


def difference_summary(replicates, confidence):
    """Percentile interval and two-sided bootstrap p-value of a difference from its
    paired bootstrap replicates (non-finite replicates left out).

    The p-value inverts the percentile interval: twice the share of replicates on the
    far side of 0, ``min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (B + 1))`` — the
    smallest ``1 - confidence`` whose interval leaves 0 out, up to one replicate (the
    ``+ 1`` keeps it above 0, as a Monte Carlo p-value should be).

    Returns
    -------
    (float, float, float, int)
        ``low``, ``high``, ``p`` and the number of replicates used (NaN when none).
    """
    values = np.asarray(replicates, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return np.nan, np.nan, np.nan, 0
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    beyond = min(np.sum(values <= 0), np.sum(values >= 0))
    return float(low), float(high), min(1.0, 2.0 * (1.0 + beyond) / (values.size + 1.0)), int(values.size)


REPLICATES_DESCRIPTION = (
    "the metric in each of {bootstrap} Poisson bootstrap replicates: observation i weighted by a Poisson(1) count "
    "drawn from the seed, the number of replicates and i alone, so results of the same seed, number of replicates "
    "and observations (in the same order) share every replicate's weights; paired differences: "
    "rv2dist.compare_cells, rv2dist.compare_results")

# long_name (completed with "of <metric>") and description of each added variable
DESCRIPTIONS = {
    "z": ("z-score", "(value - mean) / sd, the mean and variance exact under random permutation of the "
                     "observations of one side (no permutations run)"),
    "p": ("p-value", "upper one-sided p-value: a Pearson type III law with the exact permutation mean and "
                     "variance and the large-n skewness; a normal approximation where that skewness is unknown "
                     "(uncentred data, layers wider than 4096 units on the feature route, gram routes of over 50,000 "
                     "block triples); never below {floor:g}: "
                     "a p-value of {floor:g} means p <= {floor:g}, and the z-score ranks such cells"),
    "p_corrected": ("corrected p-value", "p-value adjusted across the matrix ({correction}); for one network "
                                         "against itself over its pairs of distinct layers, the diagonal NaN; "
                                         "p-values at the floor ({floor:g}) enter as the floor"),
    "p_permutation": ("permutation p-value", "(1 + #{{permuted >= observed}}) / ({permutations} + 1) from "
                                             "{permutations} seeded random permutations of the rows of b"),
    "low": ("lower bootstrap bound", "{confidence:g} percentile interval from {bootstrap} Poisson bootstrap "
                                     "replicates, lower end"),
    "high": ("upper bootstrap bound", "{confidence:g} percentile interval from {bootstrap} Poisson bootstrap "
                                      "replicates, upper end"),
}
