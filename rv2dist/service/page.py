"""The rv2dist page (``rv2dist/web/page.html``) and the data it draws.

One file serves twice: live on the scheduler's dashboard server, polling the board
(:mod:`rv2dist.service.dashboard`), and with a job's data embedded as its offline
``report.html`` (:mod:`rv2dist.service.report`).  It needs no JavaScript library and
sets every name and message as text, never as HTML.
"""

from __future__ import annotations

import json
import math

import numpy as np

from rv2dist.core.measures import MEASURES
from rv2dist.core.significance import FLOOR_NOTE, MARK_LEVEL, floor_z


def comparison_entry(comparison, networks, status, *, result=None, metrics=(), seconds=None) -> dict:
    """What the page shows of one comparison: its networks (``networks`` maps the
    job's names to the stores' own) and ``status``; with its ``result``, the matrices
    of ``metrics``, the layers, each metric's colour scale and label (the colour bar's
    title) and the cells the page stars; and the ``seconds`` it took."""
    entry = {"network_a": networks[comparison.a], "network_b": networks[comparison.b], "status": status}
    if result is not None:
        entry.update(matrices={metric: result[metric].values.tolist() for metric in metrics},
                     scales={metric: MEASURES[metric].scale for metric in metrics if metric in MEASURES},
                     labels={metric: MEASURES[metric].label for metric in metrics if metric in MEASURES},
                     layers_a=[str(v) for v in result["layer_a"].values],
                     layers_b=[str(v) for v in result["layer_b"].values], **_stars(result, metrics))
    if seconds is not None:
        entry["seconds"] = seconds
    return entry


def _stars(result, metrics) -> dict:
    """The cells the page stars: corrected p below the level the heatmaps mark; where
    p rests on the floor, the page shows z in place of the star."""
    corrected = {metric: result[f"{metric}_p_corrected"].values for metric in metrics
                 if f"{metric}_p_corrected" in result.data_vars}
    if not corrected:
        return {}
    at_floor = {metric: floor_z(result[f"{metric}_p"].values, result[f"{metric}_z"].values) for metric in corrected}
    at_floor = {metric: [[None if np.isnan(z) else round(float(z), 1) for z in row] for row in zs]
                for metric, zs in at_floor.items() if zs is not None}
    return {"significant": {metric: (np.nan_to_num(p, nan=1.0) < MARK_LEVEL).tolist()
                            for metric, p in corrected.items()},
            "significance": f"* corrected p < {MARK_LEVEL:g} ({result.attrs.get('correction')})"
                            + (f"; {FLOOR_NOTE}" if at_floor else ""),
            "floor_z": at_floor}


def finite(value):
    """JSON has no NaN: undefined metric values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def page_html(data=None) -> str:
    """The rv2dist page: live (``data=None``: it polls the JSON route) or, with a
    snapshot embedded (``{"jobs": [...]}``), a self-contained report."""
    from importlib.resources import files

    template = files("rv2dist").joinpath("web/page.html").read_text(encoding="utf-8")
    if data is None:
        return template
    # JSON inside <script>: "<" escaped so no string can close the element
    embedded = json.dumps(finite(data)).replace("<", "\\u003c")
    return template.replace("/*RV2DIST_DATA*/null", embedded, 1)
