"""Second-moment similarity measures, exact from the blocks of one pass over the data.

Every measure here is a function of blocks the feature route sums over observations
(docs/measures.md gives each formula, its invariances, range and references):

- per layer: the number of observations ``n`` and the centred cross-product sum
  ``C = X_c' X_c`` (p x p, not divided by n);
- per pair: the centred cross-product ``C_xy = X_c' Y_c`` (p x q).

:func:`layer_blocks` decomposes each layer's ``C`` once, for every pair and measure;
:func:`pair_blocks` rotates ``C_xy`` into both eigenbases once, and caches on the pair
the two singular value decompositions that several measures share: the whitened one
(``cca``, ``cca_r2``, ``pwcca``, ``shape_metric`` at ``alpha=0``) and the plain one
(``procrustes``, ``procrustes_distance``, ``shape_metric`` at ``alpha=1``).

Pure and array-namespace agnostic like :mod:`rv2dist.core.feature`: numpy or CuPy arrays
in, Python floats out.  A measure of a layer without variance (rank 0) is NaN.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rv2dist.core.xp import namespace, singular_values, thin_svd

# eigenvalues at or below RCOND x the largest count as zero: whitening divides each
# direction by the square root of its eigenvalue, so an error d x lambda_max in a block
# becomes a relative error of at most d / RCOND in the smallest direction kept
RCOND = 1e-8
DEFAULTS = {"alpha": 1.0, "ridge_lambda": 0.1, "svcca_variance": 0.99, "rcond": RCOND}
_RANGES = {
    "alpha": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "ridge_lambda": ("a finite number >= 0", lambda v: 0.0 <= v < math.inf),
    "svcca_variance": ("in (0, 1]", lambda v: 0.0 < v <= 1.0),
    "rcond": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
}


def check_option(name, value) -> float:
    """``value`` of option ``name`` (a key of :data:`DEFAULTS`) as a float, or a
    ValueError that names the option and the value."""
    text, valid = _RANGES[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not valid(float(value)):
        raise ValueError(f"{name} must be {text}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LayerBlocks:
    """One layer's second moments, decomposed once.

    Attributes
    ----------
    n : float
        Number of observations.
    values, vectors : arrays
        Eigenvalues of ``C`` in decreasing order, and the eigenvectors as columns in
        the same order (the eigenvalues of a singular ``C`` may be ±rounding).
    rank : int
        Number of eigenvalues above ``rcond`` x the largest: the leading ``rank``
        directions are the ones whitened; 0 for a layer without variance.
    trace : float
        ``tr C``, the sum of ``values``.
    centred : bool
        Whether ``C`` is of centred columns (then the data span at most ``n - 1``
        dimensions, else ``n``).
    """

    n: float
    values: Any
    vectors: Any
    rank: int
    trace: float
    centred: bool = True

    @property
    def dims(self) -> float:
        """Dimension of the space the columns live in: ``n - 1`` centred, else ``n``."""
        return self.n - 1 if self.centred else self.n


def layer_blocks(cov, n, *, rcond=RCOND, centred=True) -> LayerBlocks:
    """Decompose one layer's cross-product sum ``cov`` (p x p, float64).

    Parameters
    ----------
    cov : array
        ``C = X_c' X_c`` (or ``X' X`` with ``centred=False``), symmetric.
    n : int
        Number of observations the sums run over.
    rcond : float
        Relative eigenvalue cut-off in [0, 1) (default :data:`RCOND`): eigenvalues at
        or below ``rcond * max eigenvalue`` count as zero in every whitening, pseudo-
        inverse and rank.  Blocks summed from float32 products carry errors near
        1e-7 of the largest eigenvalue and need 1e-5 or float64 products.
    centred : bool
        Whether ``cov`` is of centred columns (the bound on the rank is ``n - 1``).
    """
    rcond = check_option("rcond", rcond)
    xp = namespace(cov)
    if not bool(xp.all(xp.isfinite(cov))):
        # NaN or Inf in the data, or sums past float64: LAPACK would fail ("Eigenvalues
        # did not converge"); the layer's measures are NaN and the job's checks name it
        nan = xp.full(cov.shape, math.nan, dtype=xp.float64)
        return LayerBlocks(float(n), nan[0], nan, 0, math.nan, bool(centred))
    values, vectors = xp.linalg.eigh((cov + cov.T) / 2)
    values, vectors = xp.flip(values), xp.flip(vectors, axis=1)
    top = float(values[0])
    rank = int(xp.count_nonzero(values > rcond * top)) if top > 0 else 0
    return LayerBlocks(float(n), values, vectors, rank, float(xp.sum(values)), bool(centred))


def centred_cross(product, sum_x, sum_y, n):
    """The centred block ``X_c' Y_c`` from sums over the rows of data shifted by any
    fixed rows (``X - 1 a'``, ``Y - 1 b'``): their product and column sums.  With
    shifts near the means (rv2dist's shifted-data sums) nothing cancels; unshifted
    sums of post-ReLU data lose the digits of the mean."""
    xp = namespace(product)
    return product - xp.reshape(sum_x, (-1, 1)) * xp.reshape(sum_y, (1, -1)) / n


@dataclass(frozen=True)
class Canonical:
    """The whitened cross block's SVD: ``left`` (r_x, k), canonical correlations
    ``rho`` (k,), decreasing and at most 1, ``right`` (k, r_y)."""

    left: Any
    rho: Any
    right: Any


@dataclass(frozen=True)
class PairBlocks:
    """A pair of layers: ``rotated = V_x' C_xy V_y``, the cross block in both eigenbases,
    and the decompositions its measures share (computed on first use, then kept)."""

    x: LayerBlocks
    y: LayerBlocks
    rotated: Any

    @property
    def defined(self) -> bool:
        """Whether both layers have variance (else every measure is NaN)."""
        return self.x.rank > 0 and self.y.rank > 0

    @property
    def same(self) -> bool:
        """A layer against itself: its measures are exact (1, distances 0)."""
        return self.x is self.y

    @cached_property
    def whitened(self):
        """``Λ_x^-1/2 V_x' C_xy V_y Λ_y^-1/2`` on the kept directions, (r_x, r_y)."""
        xp = namespace(self.rotated)
        rx, ry = self.x.rank, self.y.rank
        return (self.rotated[:rx, :ry] / xp.reshape(xp.sqrt(self.x.values[:rx]), (-1, 1))
                / xp.reshape(xp.sqrt(self.y.values[:ry]), (1, -1)))

    @cached_property
    def canonical(self) -> Canonical:
        xp = namespace(self.rotated)
        if self.same:
            eye = xp.eye(self.x.rank, dtype=self.rotated.dtype)
            return Canonical(eye, xp.ones(self.x.rank, dtype=self.rotated.dtype), eye)
        left, values, right = thin_svd(self.whitened)
        return Canonical(left, xp.where(values < 1.0, values, 1.0), right)

    @cached_property
    def rho(self):
        """The canonical correlations (at most 1), decreasing: the singular values of
        :attr:`whitened` alone, a third of the SVD with its vectors (which only
        ``pwcca`` needs), unless :attr:`canonical` is already known."""
        if "canonical" in self.__dict__ or self.same:
            return self.canonical.rho
        xp = namespace(self.rotated)
        values = singular_values(self.whitened)
        return xp.where(values < 1.0, values, 1.0)

    @cached_property
    def nuclear(self) -> float:
        """``||C_xy||_*``, the sum of its singular values."""
        # a layer against itself: the trace, with no SVD
        return self.x.trace if self.same else float(namespace(self.rotated).sum(singular_values(self.rotated)))

    def reversed(self) -> PairBlocks:
        """The pair the other way round (``y`` against ``x``), with no product, and
        with the canonical SVD transposed where this pair has it (no SVD either)."""
        pair = PairBlocks(self.y, self.x, self.rotated.T)
        if "canonical" in self.__dict__:
            known = self.canonical
            pair.__dict__["canonical"] = Canonical(known.right.T, known.rho, known.left.T)
        return pair


def pair_blocks(x: LayerBlocks, y: LayerBlocks, cross) -> PairBlocks:
    """Prepare a pair from its two layers and ``cross = C_xy`` (p x q), the cross-product
    sum of the same kind (centred or not) as theirs.  The same :class:`LayerBlocks` for
    both sides stands for a layer against itself, and ``cross`` is then its own ``C``."""
    xp = namespace(x.vectors)
    if x is y:
        rotated = xp.eye(x.values.shape[0], dtype=x.values.dtype) * xp.reshape(x.values, (1, -1))
    else:
        rotated = x.vectors.T @ cross @ y.vectors
    return PairBlocks(x, y, rotated)


def _mean(values) -> float:
    return float(namespace(values).mean(values))


def cca(pair: PairBlocks) -> float:
    """Mean canonical correlation ``(1/k) Σ ρ_i``, ``k = min(r_x, r_y)``."""
    return _mean(pair.rho) if pair.defined else math.nan


def cca_r2(pair: PairBlocks) -> float:
    """Yanai's generalised coefficient of determination ``(1/k) Σ ρ_i²``
    ``= tr(C_xx⁺ C_xy C_yy⁺ C_yx) / k``."""
    if not pair.defined:
        return math.nan
    if "rho" in pair.__dict__ or "canonical" in pair.__dict__ or pair.same:
        return _mean(pair.rho ** 2)
    # Σ ρ_i² is the whitened block's squared Frobenius norm: no decomposition
    xp = namespace(pair.rotated)
    return float(xp.sum(pair.whitened ** 2)) / min(pair.x.rank, pair.y.rank)


def svcca_dims(layer: LayerBlocks, svcca_variance=DEFAULTS["svcca_variance"]) -> int:
    """How many leading principal directions of ``layer`` SVCCA keeps: the fewest whose
    eigenvalues reach the share ``svcca_variance`` of the (kept) variance."""
    share = check_option("svcca_variance", svcca_variance)
    if layer.rank == 0:
        return 0
    xp = namespace(layer.values)
    kept = layer.values[: layer.rank]
    cumulative = xp.cumulative_sum(kept) if hasattr(xp, "cumulative_sum") else xp.cumsum(kept)
    return min(layer.rank, 1 + int(xp.count_nonzero(cumulative / cumulative[-1] < share)))


def svcca(pair: PairBlocks, svcca_variance=DEFAULTS["svcca_variance"]) -> float:
    """SVCCA (Raghu et al. 2017): the mean canonical correlation of the two layers'
    leading principal directions that explain ``svcca_variance`` of their variance.

    Parameters
    ----------
    svcca_variance : float
        Share of each layer's variance kept, in (0, 1] (default 0.99).
    """
    mx, my = svcca_dims(pair.x, svcca_variance), svcca_dims(pair.y, svcca_variance)
    if not pair.defined:
        return math.nan
    if pair.same:
        return 1.0
    rho = singular_values(pair.whitened[:mx, :my])
    return _mean(namespace(rho).where(rho < 1.0, rho, 1.0))


def pwcca(pair: PairBlocks) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): ``Σ α_i ρ_i / Σ α_i`` with
    ``α_i = Σ_j |<h_i, x_j>|``, ``h_i`` the i-th canonical variate (unit norm) and
    ``x_j`` unit j of the layer with fewer directions (the row layer ``x`` on a tie):
    ``<h_i, x_j> = (V Λ^1/2 u_i)_j``, ``u_i`` the i-th left singular vector of the
    whitened cross block, so no data are needed.  See docs/measures.md for where
    google/svcca's ``pwcca.py`` differs."""
    if not pair.defined:
        return math.nan
    xp = namespace(pair.rotated)
    canonical = pair.canonical
    layer, directions = (pair.x, canonical.left) if pair.x.rank <= pair.y.rank else (pair.y, canonical.right.T)
    r = layer.rank
    loadings = (layer.vectors[:, :r] * xp.reshape(xp.sqrt(layer.values[:r]), (1, -1))) @ directions
    weights = xp.sum(xp.abs(loadings), axis=0)
    return float(xp.sum(weights * canonical.rho) / xp.sum(weights))


