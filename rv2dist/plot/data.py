"""What a figure reads of a result: the matrix of one metric, the single comparison
of a collection, the cells its tests mark, and the colour range."""

from __future__ import annotations

import numpy as np

from rv2dist.core.measures import MEASURES
from rv2dist.core.significance import floor_z
from rv2dist.core.checks import real_number
from rv2dist.io.results import panels


def metric_matrix(result, metric):
    """(DataArray of one metric, metric name) of a single result; ``metric=None``: rv2
    when the result holds it, else its first metric."""
    if hasattr(result, "data_vars"):
        metric = metric or ("rv2" if "rv2" in result.data_vars else next(iter(result.data_vars)))
        if metric not in result.data_vars:
            raise ValueError(f"the result holds no metric {metric!r}; it has {', '.join(result.data_vars)}")
        matrix = result[metric]
    else:
        if metric is not None and result.name is not None and metric != result.name:
            raise ValueError(f"the result holds {result.name}, not {metric!r}")
        matrix = result
        metric = metric or (str(result.name) if result.name is not None else "value")
    if matrix.dims != ("layer_a", "layer_b"):
        raise ValueError(f"a heatmap draws one (layer_a, layer_b) matrix; this one has dims {matrix.dims}")
    return matrix, metric


def single(result):
    """The single result in ``result`` (see :func:`rv2dist.io.results.panels`)."""
    found = panels(result)
    if len(found) != 1:
        raise ValueError(f"a heatmap draws one comparison; these results hold {len(found)} "
                         f"({', '.join(label for label, _ in found)}): pick one with .sel(comparison=...) or "
                         "comparisons= of job_grid, or draw all with job_grid")
    return found[0][1]


def check_level(level) -> None:
    if level is not None and not (real_number(level) and 0 < level < 1):
        raise ValueError(f"significance must be a level between 0 and 1 (e.g. 0.05) or None, not {level!r}")


def default_range(metric, values):
    """The colour scale of ``metric``: [min(0, lowest), 1] for measures of the unit
    scale (bounded above by 1, near 0 for unrelated layers: panels then compare),
    [0, highest] for distances, the data's own range otherwise (rv2_null, of values
    near 1e-8)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    known = MEASURES.get(metric)
    if known is not None and known.scale == "unit":
        return min(0.0, float(finite.min())), max(1.0, float(finite.max()))
    if known is not None and known.scale == "distance":
        return 0.0, max(float(finite.max()), 1e-12)
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def significant(result, metric, level):
    """Cells whose corrected p-value is below ``level``; None when nothing is to be
    marked (no level, or a result without tests)."""
    name = f"{metric}_p_corrected"
    if level is None or not hasattr(result, "data_vars") or name not in result.data_vars:
        return None
    return np.nan_to_num(np.asarray(result[name].values, dtype=float), nan=1.0) < level


def correction(results, metric) -> str:
    """The correction(s) behind the ``<metric>_p_corrected`` of ``results``, by name."""
    names = {r[f"{metric}_p_corrected"].attrs.get("correction", r.attrs.get("correction")) for r in results
             if hasattr(r, "data_vars") and f"{metric}_p_corrected" in r.data_vars}
    return "/".join(sorted(str(name) for name in names if name)) or "corrected"


def z_at_floor(result, metric):
    """:func:`rv2dist.core.significance.floor_z` of a result's ``metric`` (None without tests)."""
    p, z = f"{metric}_p", f"{metric}_z"
    if not hasattr(result, "data_vars") or p not in result.data_vars or z not in result.data_vars:
        return None
    return floor_z(result[p].values, result[z].values)


def default_cmap(metric):
    """The colour map of ``metric``: viridis, reversed for distances (alike layers then
    look alike on every measure)."""
    known = MEASURES.get(metric)
    return "viridis_r" if known is not None and known.kind == "distance" else "viridis"
