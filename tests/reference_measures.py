"""Dense float64 references for rv2dist.second_moments and rv2dist.rsa, written plainly
from the full data matrices: SVDs of the centred data, least squares, explicit n x n
matrices (small n only).  Transcriptions of two published codes (google/svcca's
pwcca.py, netrep's LinearMetric) say what those give."""

import numpy as np

RCOND = 1e-8


def centred(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(axis=0)


def basis(x, rcond=RCOND):
    """Orthonormal basis of the centred columns' span: left singular vectors whose
    squared singular values exceed ``rcond`` times the largest."""
    u, s, _ = np.linalg.svd(centred(x), full_matrices=False)
    return u[:, s**2 > rcond * s[0] ** 2]


def canonical_correlations(x, y, rcond=RCOND):
    """Cosines of the principal angles between the centred column spaces."""
    return np.minimum(np.linalg.svd(basis(x, rcond).T @ basis(y, rcond), compute_uv=False), 1.0)


def cca(x, y):
    return canonical_correlations(x, y).mean()


def cca_r2(x, y):
    return (canonical_correlations(x, y) ** 2).mean()


def _leading(x, share):
    """Scores of the fewest leading principal components reaching ``share`` of the variance."""
    u, s, _ = np.linalg.svd(centred(x), full_matrices=False)
    variance = s**2
    # the last share may round to just below 1: share = 1 keeps every component
    m = min(len(s), int(np.sum(np.cumsum(variance) / variance.sum() < share)) + 1)
    return u[:, :m] * s[:m]


def svcca(x, y, share=0.99):
    return canonical_correlations(_leading(x, share), _leading(y, share)).mean()


def pwcca(x, y):
    """Morcos et al. (2018): canonical variates h_i (unit norm) of the side with fewer
    directions, weights sum_j |<h_i, x_j>| over its units x_j (centred: h_i is
    orthogonal to the constant, so raw units give the same weights, less their mean's
    rounding)."""
    qx, qy = basis(x), basis(y)
    a, rho, bt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    variates, units = (qx @ a, x) if qx.shape[1] <= qy.shape[1] else (qy @ bt.T, y)
    weights = np.abs(variates.T @ centred(units)).sum(axis=1)
    return np.sum(weights * np.minimum(rho, 1.0)) / weights.sum()


def google_pwcca(x, y):
    """google/svcca's compute_pwcca(x.T, y.T, epsilon=0) for p <= q, step by step:
    np.cov blocks scaled by their largest entry, inverse square roots from pinv, the
    SVD of the whitened cross block, then directions u' (x - m) + m orthonormalised by
    QR and weighted by their inner products with the raw units."""
    p = x.shape[1]
    assert p <= y.shape[1]
    cov = np.cov(x.T, y.T)
    sxx, sxy, syy = cov[:p, :p], cov[:p, p:], cov[p:, p:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def inverse_root(m):
        w, v = np.linalg.eigh(np.linalg.pinv(m))
        return v @ np.diag(np.sqrt(w)) @ v.T

    u, s, _ = np.linalg.svd(inverse_root(sxx) @ sxy @ inverse_root(syy))
    mean = x.mean(axis=0)
    directions = (x - mean) @ u + mean  # column i: u_i'(x_t - m) + m_i, as pwcca.py
    q, _ = np.linalg.qr(directions)
    weights = np.abs(q.T @ x).sum(axis=1)
    return np.sum(weights / weights.sum() * np.abs(s))


def _padded(x, width):
    return np.pad(x, ((0, 0), (0, width - x.shape[1])))


def procrustes(x, y):
    """Via scipy.linalg.orthogonal_procrustes (zero-padded to equal widths): its scale
    is the nuclear norm of X_c'Y_c."""
    from scipy.linalg import orthogonal_procrustes

    width = max(x.shape[1], y.shape[1])
    xc, yc = _padded(centred(x), width), _padded(centred(y), width)
    _, scale = orthogonal_procrustes(xc, yc)
    return scale / (np.linalg.norm(xc) * np.linalg.norm(yc))


def procrustes_distance(x, y):
    """min over orthogonal R of |X R - Y|_F for the centred, unit-norm data."""
    from scipy.linalg import orthogonal_procrustes

    width = max(x.shape[1], y.shape[1])
    xc, yc = _padded(centred(x), width), _padded(centred(y), width)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    rotation, _ = orthogonal_procrustes(xc, yc)
    return np.linalg.norm(xc @ rotation - yc)


def netrep_shape(x, y, alpha):
    """netrep's LinearMetric(alpha, center_columns=True, zero_pad=True,
    score_method="angular").fit_score(x, y), transcribed (netrep is not on PyPI)."""
    width = max(x.shape[1], y.shape[1])
    xc, yc = _padded(centred(x), width), _padded(centred(y), width)

    def whiten(data, tol=1e-7):
        if alpha > 1 - tol:
            return data
        lam, v = np.linalg.eigh(data.T @ data)
        lam = np.maximum(lam, tol)
        d = alpha + (1 - alpha) * lam ** (-1 / 2)
        new_var = np.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * lam**0.5 + (1 - alpha) ** 2)
        d *= np.sqrt(np.sum(lam) / new_var)
        return data @ ((v * d[None, :]) @ v.T)

    xw, yw = whiten(xc), whiten(yc)
    u, _, vt = np.linalg.svd(xw.T @ yw)
    tx, ty = xw @ u, yw @ vt.T
    return np.arccos(np.clip(np.sum(tx * ty) / (np.linalg.norm(tx) * np.linalg.norm(ty)), -1.0, 1.0))


def linreg(x, y, rcond=RCOND):
    """R² of the least-squares fit of centred y from centred x (minimum-norm lstsq),
    directions of x whose squared singular values are at most ``rcond`` times the
    largest left out, as a pseudo-inverse with that cut-off does."""
    xc, yc = centred(x), centred(y)
    coef = np.linalg.lstsq(xc, yc, rcond=np.sqrt(rcond))[0]
    return 1.0 - np.sum((yc - xc @ coef) ** 2) / np.sum(yc**2)


def ridge(x, y, ridge_lambda):
    """In-sample R² of ridge regression solved as least squares on the data stacked
    with sqrt(penalty) I, penalty = ridge_lambda |X_c|_F² / p."""
    xc, yc = centred(x), centred(y)
    p = xc.shape[1]
    penalty = ridge_lambda * np.sum(xc**2) / p
    stacked = np.vstack([xc, np.sqrt(penalty) * np.eye(p)])
    coef = np.linalg.lstsq(stacked, np.vstack([yc, np.zeros((p, yc.shape[1]))]), rcond=None)[0]
    return 1.0 - np.sum((yc - xc @ coef) ** 2) / np.sum(yc**2)


def _off_diagonal(matrix):
    return matrix[~np.eye(len(matrix), dtype=bool)]


def rsa(x, y, center=True):
    """Pearson correlation of the off-diagonal entries of the n x n Grams X X', Y Y'."""
    x, y = (centred(x), centred(y)) if center else (np.asarray(x, float), np.asarray(y, float))
    return np.corrcoef(_off_diagonal(x @ x.T), _off_diagonal(y @ y.T))[0, 1]


def rsa_euclidean(x, y):
    """Pearson correlation (scipy.stats) of the squared Euclidean distances (scipy.spatial)."""
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr

    return pearsonr(pdist(np.asarray(x, float), "sqeuclidean"), pdist(np.asarray(y, float), "sqeuclidean"))[0]
