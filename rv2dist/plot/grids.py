"""Figures of many comparisons: a job's heatmaps on one colour scale, and the
similarity of corresponding layers against depth."""

from __future__ import annotations

import numpy as np

from rv2dist.core.significance import FLOOR_NOTE, MARK_LEVEL
from rv2dist.io.results import panels
from rv2dist.plot.data import check_level, correction, default_range, metric_matrix, significant, z_at_floor
from rv2dist.plot.figures import new_axes, save
from rv2dist.plot.heatmaps import heatmap
from rv2dist.plot.labels import comparison_name, measure_label, plain


def _drawn(results, comparisons, metric):
    """The panels to draw (see :func:`rv2dist.io.results.panels`) and the metric drawn."""
    drawn = panels(results, comparisons)
    if not drawn:
        raise ValueError("no comparisons to draw")
    return drawn, metric_matrix(drawn[0][1], metric)[1]


def job_grid(results, comparisons=None, *, metric=None, ncols=None, titles=None, path=None, **options):
    """One heatmap per comparison on a shared colour scale and bar (the seed study's
    Figures 1, 2 and 4).

    Parameters
    ----------
    results : xarray.Dataset, xarray.DataArray, list or path
        A job's combined result (:func:`rv2dist.open_results`), a single result, a
        list of results, a result file or a results folder (see :mod:`rv2dist.io.results`).
    comparisons : list of str, optional
        Which comparisons, in order (default all): a combined result's comparison
        names, else ``"<a>__<b>"`` from the network names (see
        :func:`rv2dist.io.results.panels`).
    metric : str, optional
        The metric drawn; default rv2 when the results hold it, else their first.
    ncols : int, optional
        Panels per row (default up to 5).
    titles : list of str, optional
        Panel titles (default ``"<a> vs <b>"``).
    path : str or Path, optional
        Also save the figure (200 dpi) and close it.
    **options
        Passed to :func:`~rv2dist.plot.heatmap` (``cmap``, ``vmin``, ``vmax``,
        ``annotate``, ``significance``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    level = options.get("significance", MARK_LEVEL)
    check_level(level)
    drawn, metric = _drawn(results, comparisons, metric)
    ncols = ncols or min(5, len(drawn))
    nrows = -(-len(drawn) // ncols)
    starred = any(significant(result, metric, level) is not None for _, result in drawn)
    # a line more for the stars' caption, which would otherwise push the axis labels out
    figure, axes = new_axes(path, (3.6 * ncols, 3.4 * nrows + 0.3 * starred), nrows=nrows, ncols=ncols,
                            squeeze=False)
    values = np.concatenate([np.ravel(metric_matrix(r, metric)[0].values) for _, r in drawn]).astype(float)
    low, high = default_range(metric, values)
    options = {"vmin": low, "vmax": high, **options}
    for index, (ax, (label, result)) in enumerate(zip(axes.flat, drawn)):
        title = titles[index] if titles else comparison_name(result, label)
        heatmap(result, ax=ax, metric=metric, title=title, colorbar=False, **options)
    for ax in list(axes.flat)[len(drawn):]:
        ax.set_visible(False)
    figure.colorbar(axes.flat[0].images[0], ax=axes, label=plain(measure_label(metric)))
    if starred:
        shown = [result for _, result in drawn]
        floor = any(z_at_floor(result, metric) is not None for result in shown)
        figure.suptitle(f"* corrected p < {level:g} ({correction(shown, metric)})" + (f"; {FLOOR_NOTE}" if floor else ""),
                        fontsize="small")
    if path is not None:
        save(figure, path)
    return figure


def diagonal(results, comparisons=None, *, metric=None, ax=None, labels=None, path=None):
    """The similarity of corresponding layers (the diagonal of each comparison) against
    depth, one line per comparison (the seed study's Figures 3 and 4 in one panel).

    Parameters
    ----------
    results : xarray.Dataset, xarray.DataArray, list or path
        As :func:`job_grid`; rows and columns are matched by layer name.
    comparisons : list of str, optional
        Which comparisons (default all), as :func:`job_grid` names them.
    metric : str, optional
        The metric drawn; default rv2 when the results hold it, else their first.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes.
    labels : list of str, optional
        Legend labels (default ``"<a> vs <b>"``).
    path : str or Path, optional
        Also save (200 dpi) and close.

    Returns
    -------
    matplotlib.axes.Axes
    """
    drawn, metric = _drawn(results, comparisons, metric)
    if ax is None:
        _, ax = new_axes(path, (6.5, 3.8))
    positions, lines = {}, []  # layers along x in order of first appearance, as a categorical axis has them
    for index, (label, result) in enumerate(drawn):
        matrix = metric_matrix(result, metric)[0]
        shared = [str(v) for v in matrix["layer_a"].values if v in set(matrix["layer_b"].values)]
        values = [float(matrix.sel(layer_a=name, layer_b=name)) for name in shared]
        name = labels[index] if labels else comparison_name(result, label)
        lines += ax.plot([positions.setdefault(layer, len(positions)) for layer in shared], values, "o-", label=name)
    ax.set_xticks(range(len(positions)), [plain(layer) for layer in positions], rotation=90)
    ax.set_xlabel("layer (of a against the same layer of b)")
    ax.set_ylabel(plain(metric_matrix(drawn[0][1], metric)[0].attrs.get("long_name") or measure_label(metric)))
    # labels given with their lines: legend() would leave out those starting with "_"
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    if path is not None:
        save(ax.figure, path)
    return ax
