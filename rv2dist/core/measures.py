"""The measures rv2dist computes: one record each, in one read-only table.

Everything the rest of rv2dist needs to know about a measure is here: its names and
description (a result variable's attrs), how it is finalised from the sums of one
pass, whether it always centres, which significance methods apply, its range and its
plot scale.  The command line, job files, results, figures and the significance code
read this table; adding a measure is one entry here, its finalize function, and its
tests.  See docs/architecture.md for a worked example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from rv2dist.core import rv_family
from rv2dist.core import second_moments as sm
from rv2dist.core.errors import UnreadOptionWarning


@dataclass(frozen=True)
class Measure:
    """One similarity (or distance) measure between two layers.

    Attributes
    ----------
    name : str
        The name users pass (``metric=``), and the result variable's name.
    long_name, description : str
        The result variable's ``long_name`` and ``description`` attrs.
    label : str
        Short name for colour bars and titles.
    finalize : callable or None
        ``finalize(stats) -> (L, L) array`` from the sufficient statistics of every
        layer pair (see :mod:`rv2dist.core.rv_family`); None for a measure of the
        second-moment family.
    pair : callable or None
        ``pair(blocks, options) -> float`` of one cell from its layers' centred p x p
        blocks (see :mod:`rv2dist.core.second_moments`), ``options`` a
        :class:`~rv2dist.core.block_measures.MeasureOptions`; None for the RV family.
    always_centred : bool
        Computed from centred data whatever ``center=`` says.
    numerator : rv_family.Numerator or None
        The inner product of a ratio measure: its exact permutation moments give the
        z-scores and p-values of ``tests=True``, and Monte Carlo permutations compare
        it directly; None for a measure without them.
    min_obs : int
        Fewest (weighted) observations for which the measure is defined.
    reads_column_sums : bool
        Reads ``ones`` (``1'Ã1``) of uncentred statistics, whose column sums cost a pass
        of their own (centred statistics always have them).
    scale : {"unit", "distance", "data"}
        Colour scale of figures: ``"unit"`` shares ``[min(0, lowest), 1]`` across
        panels (measures bounded above by 1); ``"distance"`` ``[0, highest]`` with the
        colours reversed, so that alike layers look alike on every measure; ``"data"``
        the values' own range.
    kind : {"similarity", "distance"}
        Whether larger values mean more alike.
    symmetric : bool
        Whether the value of (x, y) is that of (y, x): a network against itself gives
        a symmetric matrix.
    whitens : bool
        Whether it inverts a layer's covariance (CCA-type measures, regression): it
        sees every direction alike, so a layer of rank close to the number of
        observations makes it meaningless (see ``forced_ones``).
    canonical_vectors : bool
        Whether it needs the canonical vectors, not only the correlations: the SVD
        with vectors is then taken first, and gives the correlations of the others.
    options : tuple of str
        The options of :class:`~rv2dist.core.block_measures.MeasureOptions` its value
        depends on besides ``rcond`` (which every second-moment measure's ranks do):
        recorded in the result's attrs.
    """

    name: str
    long_name: str
    description: str
    label: str
    finalize: Callable | None = None
    pair: Callable | None = None
    always_centred: bool = False
    numerator: rv_family.Numerator | None = None
    min_obs: int = 2
    reads_column_sums: bool = False
    scale: str = "unit"
    kind: str = "similarity"
    symmetric: bool = True
    whitens: bool = False
    canonical_vectors: bool = False
    options: tuple = ()

    @property
    def family(self) -> str:
        """``"rv"``: from the sums both routes compute; ``"blocks"``: from the feature
        route's centred p x p blocks."""
        return "blocks" if self.pair is not None else "rv"

    def pair_value(self, blocks, options) -> float:
        """The value of one cell of a second-moment measure."""
        return self.pair(blocks, options)

    def centred(self, center: bool) -> bool:
        """Whether this measure is computed from centred statistics under ``center=``."""
        return True if self.always_centred else bool(center)

    def matrix(self, stats):
        """The full ``(L, L)`` matrix from ``stats``: NaN rows and columns for undefined
        layers, all NaN with fewer (weighted) observations than the measure needs."""
        if stats.n < self.min_obs:
            return np.full(np.shape(stats.cross), np.nan)
        values = self.finalize(stats)
        undefined = np.asarray(stats.undefined, dtype=bool)
        values[undefined, :] = np.nan
        values[:, undefined] = np.nan
        return values


_ALL = (
    Measure("rv2", "modified RV coefficient (RV2)",
            "<A~, B~> / sqrt(<A~, A~> <B~, B~>), the Grams without their diagonals (Smilde et al. 2009); "
            "near 0 for unrelated layers, 1 for equal ones up to rotation and scale",
            "RV2", finalize=rv_family.ratio(rv_family.OFF_DIAGONAL), numerator=rv_family.OFF_DIAGONAL),
    Measure("rv", "RV coefficient", "<A, B> / sqrt(<A, A> <B, B>) of the Gram matrices (Escoufier 1973)",
            "RV", finalize=rv_family.ratio(rv_family.GRAM), numerator=rv_family.GRAM),
    Measure("cka", "linear CKA",
            "centred kernel alignment with linear kernels: RV of the centred data (Kornblith et al. 2019)",
            "CKA", finalize=rv_family.ratio(rv_family.GRAM), always_centred=True, numerator=rv_family.GRAM),
    Measure("cka_debiased", "debiased linear CKA",
            "linear CKA with the unbiased HSIC estimator (Song et al. 2012); may be slightly negative",
            # the unbiased HSIC divides by n (n - 3)
            "debiased CKA", finalize=rv_family.ratio(rv_family.UNBIASED_HSIC), always_centred=True,
            numerator=rv_family.UNBIASED_HSIC, min_obs=4),
    Measure("rsa", "representational similarity (RSA)",
            "Pearson correlation of the off-diagonal entries of the linear-kernel similarity matrices X X' and "
            "Y Y' (Kriegeskorte et al. 2008), of centred columns unless center=False; from the same sums as RV2",
            "RSA", finalize=rv_family.ratio(rv_family.RSA), numerator=rv_family.RSA, min_obs=3, reads_column_sums=True),
    Measure("rsa_euclidean", "RSA of squared Euclidean distances",
            "Pearson correlation of the off-diagonal entries of the squared Euclidean distance matrices of the "
            "observations (Kriegeskorte et al. 2008); from the same sums as RV2",
            "RSA (distances)", finalize=rv_family.ratio(rv_family.RSA_DISTANCES), always_centred=True,
            numerator=rv_family.RSA_DISTANCES, min_obs=3),
    *(Measure(name, long_name, description, label, pair=pair, always_centred=True, **extra)
      for name, long_name, description, label, pair, extra in (
        ("cca", "mean canonical correlation (CCA)",
         "mean of the canonical correlations of the centred layers (Hotelling 1936); invariant to invertible linear "
         "maps, so meaningless where a layer's rank nears the observations (Kornblith et al. 2019)",
         "CCA", lambda pair, o: sm.cca(pair), dict(whitens=True)),
        ("cca_r2", "mean squared canonical correlation (Yanai's GCD)",
         "mean of the squared canonical correlations, tr(Cxx+ Cxy Cyy+ Cyx) / k (Yanai 1974)",
         "CCA R²", lambda pair, o: sm.cca_r2(pair), dict(whitens=True)),
        ("svcca", "SVCCA",
         "mean canonical correlation of each layer's leading principal directions explaining svcca_variance of its "
         "variance (Raghu et al. 2017)",
         "SVCCA", lambda pair, o: sm.svcca(pair, o.svcca_variance), dict(whitens=True, options=("svcca_variance",))),
        ("pwcca", "projection-weighted CCA (PWCCA)",
         "canonical correlations weighted by how much of the layer with fewer directions each accounts for "
         "(Morcos et al. 2018); see docs/measures.md",
         # not symmetric where the two layers have equal rank: the row layer's weights
         "PWCCA", lambda pair, o: sm.pwcca(pair), dict(whitens=True, symmetric=False, canonical_vectors=True)),
        ("procrustes", "orthogonal Procrustes similarity",
         "||Cxy||_* / sqrt(tr Cxx tr Cyy), the normalised Bures similarity (Ding et al. 2021); invariant to "
         "rotations and isotropic scaling",
         "Procrustes", lambda pair, o: sm.procrustes(pair), {}),
        ("procrustes_distance", "Procrustes distance",
         "sqrt(2 - 2 procrustes): the distance of the unit-norm centred data after the best rotation; 0 for equal "
         "layers",
         "Procrustes distance", lambda pair, o: sm.procrustes_distance(pair), dict(kind="distance", scale="distance")),
        ("shape_metric", "angular shape metric",
         "arccos of the partially whitened Procrustes similarity (Williams et al. 2021, netrep's LinearMetric): "
         "alpha=1 rotations only, alpha=0 CCA; 0 for equal layers",
         "shape metric", lambda pair, o: sm.shape_metric(pair, o.alpha),
         dict(kind="distance", scale="distance", options=("alpha",))),
        ("linreg", "linear regression R² (b from a)",
         "share of the variance of the layer of b (columns) explained by a least-squares fit from the layer of a "
         "(rows): tr(Cyx Cxx+ Cxy) / tr Cyy; not symmetric",
         "R² (columns from rows)", lambda pair, o: sm.linreg(pair), dict(whitens=True, symmetric=False)),
        ("ridge", "ridge regression R² (b from a)",
         "in-sample R² of the ridge fit of the layer of b (columns) from the layer of a (rows), penalty "
         "ridge_lambda times a's mean eigenvalue; not symmetric",
         "ridge R² (columns from rows)", lambda pair, o: sm.ridge(pair, o.ridge_lambda),
         dict(symmetric=False, options=("ridge_lambda",))),
      )),
    Measure("rv2_null", "expected RV2 under permutation",
            "the mean of RV2 when the observations of one side are shuffled: the level an RV2 is compared against",
            "expected RV2", finalize=rv_family.rv2_null, reads_column_sums=True, scale="data"),
)

MEASURES = MappingProxyType({measure.name: measure for measure in _ALL})


def measure(name) -> Measure:
    """The measure called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(MEASURES)}") from None


def check_names(metric) -> list[str]:
    """``metric`` (a name or a list of names) as a list of known, distinct names."""
    if not isinstance(metric, (str, list, tuple)):
        raise TypeError(f"metric must be a metric name or a list of them, not {metric!r}")
    names = [metric] if isinstance(metric, str) else list(metric)
    if not names:
        raise ValueError("no metric given")
    for name in names:
        measure(name)
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise ValueError(f"metric {repeated!r} is asked for more than once")
    return names


def warn_unread_options(names, options, stacklevel=2) -> None:
    """An :class:`~rv2dist.core.errors.UnreadOptionWarning` for each option of
    ``options`` (a :class:`~rv2dist.core.block_measures.MeasureOptions`) set away from its
    default that none of the measures ``names`` reads, naming those that would
    (``rcond`` is read by every second-moment measure)."""
    import warnings

    defaults = {**sm.DEFAULTS, "rcond": None}
    for option, default in defaults.items():
        readers = [name for name, m in MEASURES.items()
                   if option in m.options or (option == "rcond" and m.family == "blocks")]
        if getattr(options, option) != default and not set(readers) & set(names):
            warnings.warn(f"{option}={getattr(options, option)!r} changes nothing: no metric asked for "
                          f"({', '.join(names)}) reads it ({', '.join(readers)} would)", UnreadOptionWarning,
                          stacklevel=stacklevel)
