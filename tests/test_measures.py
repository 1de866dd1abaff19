"""The second-moment measures through the engine: ``similarity(metric=...)`` against the
dense float64 references of tests/reference_measures.py, on several chunkings, routes,
workers and stores; their options, degenerate cells, significance and plan."""

import warnings

import dask.array as da
import numpy as np
import pytest

import reference_measures as ref
import rv2dist
from conftest import relu_network

SECOND_MOMENT = ["cca", "cca_r2", "svcca", "pwcca", "procrustes", "procrustes_distance", "shape_metric", "linreg",
                 "ridge"]
REFERENCES = {
    "cca": ref.cca, "cca_r2": ref.cca_r2, "svcca": ref.svcca, "pwcca": ref.pwcca, "procrustes": ref.procrustes,
    "procrustes_distance": ref.procrustes_distance, "linreg": ref.linreg,
    "shape_metric": lambda x, y: ref.netrep_shape(x, y, 1.0), "ridge": lambda x, y: ref.ridge(x, y, 0.1),
}


def _dense(a, b, name, **options):
    reference = {"shape_metric": lambda x, y: ref.netrep_shape(x, y, options.get("alpha", 1.0)),
                 "ridge": lambda x, y: ref.ridge(x, y, options.get("ridge_lambda", 0.1)),
                 "svcca": lambda x, y: ref.svcca(x, y, options.get("svcca_variance", 0.99))}.get(name, REFERENCES[name])
    return np.array([[reference(np.asarray(x, float), np.asarray(y, float)) for y in b.values()] for x in a.values()])


def _close(got, want, rel=1e-10):
    np.testing.assert_allclose(got, want, rtol=rel, atol=1e-12)


@pytest.fixture
def networks(rng):
    """Two ReLU networks with large column means (mean far above the spread), a layer
    wide next to n (45 of 60 observations) and narrow ones."""
    a = {name: x + 40.0 for name, x in relu_network(rng, 60, (3, 12, 45)).items()}
    b = {name: x * 3.0 + 100.0 for name, x in relu_network(rng, 60, (9, 5)).items()}
    return a, b


