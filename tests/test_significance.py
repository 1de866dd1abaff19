"""Significance: exact permutation moments, p-values, corrections, permutations and
bootstrap intervals, held against exhaustive enumeration, Monte Carlo permutations of
the dense formulas and the dense formulas on resampled data."""

import dataclasses
import itertools
import warnings

import numpy as np
import pytest

import rv2dist
from rv2dist.core import resampling
from rv2dist.core import significance

from reference import dense_metric, permuted_values, resampled_metric

TESTED = ("rv2", "rv", "cka", "cka_debiased")


def _pair(rng, n, p, q, offset=1.0):
    """Two related layers with positive means (the uncentred case is then far from 0)."""
    x = np.abs(rng.standard_normal((n, p))) + offset
    y = x[:, : min(p, q)] @ rng.standard_normal((min(p, q), q)) + rng.standard_normal((n, q)) + offset
    return x, y


def _moments(x, y, metric, center, route):
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=[metric], center=center, route=route, tests=True)
    value, z = float(result[metric][0, 0]), float(result[f"{metric}_z"][0, 0])
    return value, z


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("route", ["feature", "gram"])
def test_exact_moments_match_every_permutation(rng, center, route):
    """n = 7: all 5,040 permutations enumerated; the z-score must be exact."""
    n = 7
    x, y = _pair(rng, n, 3, 2)
    orders = [list(o) for o in itertools.permutations(range(n))]
    for metric in TESTED:
        values = permuted_values(x, y, metric, center, orders)
        value, z = _moments(x, y, metric, center, route)
        assert value == pytest.approx(dense_metric(x, y, metric, center), abs=1e-12)
        expected = (value - values.mean()) / values.std()
        assert z == pytest.approx(expected, rel=1e-9), (metric, center, route)


def test_exact_moments_of_a_network_against_itself(rng):
    """One network against itself: cell (l, m) permutes a second copy of layer m."""
    n = 6
    layers = {"a": np.abs(rng.standard_normal((n, 2))) + 1, "b": rng.standard_normal((n, 4)), "c": rng.standard_normal((n, 1))}
    orders = [list(o) for o in itertools.permutations(range(n))]
    result = rv2dist.similarity(layers, metric=list(TESTED), tests=True)
    for metric in TESTED:
        for i, first in enumerate(layers):
            for j, second in enumerate(layers):
                values = permuted_values(layers[first], layers[second], metric, True, orders)
                expected = (float(result[metric][i, j]) - values.mean()) / values.std()
                assert float(result[f"{metric}_z"][i, j]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n, p, q", [(20, 3, 2), (20, 300, 200), (100, 5, 3), (100, 800, 400), (1000, 6, 4)])
@pytest.mark.parametrize("center", [True, False])
def test_exact_moments_agree_with_monte_carlo_permutations(n, p, q, center):
    """5,000 random permutations of the dense formulas: the exact mean and variance lie
    within 3 Monte Carlo standard errors of their estimates."""
    rng = np.random.default_rng(n * 7 + p)
    x, y = _pair(rng, n, p, q)
    orders = [rng.permutation(n) for _ in range(5000)]
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=list(TESTED), center=center, tests=True)
    for metric in TESTED:
        if metric.startswith("cka") and not center:
            continue
        values = permuted_values(x, y, metric, center, orders)
        mean, variance = significance.null_moments(metric, _statistics(x, y, metric, center))
        mean, variance = mean[0, 1], variance[0, 1]
        k = len(values)
        assert abs(values.mean() - mean) <= 3 * values.std() / np.sqrt(k), (metric, n, p)
        spread = np.sqrt(np.var((values - values.mean()) ** 2) / k)
        assert abs(values.var() - variance) <= 3 * spread, (metric, n, p)
        assert np.isfinite(float(result[f"{metric}_z"][0, 0]))


