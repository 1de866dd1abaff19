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


def test_a_figure_is_saved_whole_or_not_at_all(result, tmp_path, monkeypatch):
    """A crash while Matplotlib writes leaves the old figure (or none), never a part of
    one that a job's rerun would take for drawn; a path without a suffix gets PNG's."""
    from matplotlib.figure import Figure

    heatmap(result, tmp_path / "bare", metric="rv2")
    assert (tmp_path / "bare.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "m.png").write_bytes(b"the old figure")
    save = Figure.savefig

    def crash(figure, fname, **options):
        save(figure, fname, **options)
        with open(fname, "r+b") as handle:
            handle.truncate(100)  # a part of it written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", crash)
    for draw in (lambda path: heatmap(result, path), lambda path: job_grid([result, result], path=path),
                 lambda path: diagonal(result, path=path)):
        with pytest.raises(KeyboardInterrupt):
            draw(tmp_path / "m.png")
        with pytest.raises(KeyboardInterrupt):
            draw(tmp_path / "new.pdf")
    assert (tmp_path / "m.png").read_bytes() == b"the old figure" and not (tmp_path / "new.pdf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.png", "m.png"]  # no partial file left


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


# --- names are text; one result works everywhere --------------------------------------------

TEX = {"a$\\foo": 3, "$x^2$": 4, "_": 2, "b$": 3}


def _tex_result(rng, network_a="a$\\foo", network_b="b$"):
    layers = {name: rng.standard_normal((40, width)) for name, width in TEX.items()}
    result = rv2dist.similarity(layers, dict(layers), metric=["rv2", "cka"], tests=True)
    result.attrs.update(network_a=network_a, network_b=network_b)
    return result


def _shown(text):
    """What Matplotlib draws for ``text``: None when it would parse it as mathtext."""
    from matplotlib import cbook

    return None if cbook.is_math_text(text) else text.replace("\\$", "$")


def test_names_are_text_never_mathtext(rng, tmp_path):
    result = _tex_result(rng)
    ax = heatmap(result, tmp_path / "h.png")
    assert [_shown(t.get_text()) for t in ax.get_xticklabels()] == list(TEX)
    assert [_shown(t.get_text()) for t in ax.get_yticklabels()] == list(TEX)
    assert _shown(ax.get_title()).startswith("a$\\foo vs b$: RV2") and _shown(ax.get_xlabel()) == "b$ (layer)"
    figure = job_grid([result, _tex_result(rng, "_", "$x^2$")], path=tmp_path / "g.png")
    assert [_shown(ax.get_title()) for ax in figure.axes if ax.images] == ["a$\\foo vs b$", "_ vs $x^2$"]
    ax = diagonal([result, _tex_result(rng, "_", "$x^2$")], path=tmp_path / "d.png")
    assert [_shown(t.get_text()) for t in ax.get_xticklabels()] == list(TEX)
    # a label starting with "_" is no hidden one: each line is in the legend
    assert [_shown(t.get_text()) for t in ax.get_legend().get_texts()] == ["a$\\foo vs b$", "_ vs $x^2$"]
    for name in ("h", "g", "d"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_one_result_works_in_every_reader_and_figure(result, tmp_path):
    from rv2dist.io.results import write_result

    single = result.cka.assign_attrs(network_a="pretrained", network_b="random")  # as compare_models gives it
    figure, ax = plt.subplots()
    assert diagonal(single, ax=ax) is ax and ax.get_legend().get_texts()[0].get_text() == "pretrained vs random"
    assert ax.get_ylabel() == "linear CKA"
    grid = job_grid(single)
    assert [a.get_title() for a in grid.axes if a.images] == ["pretrained vs random"]
    plt.close("all")
    np.testing.assert_array_equal(heatmap(result.rv2.values, metric="rv2").images[0].get_array(), result.rv2.values)
    plt.close("all")
    path = tmp_path / "r.nc"
    write_result(result.assign_attrs(network_a="x", network_b="y"), path)
    for source in (path, [path, result], result, single, result.rv2.values):
        opened = rv2dist.open_results(source)
        assert next(iter(opened.data_vars.values())).dims == ("comparison", "layer_a", "layer_b")
    opened = rv2dist.open_results(path)
    assert list(opened.comparison.values) == ["x__y"] and opened.attrs["n_obs"] == 200
    np.testing.assert_array_equal(opened.cka.sel(comparison="x__y").values, result.cka.values)
    both = rv2dist.open_results([path, single])
    assert list(both.comparison.values) == ["x__y", "pretrained__random"]
    assert list(both.network_b.values) == ["y", "random"] and np.isnan(both.rv2.sel(comparison="pretrained__random")).all()
    heatmap(path, tmp_path / "from-file.png", metric="cka")
    assert "x vs y" in heatmap(both.sel(comparison=["x__y"]), metric="cka").get_title()
    plt.close("all")


def test_plot_arguments_are_checked(result):
    combined = _combined(result)
    with pytest.raises(ValueError, match="no comparison 'x__q' among the results; they hold x__y, x__z"):
        job_grid(combined, ["x__y", "x__q"])
    with pytest.raises(ValueError, match="significance must be a level between 0 and 1 .* not 2"):
        heatmap(result, significance=2)
    with pytest.raises(ValueError, match="significance must be a level"):
        job_grid(combined, significance=True)
    with pytest.raises(ValueError, match="holds rv2, not 'cka'"):
        heatmap(result.rv2, metric="cka")
    with pytest.raises(ValueError, match=r"one \(layers of a, layers of b\) matrix; this one has shape \(3,\)"):
        heatmap(np.ones(3))
    with pytest.raises(TypeError, match="expected a result .* got builtins.dict"):
        diagonal({"rv2": result.rv2})
    assert heatmap(result, significance=np.float32(0.01)) is not None
    plt.close("all")


def test_correction_and_long_names_in_figures(rng):
    a, b = relu_network(rng, 120, (4, 6)), relu_network(rng, 120, (4, 6))
    results = [rv2dist.similarity(a, b, metric=["rv2", "cka_debiased"], tests=True, correction="bh")
               .assign_attrs(network_a="a", network_b=name) for name in ("b", "c")]
    combined = rv2dist.open_results(results)
    figure = job_grid(combined, metric="rv2")
    assert figure.get_suptitle() == "* corrected p < 0.05 (bh)"
    figure.canvas.draw()  # the caption leaves the axis labels inside the figure
    assert all(ax.xaxis.label.get_window_extent().y0 >= 0 for ax in figure.axes if ax.images)
    assert heatmap(combined.sel(comparison="a__c"), metric="rv2").get_title().endswith("(bh)")
    ax = diagonal(combined, metric="cka_debiased")
    assert ax.get_ylabel() == "debiased linear CKA"
    assert heatmap(results[0], metric="cka_debiased").get_title().startswith("a vs b: debiased CKA\n")
    plt.close("all")


def test_a_job_draws_tex_names_and_a_rerun_draws_a_missing_figure(rng, tmp_path):
    import io

    from distributed import Client

    from rv2dist.service import jobfile, runner

    for name, network in (("a", "a$\\foo"), ("b", "b$")):
        # (a store's layer names hold no backslash: a path separator on Windows)
        rv2dist.write_activations(tmp_path / f"{name}.zarr", {layer: rng.standard_normal((50, 3))
                                                              for layer in ("$x^2$", "_", "b$", "a$b$c")},
                                  network=network)
    (tmp_path / "job.toml").write_text('[networks]\na = "a.zarr"\nb = "b.zarr"\n[[compare]]\nreference = "a"\n'
                                       '[[compare]]\nself = ["b"]\n')
    with Client(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as client:
        runner.run_job(jobfile.load_job(tmp_path / "job.toml"), client, progress=False, stream=io.StringIO())
        figures = sorted(p.name for p in (tmp_path / "results").glob("*.png"))
        assert figures == ["a__b.png", "b__b.png"]
        (tmp_path / "results" / "a__b.png").unlink()
        lines = io.StringIO()
        summary = runner.run_job(jobfile.load_job(tmp_path / "job.toml"), client, progress=False, stream=lines)
    assert summary.computed == () and (tmp_path / "results" / "a__b.png").stat().st_size > 0
    assert f"drew {tmp_path / 'results' / 'a__b.png'}, which was missing" in lines.getvalue()
    assert "b__b.png" not in lines.getvalue()


def test_an_error_without_words_is_named_by_its_type(monkeypatch, capsys):
    from rv2dist import cli
    from rv2dist.cli import app

    for raised, said in ((ValueError(), "ValueError"), (KeyError(""), "KeyError"),
                         (ValueError("\n  \nlayer 'x' is bad\n"), "layer 'x' is bad")):
        def fail(args, raised=raised):
            raise raised

        monkeypatch.setitem(app._VERBS, "info", fail)
        assert cli.main(["info", "nowhere.zarr"]) == 2
        assert capsys.readouterr().err == f"rv2dist info: error: {said}\n"


def test_rv2dist_plot_draws_a_results_folder_or_a_file(result, tmp_path, capsys):
    from rv2dist import cli
    from rv2dist.io.results import write_result

    folder = tmp_path / "results"
    folder.mkdir()
    write_result(_combined(result), folder / "combined.nc")
    write_result(rv2dist.open_results(result.assign_attrs(network_a="x", network_b="y")), tmp_path / "one.nc")
    for source, name in ((folder, "grid.png"), (tmp_path / "one.nc", "one.png")):
        assert cli.main(["plot", str(source), "--out", str(tmp_path / name), "--metric", "cka"]) == 0
        assert (tmp_path / name).stat().st_size > 0
    assert cli.main(["plot", str(tmp_path), "--out", str(tmp_path / "none.png")]) == 2
    assert "holds no combined result" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
