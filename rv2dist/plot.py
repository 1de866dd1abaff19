"""Figures of results in the style of the seed study: heatmaps (layers of A down,
layers of B across), grids of them for a job, and the similarity of corresponding layers.

Every function draws on Matplotlib axes it is given (or makes its own) and returns
them, so panels compose into a paper's figure; ``path=`` also saves (PNG at 200 dpi,
SVG or PDF by the suffix).  Matplotlib is imported only here, when drawing.
"""

from __future__ import annotations

import numpy as np

from rv2dist.core.measures import MEASURES
from rv2dist.core.significance import FLOOR_NOTE, MARK_LEVEL, floor_z
from rv2dist.io.inputs import real_number
from rv2dist.io.results import network_names, panels

DPI = 200


def _label(metric):
    """A measure's short name for colour bars and titles (long names, from the
    results, go on the diagonal's axis)."""
    known = MEASURES.get(metric)
    return known.label if known is not None else metric


def _plain(text):
    """``text`` shown as it is: a name is never Matplotlib mathtext (``$`` escaped)."""
    return str(text).replace("$", r"\$")


def _matrix(result, metric):
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


def _one(result):
    """The single result in ``result`` (see :func:`rv2dist.io.results.panels`)."""
    found = panels(result)
    if len(found) != 1:
        raise ValueError(f"a heatmap draws one comparison; these results hold {len(found)} "
                         f"({', '.join(label for label, _ in found)}): pick one with .sel(comparison=...) or "
                         "comparisons= of job_grid, or draw all with job_grid")
    return found[0][1]


def _check_level(level):
    if level is not None and not (real_number(level) and 0 < level < 1):
        raise ValueError(f"significance must be a level between 0 and 1 (e.g. 0.05) or None, not {level!r}")


def _new_axes(path, figsize, **grid):
    """A new figure: a plain Figure when it only goes to a file (no GUI backend is
    involved, as on a cluster node), else through pyplot so that notebooks show it."""
    if path is not None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=figsize, layout="constrained")
        return figure, figure.subplots(**grid)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, layout="constrained", **grid)


def _save(figure, path):
    figure.savefig(path, dpi=DPI)