def procrustes(pair: PairBlocks) -> float:
    """Orthogonal Procrustes similarity, the normalised Bures similarity (NBS):
    ``||C_xy||_* / sqrt(tr C_xx tr C_yy)``, in [0, 1]."""
    return pair.nuclear / math.sqrt(pair.x.trace * pair.y.trace) if pair.defined else math.nan


def procrustes_distance(pair: PairBlocks) -> float:
    """Procrustes distance of the unit-norm data, ``sqrt(2 - 2 procrustes)``, in [0, sqrt 2]."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * procrustes(pair))) if pair.defined else math.nan


def _partial_whitening(layer: LayerBlocks, alpha):
    """``d`` of netrep's ``Z = V diag(d) V'``: ``alpha + (1 - alpha) λ^-1/2`` on the kept
    directions, ``alpha`` on those below the cut-off (their data are zero)."""
    xp = namespace(layer.values)
    inverse_root = xp.where(xp.arange(layer.values.shape[0]) < layer.rank,
                            1.0 / xp.sqrt(xp.where(layer.values > 0, layer.values, 1.0)), 0.0)
    return alpha + (1.0 - alpha) * inverse_root


def shape_metric(pair: PairBlocks, alpha=DEFAULTS["alpha"]) -> float:
    """Angular shape metric of Williams et al. (2021), netrep's ``LinearMetric(alpha,
    score_method="angular")``: ``arccos(||Z_x C_xy Z_y||_* / sqrt(tr Z_x C_xx Z_x
    tr Z_y C_yy Z_y))`` with the partial whitening ``Z = alpha I + (1 - alpha) C^-1/2``.

    Parameters
    ----------
    alpha : float
        In [0, 1] (default 1): 1 allows rotations only (``arccos(procrustes)``), 0 any
        invertible linear map (``arccos(Σ ρ_i / sqrt(r_x r_y))``, CCA).
    """
    alpha = check_option("alpha", alpha)
    if not pair.defined:
        return math.nan
    if pair.same:
        return 0.0
    if alpha == 1.0:
        cosine = procrustes(pair)
    elif alpha == 0.0:
        cosine = float(namespace(pair.rotated).sum(pair.rho)) / math.sqrt(pair.x.rank * pair.y.rank)
    else:
        xp = namespace(pair.rotated)
        dx, dy = _partial_whitening(pair.x, alpha), _partial_whitening(pair.y, alpha)
        aligned = xp.sum(singular_values(xp.reshape(dx, (-1, 1)) * pair.rotated * xp.reshape(dy, (1, -1))))
        cosine = float(aligned) / math.sqrt(float(xp.sum(dx * dx * pair.x.values) * xp.sum(dy * dy * pair.y.values)))
    return math.acos(min(1.0, max(-1.0, cosine)))


def _explained(pair: PairBlocks, weights) -> float:
    """``Σ_i w_i ||row i of rotated||² / tr C_yy``: variance of ``Y`` explained through
    ``X``'s eigendirections weighted by ``weights``."""
    xp = namespace(pair.rotated)
    rows = weights.shape[0]
    return float(xp.sum(xp.sum(pair.rotated[:rows, :] ** 2, axis=1) * weights)) / pair.y.trace