def _statistics(x, y, metric, center):
    """The engine's sufficient statistics of the pair (x, y)."""
    import dask

    from rv2dist.core.measures import MEASURES
    from rv2dist.engine.statistics_graph import build_statistics
    from rv2dist.engine.taskgraph import TaskGraph
    from rv2dist.planning.planner import make_plan

    plan = make_plan(len(x), [("x", x.shape[1])], [("y", y.shape[1])], memory_budget=2**30)
    graph = TaskGraph("reference")
    key = build_statistics(graph, [[x], [y]], plan, MEASURES[metric].centred(center))
    return dask.get(graph.tasks, key)


def test_engine_permutations_are_the_seeded_permutations(rng):
    """m_p_permutation counts exactly the dense values of the same seeded permutations."""
    n, count, seed = 40, 60, 11
    x, y = _pair(rng, n, 4, 3)
    for route in ("feature", "gram"):
        result = rv2dist.similarity({"x": x}, {"y": y}, metric=list(TESTED), permutations=count, seed=seed,
                                    route=route)
        orders = [resampling.permutation(seed, k, n) for k in range(count)]
        for metric in TESTED:
            values = permuted_values(x, y, metric, True, orders)
            observed = dense_metric(x, y, metric)
            expected = (1 + np.sum(values >= observed - 1e-12)) / (count + 1)
            assert float(result[f"{metric}_p_permutation"][0, 0]) == expected, (metric, route)


@pytest.mark.parametrize("center", [True, False])
def test_bootstrap_replicates_are_the_metrics_of_resampled_data(rng, center):
    """With B = 1 and confidence near 1 the interval is the replicate itself: the
    metric of the data set that repeats observation i counts[i] times."""
    n, seed = 30, 5
    x, y = _pair(rng, n, 3, 4)
    counts = resampling.poisson_weights(seed, 0, n, 1)[:, 0]
    metrics = [m for m in TESTED + ("rv2_null",) if center or not m.startswith("cka")]
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=metrics, center=center, bootstrap=1, seed=seed)
    for metric in metrics:
        expected = resampled_metric(x, y, metric, center, counts)
        assert float(result[f"{metric}_low"][0, 0]) == pytest.approx(expected, rel=1e-10), metric
        assert float(result[f"{metric}_high"][0, 0]) == pytest.approx(expected, rel=1e-10), metric


def test_bootstrap_counts_do_not_depend_on_the_chunking():
    whole = resampling.poisson_weights(9, 0, 10_000, 3)
    parts = np.concatenate([resampling.poisson_weights(9, start, min(10_000, start + 3001), 3)
                            for start in range(0, 10_000, 3001)])
    np.testing.assert_array_equal(whole, parts)
    assert 0.95 < whole.mean() < 1.05 and whole.min() == 0


def test_bootstrap_intervals_are_the_same_for_any_chunking(rng):
    import dask.array as da

    n = 9000
    x, y = _pair(rng, n, 6, 5)
    results = []
    for rows in (n, 2500, 1024):
        result = rv2dist.similarity({"x": da.from_array(x, chunks=(rows, -1))}, {"y": da.from_array(y, chunks=(rows, -1))},
                                    metric=["rv2", "cka"], bootstrap=4, seed=2)
        results.append(result)
    for other in results[1:]:
        for name in ("rv2_low", "rv2_high", "cka_low", "cka_high"):
            np.testing.assert_allclose(other[name].values, results[0][name].values, rtol=1e-12, atol=1e-14)
    assert (results[0]["rv2_low"] <= results[0]["rv2"]).all() and (results[0]["rv2"] <= results[0]["rv2_high"]).all()


def test_corrections_against_their_definitions():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2])
    holm = significance.correct(p, "holm")
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 0.04, 0.09, 0.09 (monotone), 0.2
    np.testing.assert_allclose(holm, [0.04, 0.09, 0.09, np.nan, 0.2])
    bh = significance.correct(p, "bh")
    # m p / rank: 0.04, 0.06, 0.0533, 0.2, then the running minimum from the top
    np.testing.assert_allclose(bh, [0.04, 0.0533333333, 0.0533333333, np.nan, 0.2])
    with pytest.raises(ValueError, match="'bonferoni'"):
        significance.correct(p, "bonferoni")


