"""The dense float64 cross-check of benchmarks/grounding.py: every value the grounding
tables rest on, recomputed with explicit n x n Gram matrices, written plainly here
(independent of rv2dist's sums; the same formulas as tests/reference.py).

A measure added to grounding_tests.MEASURES needs its formula here, in :data:`FORMULAS`:
``formula(a, b, center)`` of two :class:`Side` objects, the matrix of all pairs of their
layers (a measure without a vectorised form loops over ``a.layers`` and ``b.layers``).
"""

from __future__ import annotations

import numpy as np


class Side:
    """The layers of one side of a comparison in float64 (observations x units), with
    their Grams flattened into the rows of one array, made once per centring: every
    inner product <A, B> between two sides is then one matrix product."""

    def __init__(self, layers):
        self.layers = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in layers]
        self.n = len(self.layers[0])
        self._made = {}

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


FORMULAS = {"rv2": rv2, "rv": rv, "cka": cka, "cka_debiased": cka_debiased, "rsa": rsa,
            "rsa_euclidean": rsa_euclidean, "rv2_null": rv2_null}


def matrix(metric, a, b, center):
    """The matrix of ``metric`` between the layers of :class:`Side` ``a`` and those of
    ``b``, or an error saying where to add the formula of a metric that has none."""
    if metric not in FORMULAS:
        raise KeyError(f"no dense formula for {metric!r}: add one to FORMULAS in {__file__}")
    return FORMULAS[metric](a, b, center)


def bootstrap_intervals(metrics, x, y, center, counts, confidence):
    """``{metric: (low, high)}``, the percentile intervals of ``metric`` between layers
    ``x`` and ``y`` over the data sets in which observation ``i`` appears
    ``counts[i, r]`` times, one replicate ``r`` per column."""
    replicates = []
    for c in np.asarray(counts, dtype=int).T:
        a, b = Side([np.repeat(x, c, axis=0)]), Side([np.repeat(y, c, axis=0)])
        replicates.append([matrix(metric, a, b, center)[0, 0] for metric in metrics])
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(np.array(replicates), [tail, 1.0 - tail], axis=0)
    return {metric: (low[k], high[k]) for k, metric in enumerate(metrics)}


# rv2dist computes the products of float32 activations in float32 (precision="auto"),
# summed in float64: agreement to a few 1e-6 is expected, 1e-4 is the limit
TOLERANCE = 1e-4


class Tally:
    """How many values were checked against the dense formulas, and the worst difference."""

    def __init__(self):
        self.values, self.worst = 0, 0.0

    def compare(self, label, got, expected):
        got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        wrong = ~np.isclose(got, expected, rtol=0.0, atol=TOLERANCE, equal_nan=True)
        if wrong.any():
            cell = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise AssertionError(f"{label}: rv2dist gives {got[cell]!r} at {cell}, the dense float64 formula "
                                 f"{expected[cell]!r}")
        self.values += got.size
        self.worst = max(self.worst, float(np.nanmax(np.abs(got - expected), initial=0.0)))

    def matrices(self, label, result, layers_a, layers_b, metrics, center):
        """Every cell of every metric of ``result`` against :func:`matrix` between the
        arrays ``layers_a`` and ``layers_b``."""
        a, b = Side(layers_a), Side(layers_b)
        for metric in metrics:
            self.compare(f"{label}, {metric}", result[metric].values, matrix(metric, a, b, center))

    def intervals(self, label, result, layers_a, layers_b, metrics, center, bootstrap, seed, confidence=0.95):
        """The bootstrap interval of every diagonal cell, from rv2dist's own Poisson
        counts (drawn from ``seed`` and the observation's index) and the dense formulas."""
        from rv2dist.core.resampling import poisson_weights

        counts = poisson_weights(seed, 0, len(layers_a[0]), bootstrap)
        for i, (x, y) in enumerate(zip(layers_a, layers_b)):
            expected = bootstrap_intervals(metrics, x, y, center, counts, confidence)
            for metric in metrics:
                got = (result[f"{metric}_low"].values[i, i], result[f"{metric}_high"].values[i, i])
                self.compare(f"{label}, {metric} bootstrap interval of cell {i}", got, expected[metric])

    def __str__(self):
        return f"{self.values:,} values equal the dense float64 formulas (largest difference {self.worst:.1e})"