def linreg(pair: PairBlocks) -> float:
    """R² of the least-squares prediction of ``y`` (the column layer) from ``x`` (the row
    layer): ``tr(C_yx C_xx⁺ C_xy) / tr C_yy``, in [0, 1]; not symmetric."""
    if not pair.defined:
        return math.nan
    if pair.same:
        # a layer predicts itself exactly, directions below the cut-off included
        return 1.0
    return _explained(pair, 1.0 / pair.x.values[: pair.x.rank])


def ridge(pair: PairBlocks, ridge_lambda=DEFAULTS["ridge_lambda"]) -> float:
    """In-sample R² ``1 - ||Y_c - X_c B||² / tr C_yy`` of the ridge prediction of ``y``
    from ``x``, ``B = (C_xx + λ I)^-1 C_xy``, ``λ = ridge_lambda tr C_xx / p``:
    ``Σ_i g_i² (λ_i + 2λ) / (λ_i + λ)² / tr C_yy``, ``g_i²`` the squared norm of row i
    of ``V_x' C_xy``.  In [0, linreg]; not symmetric.

    Parameters
    ----------
    ridge_lambda : float
        Penalty >= 0 relative to the mean eigenvalue ``tr C_xx / p`` of ``x`` (default
        0.1), so the measure does not depend on the scale of either layer; 0 gives
        :func:`linreg`.
    """
    penalty = check_option("ridge_lambda", ridge_lambda)
    if not pair.defined:
        return math.nan
    if penalty == 0.0:
        return linreg(pair)
    shrink = penalty * pair.x.trace / pair.x.values.shape[0]
    if shrink == math.inf:  # a penalty past float64: nothing is fitted
        return 0.0
    values = pair.x.values
    # (λ_i + 2ℓ) / (λ_i + ℓ)² with no square, which would overflow for a large penalty
    return _explained(pair, (1.0 + shrink / (values + shrink)) / (values + shrink))


def forced_ones(pair: PairBlocks, svcca_variance=None) -> int:
    """How many canonical correlations of ``pair`` equal 1 whatever the data.

    Two subspaces of dimensions ``r_x`` and ``r_y`` in the ``n - 1``-dimensional space
    of centred observation vectors share at least ``r_x + r_y - (n - 1)`` dimensions;
    each shared direction has ``ρ = 1``.  At ``max(r_x, r_y) >= n - 1`` every ρ is 1.
    A positive count biases ``cca``, ``cca_r2``, ``pwcca``, ``shape_metric`` (below
    ``alpha = 1``) and ``linreg`` upwards; ``svcca_variance`` gives the count of SVCCA's
    truncated spaces instead.
    """
    if svcca_variance is None:
        rx, ry = pair.x.rank, pair.y.rank
    else:
        rx, ry = svcca_dims(pair.x, svcca_variance), svcca_dims(pair.y, svcca_variance)
    return int(max(0, min(rx, ry, math.ceil(rx + ry - pair.x.dims))))