def default_range(metric, values):
    """The colour scale of ``metric``: [min(0, lowest), 1] for measures of the unit
    scale (bounded above by 1, near 0 for unrelated layers: panels then compare), the
    data's own range otherwise (rv2_null, of values near 1e-8)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    known = MEASURES.get(metric)
    if known is not None and known.scale == "unit":
        return min(0.0, float(finite.min())), max(1.0, float(finite.max()))
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def heatmap(result, path=None, *, ax=None, metric=None, cmap="viridis", vmin=None, vmax=None, annotate=False,
            title=None, colorbar=True, names=None, significance=MARK_LEVEL):
    """Draw one metric of a result as a heatmap.

    Parameters
    ----------
    result : xarray.Dataset, xarray.DataArray, numpy.ndarray, list or path
        One comparison: a result with dims ``("layer_a", "layer_b")``, a 2-D array, or
        a list, combined result, result file or results folder holding one (see
        :mod:`rv2dist.results`).
    path : str or Path, optional
        Also save the figure here (PNG at 200 dpi, SVG or PDF by the suffix) and close it.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (a panel of a larger figure); default a new figure.
    metric : str, optional
        Variable to draw from a Dataset; default rv2 when it holds it, else its first.
    cmap : str or Colormap
        Matplotlib colour map (default ``"viridis"``).
    vmin, vmax : float, optional
        Colour scale; default per metric (see :func:`default_range`).
    annotate : bool or str
        Write each value in its cell; a string is the format (default ``".2f"``).
    title : str, optional
        Default ``"<network a> vs <network b>: <metric>"`` (names from ``names``, the
        result's coordinates or attrs), or the metric alone when no names are known.
    colorbar : bool
        Draw a colour bar labelled with the metric.
    names : (str, str), optional
        Network names of the rows and columns.
    significance : float or None
        When the result holds ``<metric>_p_corrected`` (``tests=True``), mark with a
        star the cells whose corrected p-value is below this level (default 0.05);
        None: no marks.  A marked cell whose p-value rests on the floor (``p <=
        1e-300``, where p-values no longer tell cells apart) shows its z-score instead
        of the star.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _check_level(significance)
    result = _one(result)
    matrix, metric = _matrix(result, metric)
    values = np.asarray(matrix.values, dtype=float)
    network_a, network_b = names or network_names(result)
    low, high = default_range(metric, values)
    label = _plain(_label(metric))
    marked = _significant(result, metric, significance)
    shown_z = _floor_z(result, metric) if marked is not None else None
    if title is None:
        title = f"{_plain(network_a)} vs {_plain(network_b)}: {label}" if network_a else label
        if marked is not None:
            title += f"\n* corrected p < {significance:g} ({_correction([result], metric)})"
            title += f"\n{FLOOR_NOTE}" if shown_z is not None else ""
    title_size = None
    if ax is None:
        rows, cols = values.shape
        width = 1.6 + 0.45 * cols
        _, ax = _new_axes(path, (width, 1.2 + 0.42 * rows))
        # a title wider than a small matrix's figure in smaller type (a character is
        # about 0.55 of the type's size wide; the image sits right of the middle)
        widest = max(len(line) for line in title.split("\n"))
        title_size = min(_font_size(), 72 * 0.8 * width / (0.55 * widest))
    image = ax.imshow(values, vmin=low if vmin is None else vmin, vmax=high if vmax is None else vmax,
                      cmap=cmap, origin="upper")
    ax.set_xticks(range(values.shape[1]), [_plain(v) for v in matrix["layer_b"].values], rotation=90)
    ax.set_yticks(range(values.shape[0]), [_plain(v) for v in matrix["layer_a"].values])
    ax.set_xlabel(f"{_plain(network_b)} (layer)" if network_b else "layer of network b")
    ax.set_ylabel(f"{_plain(network_a)} (layer)" if network_a else "layer of network a")
    ax.set_title(title, fontsize=title_size)
    if annotate:
        _annotate(ax, image, values, annotate if isinstance(annotate, str) else ".2f")
    if marked is not None:
        _mark(ax, image, values, marked, offset=0.3 if annotate else 0.0, shown_z=shown_z)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    if path is not None:
        _save(ax.figure, path)
    return ax


def _font_size():
    """Matplotlib's default title size in points."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=rcParams["axes.titlesize"]).get_size_in_points()


def _significant(result, metric, level):
    """Cells whose corrected p-value is below ``level``; None when nothing is to be
    marked (no level, or a result without tests)."""
    name = f"{metric}_p_corrected"
    if level is None or not hasattr(result, "data_vars") or name not in result.data_vars:
        return None
    return np.nan_to_num(np.asarray(result[name].values, dtype=float), nan=1.0) < level


def _correction(results, metric):
    """The correction(s) behind the ``<metric>_p_corrected`` of ``results``, by name."""
    names = {r[f"{metric}_p_corrected"].attrs.get("correction", r.attrs.get("correction")) for r in results
             if hasattr(r, "data_vars") and f"{metric}_p_corrected" in r.data_vars}
    return "/".join(sorted(str(name) for name in names if name)) or "corrected"


def _floor_z(result, metric):
    """:func:`rv2dist.core.significance.floor_z` of a result's ``metric`` (None without tests)."""
    p, z = f"{metric}_p", f"{metric}_z"
    if not hasattr(result, "data_vars") or p not in result.data_vars or z not in result.data_vars:
        return None
    return floor_z(result[p].values, result[z].values)


def _text_colour(image, value):
    red, green, blue, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


def _mark(ax, image, values, marked, offset, shown_z=None):
    """A star in each marked cell (in its corner when the cell also holds its value);
    its z-score instead where ``shown_z`` has one."""
    for i, j in zip(*np.nonzero(marked)):
        z = np.nan if shown_z is None else shown_z[i, j]
        text, size = ("*", 8 if offset else 10) if np.isnan(z) else (f"{z:.0f}", 5 if offset else 6)
        ax.text(j + offset, i - offset, text, ha="center", va="center", fontsize=size,
                color=_text_colour(image, values[i, j]))


def _annotate(ax, image, values, fmt):
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, "—" if not np.isfinite(value) else format(value, fmt), ha="center", va="center",
                fontsize=6, color=_text_colour(image, value))