@pytest.mark.parametrize("chunks", [None, 60, 17])
def test_every_measure_equals_the_dense_reference(networks, chunks):
    a, b = networks
    if chunks is not None:
        a = {k: da.from_array(v, chunks=(chunks, -1)) for k, v in a.items()}
        b = {k: da.from_array(v, chunks=(chunks, -1)) for k, v in b.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        result = rv2dist.similarity(a, b, metric=SECOND_MOMENT)
    dense_a = {k: np.asarray(v) for k, v in a.items()}
    dense_b = {k: np.asarray(v) for k, v in b.items()}
    for name in SECOND_MOMENT:
        _close(result[name].values, _dense(dense_a, dense_b, name))
    # ranks as the dense bases count them (squared singular values above 1e-8 of the largest)
    assert result["rank_a"].values.tolist() == [ref.basis(x).shape[1] for x in dense_a.values()] == [3, 12, 44]
    assert result["rank_b"].values.tolist() == [ref.basis(y).shape[1] for y in dense_b.values()] == [9, 5]


def test_blocks_centred_by_their_own_column_sums(networks, monkeypatch):
    """With fewer than feature.SHIFT_ROWS rows the centring shift is the mean of all of
    them and the column sums vanish; from the first 3 rows they do not, and each block
    must be centred by its own layers' sums."""
    from rv2dist.core import feature

    monkeypatch.setattr(feature, "SHIFT_ROWS", 3)
    a, b = networks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        crossed = rv2dist.similarity(a, b, metric=["cca", "procrustes", "linreg"])
        itself = rv2dist.similarity(b, metric=["procrustes", "linreg"])
    for name in ("cca", "procrustes", "linreg"):
        _close(crossed[name].values, _dense(a, b, name))
    for name in ("procrustes", "linreg"):
        _close(itself[name].values, _dense(b, b, name), rel=1e-9)


def test_options_reach_their_measures(networks):
    """(Without the 45-unit layer, whose smallest eigenvalue, 4e-9 of its largest, lies
    below the cut-off: netrep clips at an absolute 1e-7 instead, docs/measures.md.)"""
    a, b = networks
    a = {name: a[name] for name in ("l0", "l1")}
    options = dict(alpha=0.4, ridge_lambda=2.0, svcca_variance=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        result = rv2dist.similarity(a, b, metric=["shape_metric", "ridge", "svcca"], **options)
    for name in ("shape_metric", "ridge", "svcca"):
        _close(result[name].values, _dense(a, b, name, **options), rel=1e-9)


def test_a_network_against_itself(networks):
    """Similarities exactly 1 and distances exactly 0 on the diagonal; symmetric
    measures symmetric; regression the other way round below the diagonal; PWCCA
    symmetric between layers of different ranks."""
    a, _ = networks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        result = rv2dist.similarity(a, metric=SECOND_MOMENT)
    for name in SECOND_MOMENT:
        values = result[name].values
        expected = 0.0 if name in ("procrustes_distance", "shape_metric") else 1.0
        if name == "ridge":  # a penalty shrinks a layer's prediction of itself
            _close(values, _dense(a, a, name), rel=1e-9)
        else:
            assert np.diag(values).tolist() == [expected] * 3, name
        off = ~np.eye(3, dtype=bool)
        _close(values[off], _dense(a, a, name)[off], rel=1e-9)
        if name not in ("linreg", "ridge", "pwcca"):
            assert np.array_equal(values, values.T), name
    # pwcca: the layer of fewer directions carries the weights either way round
    _close(result["pwcca"].values, result["pwcca"].values.T, rel=1e-12)
    assert not np.allclose(result["linreg"].values, result["linreg"].values.T)


def test_pwcca_weights_the_row_layer_of_equal_ranks_against_itself_too(rng):
    """Layers of equal rank: each cell's weights come from its row layer (docs/measures.md),
    so the matrix is not symmetric, in a job of a network against itself as against a copy."""
    latent = rng.standard_normal((80, 3))
    a = {name: latent @ rng.standard_normal((3, 4)) + rng.standard_normal((80, 4)) for name in ("u", "v")}
    itself = rv2dist.similarity(a, metric="pwcca").values
    copied = rv2dist.similarity(a, {name: x.copy() for name, x in a.items()}, metric="pwcca").values
    _close(itself, _dense(a, a, "pwcca"))
    _close(copied, itself)
    assert abs(itself[0, 1] - itself[1, 0]) > 1e-3


def test_one_and_two_worker_processes_and_stores_agree(networks, tmp_path):
    from distributed import Client, LocalCluster

    a, b = networks
    rv2dist.write_activations(tmp_path / "a.zarr", a, chunk_bytes=45 * 8 * 20)
    rv2dist.write_activations(tmp_path / "b.zarr", b, chunk_bytes=9 * 8 * 25)
    metric = ["cca", "procrustes", "linreg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        local = rv2dist.similarity(a, b, metric=metric)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            stored = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric=metric, client=client)
            one = rv2dist.similarity(a, b, metric=metric, client=client, memory_budget=2**20)
    for name in metric:
        _close(stored[name].values, local[name].values, rel=1e-10)
        _close(one[name].values, local[name].values, rel=1e-10)


def test_bad_options_name_their_values(networks):
    a, b = networks
    for option, value, named in (("alpha", 1.5, "alpha must be in [0, 1], got 1.5"),
                                 ("ridge_lambda", -1.0, "ridge_lambda must be a finite number >= 0, got -1.0"),
                                 ("svcca_variance", 0.0, "svcca_variance must be in (0, 1], got 0.0"),
                                 ("rcond", 1.0, "rcond must be in [0, 1), got 1.0")):
        with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            rv2dist.similarity(a, b, metric="cca", **{option: value})


def test_the_gram_route_gives_no_blocks_and_the_plan_says_so(networks):
    a, b = networks
    with pytest.raises(rv2dist.PlanError, match="gram route sums no p x p blocks"):
        rv2dist.similarity(a, b, metric=["cca", "rv2"], route="gram")
    plan = rv2dist.plan(a, b, metric=["cca"])
    assert plan.route == "feature" and "second moments" in repr(plan)
    wide = {"w": np.random.default_rng(0).standard_normal((30, 3000))}
    with pytest.raises(rv2dist.PlanError, match="widest layer is 'w' .* pool or select layers"):
        rv2dist.plan(wide, wide, metric="procrustes", memory_budget="20MB")
    # the RV family and RSA are still given there
    assert rv2dist.plan(wide, wide, metric=["rv2", "rsa"], memory_budget="20MB").route == "gram"


def test_degenerate_cells_are_counted_and_warned_of(rng):
    """Two layers whose ranks together pass n - 1 share directions whatever the data:
    canonical correlations of 1 (Kornblith et al. 2019)."""
    a = {"wide": rng.standard_normal((20, 15))}
    b = {"wide": rng.standard_normal((20, 12)), "narrow": rng.standard_normal((20, 2))}
    with pytest.warns(rv2dist.DegenerateCellWarning, match="wide x wide"):
        result = rv2dist.similarity(a, b, metric=["cca", "procrustes"])
    assert result["forced_ones"].values.tolist() == [[8, 0]]
    assert result.attrs["degenerate_cells"] == ["wide x wide"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rv2dist.similarity(a, b, metric="procrustes")  # no whitening: nothing to warn of


def test_an_interval_that_leaves_out_its_estimate_is_said(tmp_path):
    """At n = 50 for 10 + 8 units, duplicated observations act as fewer and raise cca
    (its bias from n): the percentile interval lies above the estimate, and is no
    confidence interval. A warning, the interval's attrs, `compare` and a job say so."""
    from conftest import run_cli
    from rv2dist.io.writer import write_activations

    g = np.random.default_rng(7)
    z = g.standard_normal((50, 2))
    a = {"x": z @ g.standard_normal((2, 10)) + g.standard_normal((50, 10))}
    b = {"y": z @ g.standard_normal((2, 8)) + g.standard_normal((50, 8))}
    with pytest.warns(rv2dist.ShiftedIntervalWarning, match=r"\(cca in 1 of 1 cells\): a resample's duplicated"):
        result = rv2dist.similarity(a, b, metric=["cca", "rv2"], bootstrap=41, seed=0)
    assert result["cca"].item() < result["cca_low"].item()
    assert result["cca_low"].attrs["estimate_outside"] == result["cca_high"].attrs["estimate_outside"] == 1
    assert "no confidence interval" in result["cca_low"].attrs["description"]
    assert result["rv2_low"].item() <= result["rv2"].item() <= result["rv2_high"].item()
    assert "estimate_outside" not in result["rv2_low"].attrs
    write_activations(tmp_path / "a.zarr", a)
    write_activations(tmp_path / "b.zarr", b)
    done = run_cli("-q", "compare", tmp_path / "a.zarr", tmp_path / "b.zarr", "--metric", "cca", "--bootstrap", "41",
                   "--out", tmp_path / "r.nc")
    assert done.returncode == 0 and "warning: estimates outside their own bootstrap intervals (cca" in done.stderr
    (tmp_path / "job.toml").write_text('metrics = ["cca"]\nbootstrap = 41\nplots = false\n[networks]\na = "a.zarr"\n'
                                       'b = "b.zarr"\n[[compare]]\nreference = "a"\n')
    done = run_cli("run", tmp_path / "job.toml", "--no-progress")
    assert done.returncode == 0 and "  note a__b: estimates outside their own bootstrap intervals (cca" in done.stdout


def test_bootstrap_replicates_and_permutations_of_a_block_measure(rng):
    """Every kept replicate is the measure of the data with each row repeated its
    Poisson count times; the permutation p-value counts the seeded permutations at
    least as extreme (a distance: as small)."""
    from rv2dist.core.resampling import permutation, poisson_weights

    x, y = relu_network(rng, 40, (4,))["l0"], relu_network(rng, 40, (3,))["l0"]
    result = rv2dist.similarity({"x": x}, {"y": y}, metric=["cca", "procrustes_distance"], bootstrap=41,
                                keep_replicates=True, permutations=19, seed=5)
    counts = poisson_weights(5, 0, 40, 41)
    for name in ("cca", "procrustes_distance"):
        want = [REFERENCES[name](np.repeat(x, c.astype(int), axis=0), np.repeat(y, c.astype(int), axis=0))
                for c in counts.T]
        _close(result[f"{name}_replicates"].values[:, 0, 0], want, rel=1e-8)
        observed = REFERENCES[name](x, y)
        permuted = [REFERENCES[name](x, y[permutation(5, k, 40)]) for k in range(19)]
        extreme = sum(p >= observed if name == "cca" else p <= observed for p in permuted)
        assert result[f"{name}_p_permutation"].values[0, 0] == pytest.approx((1 + extreme) / 20)
