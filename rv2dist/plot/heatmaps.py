"""One comparison's matrix as a heatmap, with its values, stars and z-scores in the cells."""

from __future__ import annotations

import numpy as np

from rv2dist.core.significance import FLOOR_NOTE, MARK_LEVEL
from rv2dist.io.results import network_names
from rv2dist.plot.data import (check_level, correction, default_cmap, default_range, metric_matrix, significant, single,
                               z_at_floor)
from rv2dist.plot.figures import new_axes, save
from rv2dist.plot.labels import measure_label, plain


def heatmap(result, path=None, *, ax=None, metric=None, cmap=None, vmin=None, vmax=None, annotate=False,
            title=None, colorbar=True, names=None, significance=MARK_LEVEL):
    """Draw one metric of a result as a heatmap.

    Parameters
    ----------
    result : xarray.Dataset, xarray.DataArray, numpy.ndarray, list or path
        One comparison: a result with dims ``("layer_a", "layer_b")``, a 2-D array, or
        a list, combined result, result file or results folder holding one (see
        :mod:`rv2dist.io.results`).
    path : str or Path, optional
        Also save the figure here (PNG at 200 dpi, SVG or PDF by the suffix) and close it.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes (a panel of a larger figure); default a new figure.
    metric : str, optional
        Variable to draw from a Dataset; default rv2 when it holds it, else its first.
    cmap : str or Colormap, optional
        Matplotlib colour map; default ``"viridis"``, reversed for distances.
    vmin, vmax : float, optional
        Colour scale; default per metric (see :func:`~rv2dist.plot.default_range`).
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
    check_level(significance)
    result = single(result)
    matrix, metric = metric_matrix(result, metric)
    values = np.asarray(matrix.values, dtype=float)
    network_a, network_b = names or network_names(result)
    low, high = default_range(metric, values)
    label = plain(measure_label(metric))
    marked = significant(result, metric, significance)
    shown_z = z_at_floor(result, metric) if marked is not None else None
    if title is None:
        title = _title(result, metric, network_a, network_b, significance if marked is not None else None,
                       shown_z is not None)
    title_size = None
    if ax is None:
        ax, title_size = _own_axes(path, values.shape, title)
    image = ax.imshow(values, vmin=low if vmin is None else vmin, vmax=high if vmax is None else vmax,
                      cmap=cmap or default_cmap(metric), origin="upper")
    ax.set_xticks(range(values.shape[1]), [plain(v) for v in matrix["layer_b"].values], rotation=90)
    ax.set_yticks(range(values.shape[0]), [plain(v) for v in matrix["layer_a"].values])
    ax.set_xlabel(f"{plain(network_b)} (layer)" if network_b else "layer of network b")
    ax.set_ylabel(f"{plain(network_a)} (layer)" if network_a else "layer of network a")
    ax.set_title(title, fontsize=title_size)
    if annotate:
        _annotate(ax, image, values, annotate if isinstance(annotate, str) else ".2f")
    if marked is not None:
        _mark(ax, image, values, marked, offset=0.3 if annotate else 0.0, shown_z=shown_z)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    if path is not None:
        save(ax.figure, path)
    return ax


def _title(result, metric, network_a, network_b, level, floor) -> str:
    """``"<a> vs <b>: <label>"``, with the caption of the marks at ``level`` (None: no
    marks) and, with ``floor``, of the z-scores shown in their place."""
    label = plain(measure_label(metric))
    title = f"{plain(network_a)} vs {plain(network_b)}: {label}" if network_a else label
    if level is not None:
        title += f"\n* corrected p < {level:g} ({correction([result], metric)})"
        title += f"\n{FLOOR_NOTE}" if floor else ""
    return title


def _own_axes(path, shape, title):
    """A figure sized to a matrix of ``shape``, and the size of its title: a title
    wider than a small matrix's figure in smaller type (a character is about 0.55 of
    the type's size wide; the image sits right of the middle)."""
    rows, cols = shape
    width = 1.6 + 0.45 * cols
    _, ax = new_axes(path, (width, 1.2 + 0.42 * rows))
    widest = max(len(line) for line in title.split("\n"))
    return ax, min(_font_size(), 72 * 0.8 * width / (0.55 * widest))


def _font_size():
    """Matplotlib's default title size in points."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=rcParams["axes.titlesize"]).get_size_in_points()


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