def test_self_job_corrects_over_distinct_pairs_once(rng):
    layers = {name: rng.standard_normal((50, 3)) for name in "abcd"}
    result = rv2dist.similarity(layers, metric="rv2", tests=True, correction="bh")
    corrected = result["rv2_p_corrected"].values
    assert np.isnan(np.diag(corrected)).all()
    np.testing.assert_array_equal(corrected, corrected.T)
    upper = np.triu_indices(4, 1)
    np.testing.assert_allclose(corrected[upper], significance.correct(result["rv2_p"].values[upper], "bh"))
    assert result.attrs["correction"] == "bh"


def test_single_metric_with_tests_is_a_labelled_dataset(rng):
    x, y = _pair(rng, 60, 3, 3)
    result = rv2dist.similarity({"x": x}, {"y": y}, tests=True)
    assert set(result.data_vars) == {"rv2", "rv2_z", "rv2_p", "rv2_p_corrected"}
    assert "normal approximation" in result["rv2_p"].attrs["description"]
    assert result["rv2_p"].attrs["long_name"] == "p-value of rv2"
    assert 0 <= float(result["rv2_p"][0, 0]) <= 1


def test_unrelated_layers_are_not_significant_related_ones_are(rng):
    n = 400
    x = rng.standard_normal((n, 5))
    related = x @ rng.standard_normal((5, 4)) + 2 * rng.standard_normal((n, 4))
    unrelated = rng.standard_normal((n, 4))
    result = rv2dist.similarity({"x": x}, {"related": related, "unrelated": unrelated}, metric=list(TESTED),
                                tests=True, permutations=99)
    for metric in TESTED:
        assert float(result[f"{metric}_p"][0, 0]) < 1e-6
        assert float(result[f"{metric}_p"][0, 1]) > 0.001
        assert float(result[f"{metric}_p_permutation"][0, 0]) == 0.01


@pytest.mark.parametrize("option, value, message", [
    ("permutations", 0, "permutations must be a positive integer, not 0"),
    ("permutations", 2.5, "permutations must be a positive integer, not 2.5"),
    ("bootstrap", -3, "bootstrap must be a positive integer, not -3"),
    ("bootstrap", True, "bootstrap must be a positive integer, not True"),
    ("seed", "7", "seed must be a non-negative integer, not '7'"),
    ("seed", -1, "seed must be a non-negative integer, not -1"),
    ("confidence", 95, "confidence must be a number between 0 and 1, not 95"),
    ("correction", "fdr", "unknown correction 'fdr'"),
    # a graph of a trillion passes would exhaust memory long before it ran
    ("permutations", 10**12, "permutations=1,000,000,000,000 is more than rv2dist runs (at most 100,000"),
    ("bootstrap", 100_001, "bootstrap=100,001 is more than rv2dist runs"),
])
def test_bad_resampling_options_name_the_value(rng, option, value, message):
    x = rng.standard_normal((20, 2))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        rv2dist.similarity({"x": x}, {"y": x}, tests=True, **{option: value})


def test_too_few_observations_for_the_moments(rng):
    x = rng.standard_normal((3, 2))
    with pytest.raises(ValueError, match="at least 4 observations.*n = 3"):
        rv2dist.similarity({"x": x}, {"y": x}, tests=True)
    assert rv2dist.similarity({"x": x}, {"y": x}).shape == (1, 1)  # without tests, fine


@pytest.mark.parametrize("route, budget, group", [("feature", 8 * 5 * 5 * 6, 0), ("gram", 16_000, 1),
                                                   ("gram", 16_000, 2), ("gram", 16_000, 3)])
