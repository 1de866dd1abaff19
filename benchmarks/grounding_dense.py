"""The dense float64 cross-check of benchmarks/grounding.py: every value the grounding
tables rest on, recomputed from the data matrices, written plainly here and independent
of rv2dist's code: the RV family and RSA with explicit n x n Gram matrices (the same
formulas as tests/reference.py), the second-moment measures (CCA, SVCCA, PWCCA,
Procrustes, the shape metric, regression) from the SVDs of the centred data (as
tests/reference_measures.py; rv2dist decomposes p x p covariance blocks instead).

A measure added to grounding_tests.MEASURES needs its formula here, in :data:`FORMULAS`:
``formula(a, b, center)`` of two :class:`Side` objects, the matrix of all pairs of their
layers (a measure without a vectorised form loops over ``a.layers`` and ``b.layers``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# the second-moment measures' options: every rv2dist job of the benchmark passes these
# (grounding_tests.similarity), and the formulas below use them.  rcond = 1e-8 is
# rv2dist's cut-off for float64 products, which the jobs use (a whitening measure from
# float32 products would need 1e-5 and then differ from these formulas in its last
# directions kept)
OPTIONS = {"alpha": 1.0, "ridge_lambda": 0.1, "svcca_variance": 0.99, "rcond": 1e-8}


def svd(matrix, vectors=True):
    """numpy's thin SVD (LAPACK's gesdd), or scipy's QR iteration (gesvd) where that
    does not converge: it may not where singular values cluster, as every canonical
    correlation of a degenerate cell does (1)."""
    try:
        return np.linalg.svd(matrix, full_matrices=False, compute_uv=vectors)
    except np.linalg.LinAlgError:
        from scipy.linalg import svd as qr_iteration

        return qr_iteration(matrix, full_matrices=False, compute_uv=vectors, lapack_driver="gesvd")


@dataclasses.dataclass(frozen=True)
class Principal:
    """The thin SVD ``X_c = U S V'`` of one layer's column-centred data and its
    numerical rank: the singular values whose squares (the covariance's eigenvalues)
    exceed ``OPTIONS["rcond"]`` times the largest."""

    centred: np.ndarray
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    rank: int

    @classmethod
    def of(cls, x):
        centred = x - x.mean(axis=0)
        u, s, vt = svd(centred)
        rank = int(np.sum(s**2 > OPTIONS["rcond"] * s[0] ** 2)) if s[0] > 0 else 0
        return cls(centred, u, s, vt, rank)

    def leading(self, share):
        """SVCCA's directions: the fewest leading ones whose variances reach ``share``
        of the (kept) variance."""
        variances = self.s[: self.rank] ** 2
        return int(np.argmax(np.cumsum(variances) / variances.sum() >= share)) + 1

    def whitened(self, alpha):
        """The singular values of ``X_c Z``, ``Z = alpha I + (1 - alpha) (X_c'X_c)^+1/2``
        (Williams et al.'s partial whitening; ``X_c Z = U (alpha S + (1 - alpha) I_r) V'``)."""
        return alpha * self.s + (1.0 - alpha) * (np.arange(len(self.s)) < self.rank)


def forced_ones(x, y, n):
    """How many canonical correlations of two layers of ranks ``x.rank`` and ``y.rank``
    are 1 whatever the data: their centred column spaces share at least
    ``r_x + r_y - (n - 1)`` dimensions of the n - 1 the centred observations span."""
    return max(0, min(x.rank, y.rank, x.rank + y.rank - (n - 1)))


class Side:
    """The layers of one side of a comparison in float64 (observations x units), with
    their Grams flattened into the rows of one array, made once per centring: every
    inner product <A, B> between two sides is then one matrix product."""

    def __init__(self, layers):
        self.layers = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in layers]
        self.n = len(self.layers[0])
        self._made = {}

    def principal(self, i):
        """The :class:`Principal` decomposition of layer ``i``."""
        if ("principal", i) not in self._made:
            self._made["principal", i] = Principal.of(self.layers[i])
        return self._made["principal", i]

    def grams(self, center, diagonal=True):
        """The flattened Grams ``X X'`` (of the column-centred X when ``center``),
        without their diagonals unless ``diagonal``."""
        key = (bool(center), diagonal)
        if key not in self._made:
            if diagonal:
                made = [x - x.mean(axis=0) if center else x for x in self.layers]
                self._made[key] = np.stack([(m @ m.T).ravel() for m in made])
            else:
                self._made[key] = self.grams(center).copy()
                self._made[key][:, :: self.n + 1] = 0.0
        return self._made[key]

    def distances(self):
        """The flattened matrices of squared Euclidean distances between observations."""
        if "distances" not in self._made:
            squares = [np.sum(x * x, axis=1) for x in self.layers]
            self._made["distances"] = np.stack([(s[:, None] + s[None, :] - 2.0 * x @ x.T).ravel()
                                                for s, x in zip(squares, self.layers)])
        return self._made["distances"]


def _squares(g):
    return np.einsum("ij,ij->i", g, g)


def _cosines(ga, gb):
    """<A, B> / sqrt(<A, A> <B, B>) for every pair of rows of ``ga`` and ``gb``."""
    return (ga @ gb.T) / np.sqrt(np.outer(_squares(ga), _squares(gb)))


def rv2(a, b, center):
    """Smilde et al. (2009): the cosine of the Grams without their diagonals."""
    return _cosines(a.grams(center, diagonal=False), b.grams(center, diagonal=False))


def rv(a, b, center):
    """Escoufier (1973): the cosine of the Grams."""
    return _cosines(a.grams(center), b.grams(center))


def cka(a, b, center):
    """Kornblith et al. (2019), linear kernels: the cosine of the centred Grams."""
    return _cosines(a.grams(True), b.grams(True))


def _unbiased_hsic(ka, kb, n):
    """Song et al. (2012), eq. 5, for every pair of rows of the off-diagonal Grams
    ``ka`` and ``kb`` (flattened)."""
    sums_a, sums_b = ka.sum(axis=1), kb.sum(axis=1)
    rows_a, rows_b = ka.reshape(len(ka), n, n).sum(axis=2), kb.reshape(len(kb), n, n).sum(axis=2)
    return (ka @ kb.T + np.outer(sums_a, sums_b) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (rows_a @ rows_b.T)) / (n * (n - 3))


def cka_debiased(a, b, center):
    """Linear CKA with the unbiased HSIC, of the centred Grams."""
    ka, kb = a.grams(True, diagonal=False), b.grams(True, diagonal=False)
    own_a = np.array([_unbiased_hsic(k[None], k[None], a.n)[0, 0] for k in ka])
    own_b = np.array([_unbiased_hsic(k[None], k[None], b.n)[0, 0] for k in kb])
    return _unbiased_hsic(ka, kb, a.n) / np.sqrt(np.outer(own_a, own_b))


def rv2_null(a, b, center):
    """The mean of RV2 over all row permutations of one side (Smilde et al. 2009):
    (1'A~1)(1'B~1) / (n (n - 1) |A~| |B~|)."""
    ka, kb = a.grams(center, diagonal=False), b.grams(center, diagonal=False)
    return np.outer(ka.sum(axis=1), kb.sum(axis=1)) / (
        a.n * (a.n - 1) * np.sqrt(np.outer(_squares(ka), _squares(kb))))


def _pearson_off_diagonal(ka, kb, n):
    """Pearson's r between the n (n - 1) off-diagonal entries of every pair of rows of
    ``ka`` and ``kb`` (flattened n x n matrices whose diagonals are 0)."""
    count = n * (n - 1)
    sums_a, sums_b = ka.sum(axis=1), kb.sum(axis=1)
    inner = ka @ kb.T - np.outer(sums_a, sums_b) / count
    return inner / np.sqrt(np.outer(_squares(ka) - sums_a**2 / count, _squares(kb) - sums_b**2 / count))


def rsa(a, b, center):
    """Kriegeskorte et al. (2008): Pearson's r of the off-diagonal entries of the Grams."""
    return _pearson_off_diagonal(a.grams(center, diagonal=False), b.grams(center, diagonal=False), a.n)


def rsa_euclidean(a, b, center):
    """The same of the squared Euclidean distances |x_i - x_j|^2 (diagonals 0)."""
    return _pearson_off_diagonal(a.distances(), b.distances(), a.n)


def _canonical(f, x, y):
    """The canonical correlations of layers ``x`` and ``y`` (the cosines of the
    principal angles between their kept centred column spaces: the singular values of
    U_x'U_y restricted to the ranks; ``f`` = U_x'U_y) and the SVD's vectors."""
    left, rho, right = svd(f[: x.rank, : y.rank])
    return left, np.minimum(rho, 1.0), right


def _pwcca_weights(layer, directions):
    """Morcos et al.'s weights: for each canonical variate h_i = U_r d_i (unit norm)
    of ``layer``, the sum over its units x_j of |<h_i, x_j>| (centred units:
    <h_i, x_j> = d_i' U_r' U S V' e_j = d_i' S_r V_r' e_j)."""
    r = layer.rank
    return np.abs(directions.T @ (layer.s[:r, None] * layer.vt[:r])).sum(axis=1)


def _explained(f, y, shrink):
    """Share of the variance of layer ``y`` that a fit from layer x explains, with
    ``f`` = U_x'U_y: y's variance along x's principal direction i is
    sum_j (f_ij s_yj)^2, and the fit keeps the share ``shrink[i]`` (2 d_i - d_i^2
    for fitted values shrunk by d_i along direction i)."""
    along = np.sum((f * y.s) ** 2, axis=1)
    return float(np.sum(shrink * along[: len(shrink)]) / np.sum(y.s**2))


def _regressions(f, x, y):
    """linreg and ridge of y (the target) predicted from x: least squares keeps every
    kept direction of x whole (d = 1); ridge with penalty l = ridge_lambda |X_c|^2 / p
    shrinks its fitted values along direction i by d_i = s_i^2 / (s_i^2 + l)."""
    penalty = OPTIONS["ridge_lambda"] * np.sum(x.s**2) / x.centred.shape[1]
    d = x.s**2 / (x.s**2 + penalty)
    return {"linreg": _explained(f, y, np.ones(x.rank)), "ridge": _explained(f, y, 2 * d - d**2)}


def _nuclear(f, sx, sy):
    """||X_c'Y_c||_* (or of any data with those principal directions and singular
    values ``sx``, ``sy``): X_c'Y_c = V_x diag(sx) f diag(sy) V_y'."""
    return float(svd(sx[:, None] * f * sy[None, :], vectors=False).sum())


def _ambiguous(rho):
    """Whether PWCCA of canonical correlations ``rho`` (decreasing) depends on the
    basis an SVD picks: some are tied (within :data:`TIE`), but not all.  Morcos et al.'s
    weights of a tied group change with any rotation inside it (docs/measures.md)."""
    tied = -np.diff(rho) < TIE
    return bool(tied.any() and not tied.all())


def _pair(x, y):
    """Every second-moment measure of layer ``x`` (rows) against ``y`` (columns) and
    of ``y`` against ``x``: two dicts ``{measure: value}``, with ``"tied"`` saying
    whether PWCCA is ambiguous (:func:`_ambiguous`)."""
    f = x.u.T @ y.u
    left, rho, right = _canonical(f, x, y)
    mx, my = x.leading(OPTIONS["svcca_variance"]), y.leading(OPTIONS["svcca_variance"])
    procrustes = _nuclear(f, x.s, y.s) / np.sqrt(np.sum(x.s**2) * np.sum(y.s**2))
    if OPTIONS["alpha"] == 1.0:  # Z = I: the Procrustes angle
        shape = procrustes
    else:
        zx, zy = x.whitened(OPTIONS["alpha"]), y.whitened(OPTIONS["alpha"])
        shape = _nuclear(f, zx, zy) / np.sqrt(np.sum(zx**2) * np.sum(zy**2))
    symmetric = {"cca": rho.mean(), "cca_r2": np.mean(rho**2),
                 "svcca": np.minimum(svd(f[:mx, :my], vectors=False), 1.0).mean(),
                 "procrustes": procrustes,
                 # |X^ R - Y^|^2 = |X^|^2 + |Y^|^2 - 2 tr(R'X^'Y^), largest over R at the nuclear norm
                 "procrustes_distance": np.sqrt(max(0.0, 2.0 - 2.0 * procrustes)),
                 "shape_metric": np.arccos(np.clip(shape, -1.0, 1.0)), "tied": _ambiguous(rho)}
    # PWCCA weights the variates of the layer with fewer directions, the row layer on a tie
    weights_x, weights_y = _pwcca_weights(x, left), _pwcca_weights(y, right.T)
    forward = weights_x if x.rank <= y.rank else weights_y
    backward = weights_y if y.rank <= x.rank else weights_x
    return ({**symmetric, "pwcca": np.sum(forward * rho) / np.sum(forward), **_regressions(f, x, y)},
            {**symmetric, "pwcca": np.sum(backward * rho) / np.sum(backward), **_regressions(f.T, y, x)})


SECOND_MOMENTS = ("cca", "cca_r2", "svcca", "pwcca", "procrustes", "procrustes_distance", "shape_metric", "linreg",
                  "ridge")
# canonical correlations closer than this are tied: rounding leaves 1e-14 between the
# ones that linear dependence makes equal, and distinct ones here lie 1e-8 apart or more
TIE = 1e-10


def second_moments(a, b, wanted=None):
    """``{measure: matrix}`` of every second-moment measure between the layers of
    :class:`Side` ``a`` and those of ``b``, and ``"tied"``, where PWCCA is ambiguous
    (computed once per pair of Sides, on its first call: of the pairs where
    ``wanted`` is true, or all; a Side against itself once per unordered pair)."""
    key = ("second moments", id(b))
    if key not in a._made or a._made[key][0] is not b:
        wanted = np.ones((len(a.layers), len(b.layers)), dtype=bool) if wanted is None else np.asarray(wanted)
        matrices = {m: np.full(wanted.shape, np.nan) for m in (*SECOND_MOMENTS, "tied")}
        for i in range(len(a.layers)):
            for j in range(i if a is b else 0, len(b.layers)):
                if not (wanted[i, j] or (a is b and wanted[j, i])):
                    continue
                forward, backward = _pair(a.principal(i), b.principal(j))
                for m in (*SECOND_MOMENTS, "tied"):
                    matrices[m][i, j] = forward[m]
                    if a is b:
                        matrices[m][j, i] = backward[m]
        a._made[key] = (b, matrices)
    return a._made[key][1]


def forced_matrix(a, b):
    """The number of canonical correlations forced to 1 (:func:`forced_ones`) of every
    pair of layers of :class:`Side` ``a`` and ``b``."""
    return np.array([[forced_ones(a.principal(i), b.principal(j), a.n) for j in range(len(b.layers))]
                     for i in range(len(a.layers))])


def _second_moment(name):
    def formula(a, b, center):
        return second_moments(a, b)[name]

    formula.__doc__ = f"{name} of the centred layers (every second-moment measure centres): see :func:`_pair`."
    return formula


FORMULAS = {"rv2": rv2, "rv": rv, "cka": cka, "cka_debiased": cka_debiased, "rsa": rsa,
            "rsa_euclidean": rsa_euclidean, "rv2_null": rv2_null,
            **{name: _second_moment(name) for name in SECOND_MOMENTS}}


def matrix(metric, a, b, center):
    """The matrix of ``metric`` between the layers of :class:`Side` ``a`` and those of
    ``b``, or an error saying where to add the formula of a metric that has none."""
    if metric not in FORMULAS:
        raise KeyError(f"no dense formula for {metric!r}: add one to FORMULAS in {__file__}")
    return FORMULAS[metric](a, b, center)


def bootstrap_intervals(metrics, x, y, center, counts, confidence):
    """``{metric: (low, high)}``, the percentile intervals of ``metric`` between layers
    ``x`` and ``y`` over the data sets in which observation ``i`` appears
    ``counts[i, r]`` times, one replicate ``r`` per column; and whether some
    replicate's PWCCA is ambiguous (tied canonical correlations, forced ones among them)."""
    replicates, tied = [], False
    for c in np.asarray(counts, dtype=int).T:
        a, b = Side([np.repeat(x, c, axis=0)]), Side([np.repeat(y, c, axis=0)])
        replicates.append([matrix(metric, a, b, center)[0, 0] for metric in metrics])
        tied = tied or (bool(set(metrics) & set(TIED)) and bool(second_moments(a, b)["tied"][0, 0]))
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(np.array(replicates), [tail, 1.0 - tail], axis=0)
    return {metric: (low[k], high[k]) for k, metric in enumerate(metrics)}, tied


# the benchmark's jobs compute in float64 (grounding_tests.PRECISION): agreement to about
# 1e-10 is expected, 1e-4 is the limit (float32 products, rv2dist's default on a CPU,
# agree to a few 1e-7 on the RV family)
TOLERANCE = 1e-4
# PWCCA weights tied canonical correlations by the basis an SVD chooses for them
# (docs/measures.md): where some tie (forced to 1, or 1 because units active on every
# input are linear in the layer before) it is not a function of the data, and the check
# leaves it out (and reports by how much it differed there)
TIED = ("pwcca",)


class Tally:
    """How many values were checked against the dense formulas, and the worst difference."""

    def __init__(self):
        self.values, self.worst, self.skipped, self.worst_skipped = 0, 0.0, 0, 0.0

    def compare(self, label, got, expected, skip=None, unused=None):
        """``got`` against ``expected`` in every cell but those where ``skip`` is true
        (counted as left out unless ``unused`` says no table uses them)."""
        got, expected = np.array(got, dtype=np.float64), np.array(expected, dtype=np.float64)
        skip = np.zeros(got.shape, dtype=bool) if skip is None else np.asarray(skip, dtype=bool)
        left_out = skip & ~(np.zeros(got.shape, dtype=bool) if unused is None else unused)
        self.worst_skipped = max(self.worst_skipped, float(np.nanmax(np.abs(got - expected)[left_out], initial=0.0)))
        got[skip] = expected[skip] = np.nan
        wrong = ~np.isclose(got, expected, rtol=0.0, atol=TOLERANCE, equal_nan=True)
        if wrong.any():
            cell = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise AssertionError(f"{label}: rv2dist gives {got[cell]!r} at {cell}, the dense float64 formula "
                                 f"{expected[cell]!r}")
        self.values += int(np.count_nonzero(~skip))
        self.skipped += int(np.count_nonzero(left_out))
        self.worst = max(self.worst, float(np.nanmax(np.abs(got - expected), initial=0.0)))

    def matrices(self, label, result, layers_a, layers_b, metrics, center, cells=None):
        """Every cell of every metric of ``result`` (those where ``cells`` is true: the
        ones the tables use) against :func:`matrix` between the arrays ``layers_a``
        and ``layers_b`` (one :class:`Side` where they are the same arrays), and
        ``result``'s ``forced_ones`` where it has them."""
        a = Side(layers_a)
        same = len(layers_a) == len(layers_b) and all(x is y for x, y in zip(layers_a, layers_b))
        b = a if same else Side(layers_b)
        unused = np.zeros((len(layers_a), len(layers_b)), dtype=bool) if cells is None else ~np.asarray(cells)
        second_moments(a, b, ~unused)
        if "forced_ones" in result:
            self.compare(f"{label}, forced_ones", result["forced_ones"].values, forced_matrix(a, b), skip=unused,
                         unused=unused)
        for metric in metrics:
            tied = second_moments(a, b)["tied"] > 0 if metric in TIED else False
            self.compare(f"{label}, {metric}", result[metric].values, matrix(metric, a, b, center),
                         skip=unused | tied, unused=unused)

    def intervals(self, label, result, layers_a, layers_b, metrics, center, bootstrap, seed, confidence=0.95):
        """The bootstrap interval of every diagonal cell, from rv2dist's own Poisson
        counts (drawn from ``seed`` and the observation's index) and the dense formulas."""
        from rv2dist.core.resampling import poisson_weights

        counts = poisson_weights(seed, 0, len(layers_a[0]), bootstrap)
        for i, (x, y) in enumerate(zip(layers_a, layers_b)):
            expected, tied = bootstrap_intervals(metrics, x, y, center, counts, confidence)
            for metric in metrics:
                got = (result[f"{metric}_low"].values[i, i], result[f"{metric}_high"].values[i, i])
                self.compare(f"{label}, {metric} bootstrap interval of cell {i}", got, expected[metric],
                             skip=np.full(2, tied and metric in TIED))

    def __str__(self):
        left_out = (f"; {self.skipped:,} PWCCA values with tied canonical correlations left out (there the two "
                    f"differ by up to {self.worst_skipped:.1e})" if self.skipped else "")
        return (f"{self.values:,} values equal the dense float64 formulas (largest difference {self.worst:.1e})"
                f"{left_out}")
