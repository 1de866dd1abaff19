"""Dense float64 formulas written plainly, with full n x n Grams: the independent
reference the engine is held against (small n only)."""

import hashlib

import numpy as np


def _prepare(x, center):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x - x.mean(axis=0) if center else x


def _off_diagonal(gram):
    return gram - np.diag(np.diag(gram))


def _unbiased_hsic(k, l):
    # Song et al. (2012), eq. 5, for symmetric Grams k and l
    n = k.shape[0]
    kt, lt = _off_diagonal(k), _off_diagonal(l)
    return (
        np.sum(kt * lt)
        + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (kt.sum(axis=1) @ lt.sum(axis=1))
    ) / (n * (n - 3))


def _from_grams(a, b, metric):
    if metric in ("rv", "cka"):
        return np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
    if metric == "rv2":
        at, bt = _off_diagonal(a), _off_diagonal(b)
        return np.sum(at * bt) / np.sqrt(np.sum(at * at) * np.sum(bt * bt))
    if metric == "cka_debiased":
        return _unbiased_hsic(a, b) / np.sqrt(_unbiased_hsic(a, a) * _unbiased_hsic(b, b))
    if metric == "rv2_null":
        at, bt = _off_diagonal(a), _off_diagonal(b)
        n = len(a)
        return at.sum() * bt.sum() / (n * (n - 1) * np.sqrt(np.sum(at * at) * np.sum(bt * bt)))
    raise ValueError(metric)


def _centred_for(metric, center):
    return center or metric in ("cka", "cka_debiased")


def dense_metric(x, y, metric, center=True):
    """One metric between two arrays via explicit n x n Grams."""
    c = _centred_for(metric, center)
    x, y = _prepare(x, c), _prepare(y, c)
    return _from_grams(x @ x.T, y @ y.T, metric)


def _digest(layers):
    """A digest of a mapping of arrays: names, shapes, dtypes and every value."""
    digest = hashlib.blake2b(digest_size=16)
    for name, x in layers.items():
        x = np.ascontiguousarray(x)
        digest.update(f"{name}|{x.shape}|{x.dtype}|".encode())
        digest.update(x.data)
    return digest.hexdigest()


# dense matrices already computed, by the inputs' digests, metric and centring: the tests
# hold both routes, and each centring that gives the same metric, against one reference
_MATRICES = {}


def dense_matrix(layers_a, layers_b, metric, center=True):
    """The (La, Lb) matrix of ``metric`` between two mappings of arrays (a copy of the
    one computed before for the same values, metric and centring)."""
    c = _centred_for(metric, center)
    key = (_digest(layers_a), _digest(layers_b), metric, c)
    if key not in _MATRICES:
        _MATRICES[key] = _dense_matrix(layers_a, layers_b, metric, c)
    return _MATRICES[key].copy()


def _dense_matrix(layers_a, layers_b, metric, c):
    grams_a = [_prepare(x, c) @ _prepare(x, c).T for x in layers_a.values()]
    grams_b = [_prepare(y, c) @ _prepare(y, c).T for y in layers_b.values()]
    return np.array([[_from_grams(a, b, metric) for b in grams_b] for a in grams_a])


def permutation_mean_rv2(x, y, center=True, draws=2000, seed=0):
    """Monte-Carlo mean of RV2 under random row permutations of ``y``."""
    x, y = _prepare(x, center), _prepare(y, center)
    a, b = _off_diagonal(x @ x.T), _off_diagonal(y @ y.T)
    rng = np.random.default_rng(seed)
    norm = np.sqrt(np.sum(a * a) * np.sum(b * b))
    values = []
    for _ in range(draws):
        p = rng.permutation(len(x))
        values.append(np.sum(a * b[np.ix_(p, p)]) / norm)
    return float(np.mean(values))


def permuted_values(x, y, metric, center, orders):
    """``metric`` between ``x`` and ``y`` with y's rows in each of ``orders``: <A, B_o>
    from the n x n Grams or from X'Y_o, whichever is cheaper, and the metric from it and
    the row norms (the formulas written out again)."""
    c = _centred_for(metric, center)
    x, y = _prepare(x, c), _prepare(y, c)
    n = len(x)
    a, b = np.sum(x * x, axis=1), np.sum(y * y, axis=1)
    xx, yy = np.sum((x.T @ x) ** 2), np.sum((y.T @ y) ** 2)
    if x.shape[1] * y.shape[1] > n * n:
        gram_a, gram_b = x @ x.T, y @ y.T
        crosses = [np.sum(gram_a * gram_b[np.ix_(o, o)]) for o in orders]
    else:
        crosses = [np.sum((x.T @ y[o]) ** 2) for o in orders]

    def hsic(cross, rowdot, trace_a, trace_b):
        return cross - n / (n - 2) * rowdot + trace_a * trace_b / ((n - 1) * (n - 2))

    values = []
    for o, cross in zip(orders, crosses):
        rowdot = a @ b[o]
        if metric == "rv2":
            values.append((cross - rowdot) / np.sqrt((xx - a @ a) * (yy - b @ b)))
        elif metric in ("rv", "cka"):
            values.append(cross / np.sqrt(xx * yy))
        else:
            values.append(hsic(cross, rowdot, a.sum(), b.sum())
                          / np.sqrt(hsic(xx, a @ a, a.sum(), a.sum()) * hsic(yy, b @ b, b.sum(), b.sum())))
    return np.array(values)


def resampled_metric(x, y, metric, center, counts):
    """``metric`` of the data set in which observation i appears ``counts[i]`` times."""
    counts = np.asarray(counts, dtype=int)
    return dense_metric(np.repeat(np.asarray(x, float), counts, axis=0),
                        np.repeat(np.asarray(y, float), counts, axis=0), metric, center)