@pytest.mark.parametrize("self_job", [True, False])
def test_cubed_traces_from_split_products_match_dense(rng, self_job, route, budget, group):
    """tr(A^3) of each centred layer: on the feature route tr((X_c'X_c)^3) assembled from
    layers split across column blocks and products; on the gram route summed over the
    triples of blocks of its four row blocks (one, two and three distinct blocks each),
    its tiles taken alone or assembled into blocks of two or three (with the lower
    half's tiles transposed), the last block shorter."""
    import dask

    from rv2dist.engine.statistics_graph import build_statistics
    from rv2dist.engine.taskgraph import TaskGraph
    from rv2dist.planning.planner import make_plan

    n = 60
    layers = [rng.standard_normal((n, w)) + 2 for w in (7, 3, 5)]
    widths = [(str(i), x.shape[1]) for i, x in enumerate(layers)]
    plan = (make_plan(n, widths, memory_budget=budget, route=route) if self_job
            else make_plan(n, widths[:1], widths[1:], memory_budget=budget, route=route))
    assert len(plan.blocks) > 2 if route == "feature" else len(plan.row_chunks) == 4
    edges = np.cumsum((0,) + plan.row_chunks)
    chunks = [[x[start:stop] for start, stop in zip(edges[:-1], edges[1:])] for x in layers]
    graph = TaskGraph("cubed")
    tested = dataclasses.replace(plan, tests=True, cost=dataclasses.replace(plan.cost, cube_group=group))
    stats = dask.get(graph.tasks, build_statistics(graph, chunks, tested, True))
    for x, value in zip(layers, stats.trace_cubed):
        c = (x - x.mean(axis=0)) @ (x - x.mean(axis=0)).T
        assert value == pytest.approx(np.trace(c @ c @ c), rel=1e-10)
    # a job without tests skips the cubes: tr(A^3) stays unknown
    untested = TaskGraph("untested")
    assert np.isnan(dask.get(untested.tasks, build_statistics(untested, chunks, plan, True)).trace_cubed).all()


@pytest.mark.parametrize("self_job", [False, True])
def test_p_values_do_not_depend_on_the_route(rng, self_job):
    """The gram route's skewness (from triples of its tiles, four row blocks here) is
    the feature route's: the same p-values to rounding, for layers narrower and wider
    than n, one or two networks (the gram route used to give normal p-values)."""
    n = 60
    x = rng.standard_normal((n, 40))
    x[:, 0] *= 4
    layers = {"x": x, "near": 0.3 * x[:, :1] @ np.ones((1, 90)) + rng.standard_normal((n, 90)),
              "far": rng.standard_normal((n, 7))}
    sides = (layers,) if self_job else ({"x": x}, {"near": layers["near"], "far": layers["far"]})
    options = dict(metric=list(TESTED), tests=True)
    feature = rv2dist.similarity(*sides, route="feature", **options)
    gram = rv2dist.similarity(*sides, route="gram", memory_budget=120_000, **options)
    assert rv2dist.plan(*sides, route="gram", memory_budget=120_000, **options).row_chunks == (15,) * 4
    assert (feature.attrs["route"], gram.attrs["route"]) == ("feature", "gram")
    for metric in TESTED:
        np.testing.assert_allclose(gram[f"{metric}_p"].values, feature[f"{metric}_p"].values, rtol=1e-9)
        assert np.nanmin(gram[f"{metric}_p"].values) < 0.01


def test_gram_route_p_values_agree_with_permutation_p_values():
    """The issue's case: n = 60 and two 384-unit layers, each with one dominant
    direction, on the gram route (the planner's choice for p > n).  Against 5,000
    permutations of the dense formulas the p-value is within 3 Monte Carlo standard
    errors + 0.002; the normal approximation it replaces is 20 times too small."""
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    n = 60
    x = rng.standard_normal((n, 384))
    x[:, 0] *= 12
    y = rng.standard_normal((n, 384))
    y[:, 0] = 12 * (0.15 * x[:, 0] / 4 + rng.standard_normal(n))
    orders = [rng.permutation(n) for _ in range(5000)]
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "cka"], tests=True)
    assert result.attrs["route"] == "gram"
    for metric in ("rv2", "cka"):
        values = permuted_values(x, y, metric, True, orders)
        exact = (1 + np.sum(values >= dense_metric(x, y, metric) - 1e-12)) / (len(values) + 1)
        tolerance = 3 * np.sqrt(exact * (1 - exact) / len(values)) + 0.002
        assert abs(float(result[f"{metric}_p"][0, 0]) - exact) <= tolerance, (metric, exact)
        assert float(norm.sf(result[f"{metric}_z"][0, 0])) < exact / 10


