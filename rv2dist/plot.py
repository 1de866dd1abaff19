"""Heatmaps in the style of the seed study: layers of A down, layers of B across."""

from __future__ import annotations


def heatmap(result, path, *, metric=None, title=None):
    """Draw one metric of a result as a heatmap and save it (PNG, SVG or PDF by suffix).

    Parameters
    ----------
    result : xarray.Dataset or xarray.DataArray
        Dims ``("layer_a", "layer_b")``.
    path : str or Path
        Output file; its suffix picks the format.
    metric : str, optional
        Variable to draw from a Dataset; default its first.
    title : str, optional
        Default: ``"<network a> vs <network b>: <metric>"`` from the attrs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if hasattr(result, "data_vars"):
        metric = metric or next(iter(result.data_vars))
        if metric not in result.data_vars:
            raise ValueError(f"the result holds no metric {metric!r}; it has {', '.join(result.data_vars)}")
        attrs = dict(result.attrs)
        result = result[metric]
    else:
        attrs = dict(result.attrs)
        metric = metric or result.name
    values = np.asarray(result.values, dtype=float)
    rows = [str(v) for v in result["layer_a"].values]
    cols = [str(v) for v in result["layer_b"].values]
    network_a = attrs.get("network_a", "a")
    network_b = attrs.get("network_b", network_a)
    low = min(0.0, float(np.nanmin(values))) if np.isfinite(values).any() else 0.0
    figure, axes = plt.subplots(figsize=(1.0 + 0.45 * len(cols), 1.0 + 0.42 * len(rows)), constrained_layout=True)
    image = axes.imshow(values, vmin=low, vmax=1.0, cmap="viridis", origin="upper")
    axes.set_xticks(range(len(cols)), cols, rotation=90)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel(network_b)
    axes.set_ylabel(network_a)
    axes.set_title(title or f"{network_a} vs {network_b}: {metric.upper()}")
    figure.colorbar(image, ax=axes, label=metric)
    figure.savefig(path)
    plt.close(figure)
