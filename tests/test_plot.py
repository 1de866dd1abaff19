"""Figures compose: heatmaps into given axes with their own scales, grids of a job's
comparisons and the diagonal lines, saved at 200 dpi or as SVG/PDF."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from PIL import Image  # noqa: E402

import rv2dist  # noqa: E402
from conftest import relu_network  # noqa: E402
from rv2dist.plot import diagonal, heatmap, job_grid  # noqa: E402


@pytest.fixture
def result(rng):
    a, b = relu_network(rng, 200, (4, 6, 8)), relu_network(rng, 200, (4, 6, 8))
    return rv2dist.similarity(a, b, metric=["rv2", "cka", "rv2_null"])


def _combined(result):
    parts = []
    for name, (na, nb) in {"x__y": ("x", "y"), "x__z": ("x", "z")}.items():
        scaled = result * (1.0 if name == "x__y" else 0.5)
        parts.append(scaled.expand_dims(comparison=[name]).assign_coords(
            network_a=("comparison", [na]), network_b=("comparison", [nb])))
    return xr.concat(parts, dim="comparison")


def test_heatmap_draws_into_given_axes_with_chosen_or_metric_scales(result):
    figure, axes = plt.subplots(1, 2)
    ax = heatmap(result, ax=axes[0], metric="cka", vmin=0.2, vmax=0.9, cmap="magma", annotate=True,
                 names=("net A", "net B"), colorbar=False)
    assert ax is axes[0] and ax.images[0].get_clim() == (0.2, 0.9) and ax.images[0].cmap.name == "magma"
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts[0] == format(float(result.cka.values[0, 0]), ".2f")
    assert ax.get_title() == "net A vs net B: CKA" and ax.get_xlabel() == "net B (layer)"
    null = heatmap(result, ax=axes[1], metric="rv2_null")  # values near 1e-3: their own range, not 0..1
    values = result.rv2_null.values
    assert null.images[0].get_clim() == (values.min(), values.max())
    plt.close(figure)
    unnamed = heatmap(result, metric="rv2")
    assert unnamed.get_title() == "RV2" and unnamed.get_ylabel() == "layer of network a"
    plt.close(unnamed.figure)


def test_heatmap_files_are_200_dpi_png_or_vector(result, tmp_path):
    heatmap(result, tmp_path / "m.png", metric="rv2")
    assert round(Image.open(tmp_path / "m.png").info["dpi"][0]) == 200
    heatmap(result, tmp_path / "m.svg", metric="rv2")
    assert "<svg" in (tmp_path / "m.svg").read_text()[:500]
    heatmap(result, tmp_path / "m.pdf", metric="rv2")
    assert (tmp_path / "m.pdf").read_bytes()[:4] == b"%PDF"


def test_job_grid_and_diagonal_from_a_combined_result(result, tmp_path):
    combined = _combined(result)
    attrs = dict(combined.attrs)
    with pytest.raises(ValueError, match="job_grid"):
        heatmap(combined)
    figure = job_grid(combined, metric="cka")
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["x vs y", "x vs z"]
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim()  # one shared scale
    plt.close(figure)
    ax = diagonal(combined, metric="rv2")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["x vs y", "x vs z"]
    np.testing.assert_allclose(lines[1].get_ydata(), 0.5 * np.diag(result.rv2.values))
    plt.close(ax.figure)
    assert combined.attrs == attrs  # drawing leaves the caller's result alone
    job_grid([result, result], titles=["first", "second"], path=tmp_path / "grid.png")
    assert round(Image.open(tmp_path / "grid.png").info["dpi"][0]) == 200