@pytest.mark.parametrize("n, p, q, strength", [
    (20, 3, 2, 0.15), (100, 5, 3, 0.0), (100, 5, 3, 0.15), (200, 1, 1, 0.15), (500, 2, 30, 0.0), (1000, 6, 4, 0.0),
    (20, 300, 200, 0.15),
])
def test_p_values_agree_with_permutation_p_values(n, p, q, strength):
    """The Pearson III p-value against 5,000 permutations of the dense formulas: within
    3 Monte Carlo standard errors plus 0.01 where the permutation p <= 0.5; above, plus
    0.03 (n >= 100) or 0.08 (n = 20, where the large-n skewness overstates the exact
    one) — the tolerance docs/statistics.md states."""
    rng = np.random.default_rng(1000 * n + p)
    x = rng.standard_normal((n, p))
    x[:, 0] *= 3
    y = strength * x[:, :1] @ np.ones((1, q)) + rng.standard_normal((n, q))
    orders = [rng.permutation(n) for _ in range(5000)]
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=list(TESTED), tests=True)
    for metric in TESTED:
        values = permuted_values(x, y, metric, True, orders)
        permutation_p = (1 + np.sum(values >= dense_metric(x, y, metric) - 1e-12)) / (len(values) + 1)
        slack = 0.01 if permutation_p <= 0.5 else 0.03 if n >= 100 else 0.08
        tolerance = 3 * np.sqrt(permutation_p * (1 - permutation_p) / len(values)) + slack
        assert abs(float(result[f"{metric}_p"][0, 0]) - permutation_p) <= tolerance, (metric, permutation_p)


def test_p_values_stop_at_the_floor_and_figures_show_z(rng, tmp_path):
    """n = 2,000: a related pair's p-value lies far below float64's range.  It is
    reported as the floor 1e-300 (not 0), says so, and the heatmap, job grid and report
    page show the cell's z-score in place of its star."""
    import matplotlib

    matplotlib.use("Agg")
    from test_service import _chromium, _dump_dom

    from rv2dist.plot import heatmap, job_grid
    from rv2dist.service.jobfile import Comparison
    from rv2dist.service.page import comparison_entry, page_html

    n = 2000
    x = rng.standard_normal((n, 5))
    layers = {"x": x, "mixed": x @ rng.standard_normal((5, 4)) + 0.5 * rng.standard_normal((n, 4)),
              "noise": rng.standard_normal((n, 3))}
    result = rv2dist.similarity(layers, metric=["cka", "rv2"], tests=True)
    p, z = result["cka_p"], result["cka_z"]
    assert float(p.sel(layer_a="x", layer_b="mixed")) == significance.P_FLOOR == p.attrs["floor"]
    assert float(z.sel(layer_a="x", layer_b="mixed")) > 100
    assert np.nanmin(p.values) == significance.P_FLOOR and np.nanmin(result["cka_p_corrected"].values) > 0
    assert "a p-value of 1e-300 means p <= 1e-300" in p.attrs["description"]
    assert float(p.sel(layer_a="x", layer_b="noise")) > 1e-3  # unrelated: untouched

    ax = heatmap(result, metric="cka")
    assert ax.get_title().endswith("* corrected p < 0.05 (holm)\nnumbers: z where p <= 1e-300")
    shown = sorted(t.get_text() for t in ax.texts)
    assert shown == [f"{float(z.sel(layer_a='x', layer_b='mixed')):.0f}"] * 2
    figure = job_grid([result, result], metric="cka")
    assert figure._suptitle.get_text() == "* corrected p < 0.05 (holm); numbers: z where p <= 1e-300"

    entry = comparison_entry(Comparison("a", "a"), {"a": "net"}, "done", result=result, metrics=["cka", "rv2"])
    assert entry["floor_z"]["cka"][0][1] == round(float(z.sel(layer_a="x", layer_b="mixed")), 1)
    assert entry["floor_z"]["cka"][0][2] is None and entry["significance"].endswith("z where p <= 1e-300")
    if _chromium():
        entry.update(name="a__a", plan="")
        page = tmp_path / "report.html"
        page.write_text(page_html({"jobs": [{"id": "j", "name": "j", "status": "finished",
                                             "comparisons_done": 1, "comparisons_total": 1,
                                             "comparisons": [entry], "provenance": {}}]}))
        dom = _dump_dom(page.as_uri(), tmp_path / "chromium")
        assert dom.count('class="star floor"') == 2 and "z where p &lt;= 1e-300" in dom


