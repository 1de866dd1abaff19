"""Figures of results in the style of the seed study: heatmaps (layers of A down,
layers of B across), grids of them for a job, and the similarity of corresponding layers.

Every function draws on Matplotlib axes it is given (or makes its own) and returns
them, so panels compose into a paper's figure; ``path=`` also saves (PNG at 200 dpi,
SVG or PDF by the suffix).  Matplotlib is imported only here, when drawing.
"""

from __future__ import annotations

import numpy as np

from .significance import MARK_LEVEL

DPI = 200
# metrics bounded above by 1 and near 0 for unrelated layers share one scale, so that
# panels compare; rv2_null (values near 1e-8) and negative values get their own
BOUNDED = ("rv2", "rv", "cka", "cka_debiased")


def _matrix(result, metric):
    """(DataArray of one metric, attrs with the network names, metric name)."""
    if hasattr(result, "data_vars"):
        metric = metric or next(iter(result.data_vars))
        if metric not in result.data_vars:
            raise ValueError(f"the result holds no metric {metric!r}; it has {', '.join(result.data_vars)}")
        attrs, matrix = dict(result.attrs), result[metric]
    else:
        attrs, matrix = dict(result.attrs), result
        metric = metric or str(result.name)
    if matrix.dims != ("layer_a", "layer_b"):
        raise ValueError(f"a heatmap draws one (layer_a, layer_b) matrix; this one has dims {matrix.dims} "
                         "(pick one comparison with .sel(comparison=...), or draw all with job_grid)")
    for side in ("network_a", "network_b"):
        if side in matrix.coords and matrix[side].ndim == 0:
            attrs[side] = str(matrix[side].values)
    return matrix, attrs, metric


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
    """The colour scale of ``metric``: [min(0, lowest), 1] for the bounded metrics,
    the data's own range otherwise."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    if metric in BOUNDED:
        return min(0.0, float(finite.min())), max(1.0, float(finite.max()))
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def heatmap(result, path=None, *, ax=None, metric=None, cmap="viridis", vmin=None, vmax=None, annotate=False,
            title=None, colorbar=True, names=None, significance=MARK_LEVEL):
    """Draw one metric of a result as a heatmap.

    Parameters
    ----------
    result : xarray.Dataset or xarray.DataArray
        Dims ``("layer_a", "layer_b")`` (one comparison).
    path : str or Path, optional
        Also save the figure here (PNG at 200 dpi, SVG or PDF by the suffix) and close it.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (a panel of a larger figure); default a new figure.
    metric : str, optional
        Variable to draw from a Dataset; default its first.
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
        None: no marks.

    Returns
    -------
    matplotlib.axes.Axes
    """
    matrix, attrs, metric = _matrix(result, metric)
    values = np.asarray(matrix.values, dtype=float)
    network_a, network_b = names or (attrs.get("network_a"), attrs.get("network_b", attrs.get("network_a")))
    low, high = default_range(metric, values)
    if ax is None:
        rows, cols = values.shape
        _, ax = _new_axes(path, (1.6 + 0.45 * cols, 1.2 + 0.42 * rows))
    image = ax.imshow(values, vmin=low if vmin is None else vmin, vmax=high if vmax is None else vmax,
                      cmap=cmap, origin="upper")
    ax.set_xticks(range(values.shape[1]), [str(v) for v in matrix["layer_b"].values], rotation=90)
    ax.set_yticks(range(values.shape[0]), [str(v) for v in matrix["layer_a"].values])
    ax.set_xlabel(f"{network_b} (layer)" if network_b else "layer of network b")
    ax.set_ylabel(f"{network_a} (layer)" if network_a else "layer of network a")
    label = metric.upper() if metric in BOUNDED or metric == "rv" else metric
    marked = _significant(result, metric, significance)
    if title is None:
        title = f"{network_a} vs {network_b}: {label}" if network_a else label
        if marked is not None:
            correction = result.attrs.get("correction", "corrected")
            title += f"\n* corrected p < {significance:g} ({correction})"
    ax.set_title(title)
    if annotate:
        _annotate(ax, image, values, annotate if isinstance(annotate, str) else ".2f")
    if marked is not None:
        _mark(ax, image, values, marked, offset=0.3 if annotate else 0.0)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    if path is not None:
        _save(ax.figure, path)
    return ax


def _significant(result, metric, level):
    """Cells whose corrected p-value is below ``level``; None when nothing is to be
    marked (no level, or a result without tests)."""
    name = f"{metric}_p_corrected"
    if level is None or not hasattr(result, "data_vars") or name not in result.data_vars:
        return None
    return np.nan_to_num(np.asarray(result[name].values, dtype=float), nan=1.0) < level


def _text_colour(image, value):
    red, green, blue, _ = image.cmap(image.norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


def _mark(ax, image, values, marked, offset):
    """A star in each marked cell (in its corner when the cell also holds its value)."""
    for i, j in zip(*np.nonzero(marked)):
        ax.text(j + offset, i - offset, "*", ha="center", va="center", fontsize=8 if offset else 10,
                color=_text_colour(image, values[i, j]))


def _annotate(ax, image, values, fmt):
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, "—" if not np.isfinite(value) else format(value, fmt), ha="center", va="center",
                fontsize=6, color=_text_colour(image, value))


def _comparisons(results, comparisons):
    """``[(label, one-comparison result)]`` from a combined result (``comparison``
    dimension, as :func:`rv2dist.open_results` gives) or a sequence of results."""
    if hasattr(results, "dims") and "comparison" in results.dims:
        chosen = list(results["comparison"].values) if comparisons is None else list(comparisons)
        out = []
        for name in chosen:
            one = results.sel(comparison=name)
            # a new attrs dict: a selection shares the caller's
            one.attrs = {**one.attrs, "network_a": str(one["network_a"].values),
                         "network_b": str(one["network_b"].values)}
            out.append((str(name), one.drop_vars(["comparison", "network_a", "network_b"])))
        return out
    results = list(results)
    labels = comparisons or [f"{r.attrs.get('network_a', i)} vs {r.attrs.get('network_b', '')}"
                             for i, r in enumerate(results)]
    return list(zip(labels, results))


def job_grid(results, comparisons=None, *, metric="rv2", ncols=None, titles=None, path=None, **options):
    """One heatmap per comparison on a shared colour scale and bar (the seed study's
    Figures 1, 2 and 4).

    Parameters
    ----------
    results : xarray.Dataset or sequence of results
        A job's combined result (:func:`rv2dist.open_results`) or single results.
    comparisons : list of str, optional
        Which comparisons, in order (default all).
    metric : str
        The metric drawn.
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
    panels = _comparisons(results, comparisons)
    if not panels:
        raise ValueError("no comparisons to draw")
    ncols = ncols or min(5, len(panels))
    nrows = -(-len(panels) // ncols)
    figure, axes = _new_axes(path, (3.6 * ncols, 3.4 * nrows), nrows=nrows, ncols=ncols, squeeze=False)
    values = np.concatenate([np.ravel(_matrix(r, metric)[0].values) for _, r in panels]).astype(float)
    low, high = default_range(metric, values)
    options = {"vmin": low, "vmax": high, **options}
    for index, (ax, (label, result)) in enumerate(zip(axes.flat, panels)):
        network_a, network_b = result.attrs.get("network_a"), result.attrs.get("network_b")
        title = titles[index] if titles else (f"{network_a} vs {network_b}" if network_a else label)
        heatmap(result, ax=ax, metric=metric, title=title, colorbar=False, **options)
        image = ax.images[0]
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.colorbar(image, ax=axes, label=metric.upper() if metric in BOUNDED else metric)
    level = options.get("significance", MARK_LEVEL)
    if any(_significant(result, metric, level) is not None for _, result in panels):
        correction = panels[0][1].attrs.get("correction", "corrected")
        figure.suptitle(f"* corrected p < {level:g} ({correction})", fontsize="small")
    if path is not None:
        _save(figure, path)
    return figure


def diagonal(results, comparisons=None, *, metric="rv2", ax=None, labels=None, path=None):
    """The similarity of corresponding layers (the diagonal of each comparison) against
    depth, one line per comparison (the seed study's Figures 3 and 4 in one panel).

    Parameters
    ----------
    results : xarray.Dataset or sequence of results
        As :func:`job_grid`; rows and columns are matched by layer name.
    comparisons : list of str, optional
        Which comparisons (default all).
    metric : str
        The metric drawn.
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
    panels = _comparisons(results, comparisons)
    if ax is None:
        _, ax = _new_axes(path, (6.5, 3.8))
    for index, (label, result) in enumerate(panels):
        matrix = _matrix(result, metric)[0]
        shared = [str(v) for v in matrix["layer_a"].values if v in set(matrix["layer_b"].values)]
        values = [float(matrix.sel(layer_a=name, layer_b=name)) for name in shared]
        network_a, network_b = result.attrs.get("network_a"), result.attrs.get("network_b")
        name = labels[index] if labels else (f"{network_a} vs {network_b}" if network_a else label)
        ax.plot(shared, values, "o-", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{metric.upper() if metric in BOUNDED else metric} of corresponding layers")
    ax.tick_params(axis="x", rotation=90)
    ax.legend(fontsize=7)
    if path is not None:
        _save(ax.figure, path)
    return ax
