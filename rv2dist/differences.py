"""Is one cell really above another?  Paired differences from kept bootstrap replicates.

A result computed with ``bootstrap=B, keep_replicates=True`` holds, per metric, the
metric of every replicate (``<metric>_replicates``, dims ``replicate x layer_a x
layer_b``).  Every cell of one replicate comes from the same reweighted data set, so the
difference of two cells, replicate by replicate, is a paired bootstrap of the
difference (:func:`compare_cells`).  The weights depend on the seed, the number of
replicates and the observation's position only: two results computed with the same
seed and number of replicates from the same observations in the same order share
them, and a cell of one against a cell of the other is paired too
(:func:`compare_results`; it checks the seed, the count and the observation ids).
docs/statistics.md derives the interval and p-value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from rv2dist.core.checks import real_number
from rv2dist.io.results import network_names
from rv2dist.core.significance import difference_summary

__all__ = ["Difference", "UnverifiedPairingWarning", "compare_cells", "compare_results"]


class UnverifiedPairingWarning(UserWarning):
    """Two results are paired without observation ids to show that their bootstrap
    weights fell on the same observations (arrays in memory carry none)."""


@dataclass(frozen=True)
class Difference:
    """``first - second`` of one metric, with its paired bootstrap interval and p-value.

    Attributes
    ----------
    metric : str
    first, second : (str, str)
        The cells, ``(layer of network a, layer of network b)``.
    estimate : float
        The difference of the two values of the results (not of the replicates).
    low, high : float
        The ``confidence`` percentile interval of the replicates' differences.
    p : float
        Two-sided bootstrap p-value of "no difference": the percentile interval
        inverted, ``min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (B + 1))``; at least
        ``2 / (B + 1)``, which ``str()`` shows as ``p <= 2 / (B + 1)``.
    confidence : float
    replicates : int
        Replicates whose difference is defined (all of them unless a layer had zero
        variance in some).
    networks : ((str, str), (str, str))
        The networks of each cell's rows and columns, where the results name them.
    """

    metric: str
    first: tuple
    second: tuple
    estimate: float
    low: float
    high: float
    p: float
    confidence: float
    replicates: int

    networks: tuple = ()

    def __str__(self) -> str:
        first, second = (_cell_text(cell, names) for cell, names in
                         zip((self.first, self.second), self.networks or ((None, None), (None, None))))
        # the least p-value B replicates resolve is 2 / (B + 1): say so rather than print it as a value
        least = self.replicates and self.p <= 2.0 / (self.replicates + 1.0) * (1 + 1e-12)
        p = f"p <= {self.p:.3g}, the least {self.replicates} replicates resolve" if least else f"p = {self.p:.3g}"
        return (f"{self.metric}({first}) - {self.metric}({second}) = {self.estimate:.4g}, "
                f"{self.confidence:g} interval [{self.low:.4g}, {self.high:.4g}], two-sided bootstrap {p} "
                f"({self.replicates} paired replicates)")


def _cell_text(cell, networks):
    """``layer_a of A, layer_b of B`` (the network names where known)."""
    return ", ".join(f"{layer} of {network}" if network else str(layer) for layer, network in zip(cell, networks))


def compare_cells(result, metric, first, second, *, confidence=None) -> Difference:
    """The paired bootstrap difference between two cells of one result.

    Parameters
    ----------
    result : xarray.Dataset
        From ``similarity(..., bootstrap=B, keep_replicates=True)`` (or one comparison
        of a job's combined result: ``open_results(folder).sel(comparison=name)``).
    metric : str
        A metric of the result, e.g. ``"cka"``.
    first, second : (str, str)
        Cells as ``(layer of network a, layer of network b)``: e.g. two layers of a
        against one reference layer of b, ``("l1", "ref")`` and ``("l2", "ref")``.
    confidence : float, optional
        Level of the interval (default: the result's ``confidence``, else 0.95).

    Returns
    -------
    Difference
        ``first - second``.

    Raises
    ------
    ValueError
        The result holds no replicates of ``metric``, or no such layer.
    """
    return _difference(metric, (result, first), (result, second), confidence)


def compare_results(first, second, metric, cell, second_cell=None, *, confidence=None) -> Difference:
    """The paired bootstrap difference between a cell of two results that share
    observations, e.g. network A against B and A against C.

    Both results must come from the same seed, the same number of replicates and the
    same observations in the same order (the rows the weights fall on: a's order, b's
    rows reordered to it by ``align_obs``); this is checked from their seeds, replicate
    counts, observation counts and observation ids.  Results of arrays without ids
    are taken as paired with a :class:`UnverifiedPairingWarning`.

    Parameters
    ----------
    first, second : xarray.Dataset
        Results of ``similarity(..., bootstrap=B, keep_replicates=True)`` (or single
        comparisons of combined results).
    metric : str
        A metric both results hold.
    cell : (str, str)
        ``(layer of network a, layer of network b)`` in ``first``, and in ``second``
        unless ``second_cell`` is given.
    second_cell : (str, str), optional
        The cell of ``second`` (when its layers are named differently).
    confidence : float, optional
        Level of the interval (default: ``first``'s ``confidence``, else 0.95).

    Returns
    -------
    Difference
        ``first[cell] - second[second_cell]``.

    Raises
    ------
    ValueError
        The results are not paired (naming what differs), hold no replicates of
        ``metric``, or no such layer.
    """
    _check_paired(first, second)
    return _difference(metric, (first, cell), (second, cell if second_cell is None else second_cell), confidence)


def _difference(metric, one, other, confidence):
    (first, cell_1), (second, cell_2) = one, other
    value_1, replicates_1 = _cell(first, metric, cell_1, "first")
    value_2, replicates_2 = _cell(second, metric, cell_2, "second")
    if len(replicates_1) != len(replicates_2):
        raise ValueError(f"the results hold {len(replicates_1)} and {len(replicates_2)} replicates: paired "
                         "replicates need the same number (and seed)")
    if confidence is None:
        confidence = float(first.attrs.get("confidence", 0.95))
    if not (real_number(confidence) and 0 < confidence < 1):
        raise ValueError(f"confidence must be a number between 0 and 1, not {confidence!r}")
    low, high, p, used = difference_summary(replicates_1 - replicates_2, confidence)
    return Difference(metric, tuple(cell_1), tuple(cell_2), value_1 - value_2, low, high, p, float(confidence), used,
                      (network_names(first), network_names(second)))


def _cell(result, metric, cell, which):
    """(value, replicates) of one cell of a result."""
    name = f"{metric}_replicates"
    if not hasattr(result, "data_vars"):
        raise ValueError(f"the {which} result is one matrix without replicates: compute it with bootstrap=B, "
                         "keep_replicates=True")
    if name not in result.data_vars:
        raise ValueError(f"the {which} result holds no bootstrap replicates of {metric!r}: compute it with "
                         f"metric including {metric!r}, bootstrap=B, keep_replicates=True (it holds "
                         f"{', '.join(result.data_vars)})")
    if "comparison" in result[name].dims:
        raise ValueError(f"the {which} result holds several comparisons: pick one with .sel(comparison=...)")
    if not isinstance(cell, (tuple, list)) or len(cell) != 2:
        raise ValueError(f"a cell is (layer of network a, layer of network b), not {cell!r}")
    for dim, layer in zip(("layer_a", "layer_b"), cell):
        known = [str(v) for v in result[dim].values]
        if str(layer) not in known:
            raise ValueError(f"the {which} result has no {dim} {layer!r}; it has {', '.join(known)}")
    where = {"layer_a": str(cell[0]), "layer_b": str(cell[1])}
    return float(result[metric].sel(where)), np.asarray(result[name].sel(where).values, dtype=float)


def _key(result, name):
    """A result's attr, or its scalar coordinate (one comparison of a combined result);
    None when unknown (a combined result marks that with "" or -1)."""
    if name in getattr(result, "coords", {}) and result[name].ndim == 0:
        value = result[name].values.item()
    else:
        value = result.attrs.get(name)
    return None if value in ("", -1) else value


def _check_paired(first, second):
    for name, what in (("seed", "seeds"), ("n_obs", "observation counts")):
        one, other = _key(first, name), _key(second, name)
        if one is not None and other is not None and one != other:
            raise ValueError(f"the results are not paired: their {what} differ ({one} against {other}); "
                             "paired replicates need the same seed and observations")
    one, other = _key(first, "obs_digest"), _key(second, "obs_digest")
    if one is None or other is None:
        warnings.warn("a result has no observation ids (arrays in memory carry none): the pairing assumes both "
                      "results weighted the same observations in the same order", UnverifiedPairingWarning,
                      stacklevel=3)
    elif one != other:
        raise ValueError("the results are not paired: their observation ids differ (other observations, or "
                         "another order); compute both from the same observations in the same order")