# --- where people look: command line, job files, heatmaps, the page ----------------------

def _related_stores(rng, folder, n=300):
    from conftest import relu_network

    a = relu_network(rng, n, (4, 6))
    b = {"near": a["l1"] @ rng.standard_normal((6, 5)) + 0.5 * rng.standard_normal((n, 5)),
         "noise": rng.standard_normal((n, 3))}
    rv2dist.write_activations(folder / "a.zarr", a, network="alpha")
    rv2dist.write_activations(folder / "b.zarr", b, network="beta")


def test_cli_compare_with_tests_and_bootstrap_and_starred_plot(rng, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from conftest import run_cli

    from rv2dist.io.results import read_result
    from rv2dist.plot import heatmap

    _related_stores(rng, tmp_path)
    done = run_cli("compare", tmp_path / "a.zarr", tmp_path / "b.zarr", "--metric", "rv2", "cka", "--tests",
                    "--correction", "bh", "--bootstrap", "6", "--seed", "4", "--out", tmp_path / "r.nc",
                    "--plot", tmp_path / "r.png")
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path / "r.nc")
    want = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric=["rv2", "cka"], tests=True,
                              correction="bh", bootstrap=6, seed=4)
    for name in want.data_vars:
        np.testing.assert_allclose(result[name].values, want[name].values, rtol=1e-12, atol=1e-300)
    assert result.attrs["correction"] == "bh" and result.attrs["bootstrap"] == 6
    assert result["rv2_p_corrected"].sel(layer_b="near").max() < 0.05  # related layers: starred
    assert result["rv2_p_corrected"].sel(layer_b="noise").min() > 0.05
    ax = heatmap(result, metric="rv2")
    stars = [t for t in ax.texts if t.get_text() == "*"]
    assert len(stars) == int((result["rv2_p_corrected"] < 0.05).sum()) == 2
    assert "corrected p < 0.05 (bh)" in ax.get_title()
    assert not [t for t in heatmap(result, metric="rv2", significance=None).texts if t.get_text() == "*"]
    assert run_cli("plot", tmp_path / "r.nc", "--out", tmp_path / "p.png", "--significance", "0.01").returncode == 0

    for args, named in [(("--permutations", "0"), "permutations must be a positive integer, not 0"),
                        (("--bootstrap", "-2"), "bootstrap must be a positive integer, not -2"),
                        (("--confidence", "95"), "confidence must be a number between 0 and 1, not 95.0")]:
        bad = run_cli("compare", tmp_path / "a.zarr", "--out", tmp_path / "x.nc", *args)
        assert bad.returncode == 2 and named in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    bad = run_cli("plot", tmp_path / "r.nc", "--out", tmp_path / "q.png", "--significance", "5")
    assert bad.returncode == 2 and "--significance" in bad.stderr
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "q.png").exists()