def job_grid(results, comparisons=None, *, metric=None, ncols=None, titles=None, path=None, **options):
    """One heatmap per comparison on a shared colour scale and bar (the seed study's
    Figures 1, 2 and 4).

    Parameters
    ----------
    results : xarray.Dataset, xarray.DataArray, list or path
        A job's combined result (:func:`rv2dist.open_results`), a single result, a
        list of results, a result file or a results folder (see :mod:`rv2dist.results`).
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
        Passed to :func:`heatmap` (``cmap``, ``vmin``, ``vmax``, ``annotate``,
        ``significance``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    level = options.get("significance", MARK_LEVEL)
    _check_level(level)
    drawn = panels(results, comparisons)
    if not drawn:
        raise ValueError("no comparisons to draw")
    metric = _matrix(drawn[0][1], metric)[1]
    ncols = ncols or min(5, len(drawn))
    nrows = -(-len(drawn) // ncols)
    starred = any(_significant(result, metric, level) is not None for _, result in drawn)
    # a line more for the stars' caption, which would otherwise push the axis labels out
    figure, axes = _new_axes(path, (3.6 * ncols, 3.4 * nrows + 0.3 * starred), nrows=nrows, ncols=ncols,
                             squeeze=False)
    values = np.concatenate([np.ravel(_matrix(r, metric)[0].values) for _, r in drawn]).astype(float)
    low, high = default_range(metric, values)
    options = {"vmin": low, "vmax": high, **options}
    for index, (ax, (label, result)) in enumerate(zip(axes.flat, drawn)):
        title = titles[index] if titles else _comparison_name(result, label)
        heatmap(result, ax=ax, metric=metric, title=title, colorbar=False, **options)
        image = ax.images[0]
    for ax in list(axes.flat)[len(drawn):]:
        ax.set_visible(False)
    figure.colorbar(image, ax=axes, label=_plain(_label(metric)))
    if starred:
        correction = _correction([result for _, result in drawn], metric)
        floor = any(_floor_z(result, metric) is not None for _, result in drawn)
        figure.suptitle(f"* corrected p < {level:g} ({correction})" + (f"; {FLOOR_NOTE}" if floor else ""),
                        fontsize="small")
    if path is not None:
        _save(figure, path)
    return figure


def _comparison_name(result, label):
    """``"<a> vs <b>"`` from a single result's network names, else its label."""
    network_a, network_b = network_names(result)
    return f"{_plain(network_a)} vs {_plain(network_b)}" if network_a else _plain(label)


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
    drawn = panels(results, comparisons)
    if not drawn:
        raise ValueError("no comparisons to draw")
    metric = _matrix(drawn[0][1], metric)[1]
    if ax is None:
        _, ax = _new_axes(path, (6.5, 3.8))
    positions, lines = {}, []  # layers along x in order of first appearance, as a categorical axis has them
    for index, (label, result) in enumerate(drawn):
        matrix = _matrix(result, metric)[0]
        shared = [str(v) for v in matrix["layer_a"].values if v in set(matrix["layer_b"].values)]
        values = [float(matrix.sel(layer_a=name, layer_b=name)) for name in shared]
        name = labels[index] if labels else _comparison_name(result, label)
        lines += ax.plot([positions.setdefault(layer, len(positions)) for layer in shared], values, "o-", label=name)
    ax.set_xticks(range(len(positions)), [_plain(layer) for layer in positions], rotation=90)
    ax.set_xlabel("layer (of a against the same layer of b)")
    ax.set_ylabel(_plain(_matrix(drawn[0][1], metric)[0].attrs.get("long_name") or _label(metric)))
    # labels given with their lines: legend() would leave out those starting with "_"
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    if path is not None:
        _save(ax.figure, path)
    return ax