def test_job_with_tests_stars_the_report_and_recomputes_when_options_change(rng, tmp_path):
    import io
    import os

    from distributed import Client, LocalCluster
    from test_service import _chromium, _dump_dom

    from rv2dist.service import jobfile, runner

    _related_stores(rng, tmp_path)
    job_file = tmp_path / "job.toml"

    def write(extra):
        job_file.write_text(f'plots = false\nmetrics = ["rv2"]\n{extra}\n[networks]\na = "a.zarr"\nb = "b.zarr"\n'
                            '[[compare]]\npairs = [["a", "b"]]\n')

    for extra, named in [("permutations = 0", "permutations must be a positive integer, not 0"),
                         ("bootstrap = true", "bootstrap must be a positive integer, not True"),
                         ("seed = 1.5", "seed must be a non-negative integer, not 1.5"),
                         ('correction = "fdr"', "unknown correction 'fdr'")]:
        write(extra)
        with pytest.raises(jobfile.JobError, match=named):
            jobfile.load_job(job_file)
    job_file.write_text('metrics = ["rv2", "rv2"]\n[networks]\na = "a.zarr"\nb = "b.zarr"\n'
                        '[[compare]]\npairs = [["a", "b"]]\n')
    with pytest.raises(jobfile.JobError, match=f"{job_file}: metric 'rv2' is asked for more than once"):
        jobfile.load_job(job_file)
    write("tests = true\nbootstrap = 3")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=open(os.devnull, "w"))
        result = rv2dist.open_results(tmp_path / "results")
        assert {"rv2_p_corrected", "rv2_low", "rv2_high"} <= set(result.data_vars)
        write("tests = true\nbootstrap = 4")
        lines = io.StringIO()
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=lines)
        assert "recompute a__b" in lines.getvalue() and "bootstrap" in lines.getvalue()
    if _chromium():
        report = _dump_dom((tmp_path / "results" / "report.html").as_uri(), tmp_path / "chromium")
        assert report.count('class="star"') == 2 and "* corrected p &lt; 0.05 (holm)" in report


def test_bootstrap_and_permutations_are_the_same_on_one_or_two_workers(rng):
    from distributed import Client, LocalCluster

    from conftest import shared_scheduler

    x, y = _pair(rng, 3000, 5, 4)
    runs = []
    # one worker process, then the shared cluster's two (one thread each)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as one, \
            Client(one) as on_one, Client(shared_scheduler()) as on_two:
        for client in (on_one, on_two):
            runs.append(rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "cka"], bootstrap=5, permutations=9,
                                           seed=8, client=client))
    for name in runs[0].data_vars:
        np.testing.assert_allclose(runs[1][name].values, runs[0][name].values, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("confidence, fewest", [(0.95, 41), (0.9, 21), (0.99, 201), (0.5, 5)])
def test_too_few_replicates_for_the_interval_warn(rng, confidence, fewest):
    """Below ``fewest`` replicates the interval's ends rest on the extreme replicates
    (lie beyond the second smallest and second largest); from it on they do not."""
    x, y = rng.standard_normal((30, 2)), rng.standard_normal((30, 3))
    for count in (fewest - 1, fewest):
        replicates = rng.standard_normal((count, 1))
        low, high = significance.percentile_interval(list(replicates), confidence)
        ordered = np.sort(replicates[:, 0])
        extremes = low[0] < ordered[1] or high[0] > ordered[-2]
        assert extremes == (count < fewest)
    with pytest.warns(rv2dist.FewReplicatesWarning, match=f"fewer than {fewest} replicates"):
        rv2dist.similarity({"x": x}, {"y": y}, bootstrap=fewest - 1, confidence=confidence, compute=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rv2dist.FewReplicatesWarning)
        rv2dist.similarity({"x": x}, {"y": y}, bootstrap=fewest, confidence=confidence, compute=False)


def test_tests_need_a_measure_that_has_them(rng):
    """tests=True with only measures without exact tests would add nothing: refused,
    naming them; with one that has them, that one is tested and the others are not."""
    a, b = {"x": rng.standard_normal((30, 3))}, {"y": rng.standard_normal((30, 2))}
    for call in (rv2dist.similarity, rv2dist.plan):
        with pytest.raises(ValueError, match=r"none of the metrics asked for \(cca, rv2_null\) has them: "
                                             r"permutations=K"):
            call(a, b, metric=["cca", "rv2_null"], tests=True)
    result = rv2dist.similarity(a, b, metric=["rv2", "cca"], tests=True)
    assert "rv2_z" in result and "cca_z" not in result
