"""Paired differences between cells: kept bootstrap replicates held against the dense
formulas on resampled data, the pairing of separate jobs, the interval's coverage and
the p-value's calibration by simulation, and the replicates through files, jobs and the
command line."""

import warnings

import numpy as np
import pytest
from scipy import stats

import rv2dist
from conftest import run_cli
from rv2dist.core import resampling
from rv2dist.io.results import read_result, write_result
from rv2dist.differences import UnverifiedPairingWarning

from reference import resampled_metric

METRICS = ["rv2", "cka", "cka_debiased"]


def _layers(rng, n, strengths=(1.0, 0.3)):
    """A reference layer x and layers y_k = strength_k * x W + noise."""
    x = rng.standard_normal((n, 3))
    w = rng.standard_normal((3, 3))
    return x, [s * x @ w + rng.standard_normal((n, 3)) for s in strengths]


def test_kept_replicates_are_the_metrics_of_resampled_data(rng):
    """Replicate r of every cell is the metric of the data set that repeats observation
    i counts[i, r] times (counts drawn from the seed and i); the interval is theirs."""
    n, count, seed = 40, 3, 7
    x, (y1, y2) = _layers(rng, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.FewReplicatesWarning)
        result = rv2dist.similarity({"y1": y1, "y2": y2}, {"x": x}, metric=METRICS, bootstrap=count, seed=seed,
                                    keep_replicates=True)
    counts = resampling.poisson_weights(seed, 0, n, count)
    for metric in METRICS:
        kept = result[f"{metric}_replicates"]
        assert kept.dims == ("replicate", "layer_a", "layer_b") and kept.shape == (count, 2, 1)
        for r in range(count):
            for name, y in (("y1", y1), ("y2", y2)):
                expected = resampled_metric(y, x, metric, True, counts[:, r])
                assert float(kept.sel(replicate=r, layer_a=name, layer_b="x")) == pytest.approx(expected, rel=1e-10)
        low, high = np.quantile(kept.values, [0.025, 0.975], axis=0)
        np.testing.assert_allclose(result[f"{metric}_low"].values, low, rtol=1e-12)
        np.testing.assert_allclose(result[f"{metric}_high"].values, high, rtol=1e-12)


def test_two_calls_share_the_weights_and_pair_like_one(rng):
    """The same cell pair from one job (two rows against one column, and two columns
    against one row) and from two separate jobs of other chunkings: the same
    replicates, so the same difference, interval and p-value."""
    import dask.array as da

    n = 600
    x, (y1, y2) = _layers(rng, n)
    options = dict(metric=METRICS, bootstrap=60, seed=3, keep_replicates=True)
    rows = rv2dist.similarity({"y1": y1, "y2": y2}, {"x": x}, **options)
    columns = rv2dist.similarity({"x": x}, {"y1": y1, "y2": y2}, **options)
    first = rv2dist.similarity({"y1": y1}, {"x": x}, **options)
    second = rv2dist.similarity({"y2": da.from_array(y2, chunks=(250, -1))}, {"x": da.from_array(x, chunks=(250, -1))},
                                **options)
    for metric in METRICS:
        within = rv2dist.compare_cells(rows, metric, ("y1", "x"), ("y2", "x"))
        across = rv2dist.compare_cells(columns, metric, ("x", "y1"), ("x", "y2"))
        with pytest.warns(UnverifiedPairingWarning, match="no observation ids"):
            apart = rv2dist.compare_results(first, second, metric, ("y1", "x"), ("y2", "x"))
        for other in (across, apart):
            for field in ("estimate", "low", "high", "p"):
                assert getattr(other, field) == pytest.approx(getattr(within, field), rel=1e-9, abs=1e-12), field
        assert within.replicates == 60 and within.low <= within.estimate <= within.high
        # an interval of every replicate's difference: the same replicates by hand
        by_hand = (rows[f"{metric}_replicates"].sel(layer_a="y1") - rows[f"{metric}_replicates"].sel(layer_a="y2"))
        assert within.low == pytest.approx(np.quantile(by_hand.values, 0.025), rel=1e-12)
        assert within.estimate == pytest.approx(float(rows[metric][0, 0] - rows[metric][1, 0]), rel=1e-12)
    assert rv2dist.compare_cells(rows, "cka", ("y1", "x"), ("y1", "x")).p == 1.0  # a cell against itself


def test_paired_differences_cover_and_are_calibrated():
    """40 data sets whose two cells have the same population value (y1 and y2
    exchangeable given x): the 95 % intervals of the difference cover 0 in at least 85 %
    (binomial sd 3.4 % at 95 %) and the p-values are uniform (Kolmogorov-Smirnov);
    10 with a large difference: every one detected.  (Ten data sets per job share its
    seed's bootstrap counts; benchmarks/significance.py checks the coverage of nonzero
    differences over 400 data sets.)"""
    rng = np.random.default_rng(5)
    n, w = 100, np.array([[1.0, 0.3], [0.2, 0.8]])
    found = {"cka": [], "rv2": []}
    for job in range(5):
        a, b = {}, {}
        for d in range(10):
            x = rng.standard_normal((n, 2))
            b[f"x{d}"] = x
            a[f"y1_{d}"] = x @ w + rng.standard_normal((n, 2))
            a[f"y2_{d}"] = (x @ w if job < 4 else 0.0) + rng.standard_normal((n, 2))
        result = rv2dist.similarity(a, b, metric=["cka", "rv2"], bootstrap=99, seed=job, keep_replicates=True)
        for metric, differences in found.items():
            differences += [rv2dist.compare_cells(result, metric, (f"y1_{d}", f"x{d}"), (f"y2_{d}", f"x{d}"))
                            for d in range(10)]
    for metric, differences in found.items():
        null, far = differences[:40], differences[40:]
        assert np.mean([f.low <= 0 <= f.high for f in null]) >= 0.85, metric
        assert stats.kstest([f.p for f in null], "uniform").pvalue > 0.01, metric
        assert all(f.p <= 0.02 and f.low > 0 for f in far), metric


def test_pairing_is_checked_by_observation_ids(rng, tmp_path):
    """Stores carry ids: results of the same ids pair without a warning, also after a
    round trip through .nc; other ids, seeds or counts are refused with what differs."""
    n = 300
    x, (y1, y2) = _layers(rng, n)
    ids = np.arange(n) * 3
    rv2dist.write_activations(tmp_path / "x.zarr", {"x": x}, obs=ids)
    rv2dist.write_activations(tmp_path / "y.zarr", {"y1": y1, "y2": y2}, obs=ids)
    order = rng.permutation(n)
    rv2dist.write_activations(tmp_path / "shuffled.zarr", {"y2": y2[order]}, obs=ids[order])
    rv2dist.write_activations(tmp_path / "x_shuffled.zarr", {"x": x[order]}, obs=ids[order])
    options = dict(metric=["cka"], bootstrap=50, seed=1, keep_replicates=True)
    joint = rv2dist.similarity(tmp_path / "y.zarr", tmp_path / "x.zarr", **options)
    first = rv2dist.similarity(tmp_path / "y.zarr", tmp_path / "x.zarr", layers=(["y1"], ["x"]), **options)
    write_result(first, tmp_path / "first.nc")
    first = read_result(tmp_path / "first.nc")
    # y2 in another order, aligned to x's: the weights fall on x's order, as in `joint`
    second = rv2dist.similarity(tmp_path / "x.zarr", tmp_path / "shuffled.zarr", align_obs=True, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedPairingWarning)
        apart = rv2dist.compare_results(first, second, "cka", ("y1", "x"), ("x", "y2"))
    within = rv2dist.compare_cells(joint, "cka", ("y1", "x"), ("y2", "x"))
    assert (apart.low, apart.high, apart.p) == pytest.approx((within.low, within.high, within.p), rel=1e-9)

    other_order = rv2dist.similarity(tmp_path / "x_shuffled.zarr", tmp_path / "shuffled.zarr", **options)
    with pytest.raises(ValueError, match="observation ids differ"):
        rv2dist.compare_results(first, other_order, "cka", ("y1", "x"), ("x", "y2"))
    other_seed = rv2dist.similarity(tmp_path / "x.zarr", tmp_path / "y.zarr", **{**options, "seed": 2})
    with pytest.raises(ValueError, match=r"seeds differ \(1 against 2\)"):
        rv2dist.compare_results(first, other_seed, "cka", ("y1", "x"), ("x", "y2"))
    fewer = rv2dist.similarity(tmp_path / "x.zarr", tmp_path / "y.zarr", **{**options, "bootstrap": 45})
    with pytest.raises(ValueError, match="50 and 45 replicates"):
        rv2dist.compare_results(first, fewer, "cka", ("y1", "x"), ("x", "y2"))


def test_unusable_requests_name_what_is_missing(rng):
    x, (y1, _) = _layers(rng, 50)
    plain = rv2dist.similarity({"y1": y1}, {"x": x}, metric=["cka"], bootstrap=45)
    with pytest.raises(ValueError, match="holds no bootstrap replicates of 'cka'.*keep_replicates=True"):
        rv2dist.compare_cells(plain, "cka", ("y1", "x"), ("y1", "x"))
    kept = rv2dist.similarity({"y1": y1}, {"x": x}, metric=["cka"], bootstrap=45, keep_replicates=True)
    with pytest.raises(ValueError, match="holds no bootstrap replicates of 'rv2'"):
        rv2dist.compare_cells(kept, "rv2", ("y1", "x"), ("y1", "x"))
    with pytest.raises(ValueError, match="has no layer_b 'y9'; it has x"):
        rv2dist.compare_cells(kept, "cka", ("y1", "x"), ("y1", "y9"))
    with pytest.raises(ValueError, match="keep_replicates=True keeps bootstrap replicates: give bootstrap=B"):
        rv2dist.similarity({"y1": y1}, {"x": x}, keep_replicates=True)
    with pytest.raises(TypeError, match="keep_replicates must be True or False, not 'yes'"):
        rv2dist.similarity({"y1": y1}, {"x": x}, bootstrap=45, keep_replicates="yes")


def test_command_line_and_job_keep_replicates(rng, tmp_path):
    """--keep-replicates writes the replicates; without --bootstrap it is refused with
    exit status 2 and nothing written.  A job's combined result keeps them per
    comparison, with what pairs them."""
    import os

    from distributed import Client, LocalCluster

    from rv2dist.service import jobfile, runner

    n = 200
    x, (y1, y2) = _layers(rng, n)
    # z's wide layer sends its comparison down the gram route (the bootstrap runs on the feature route)
    for name, layers in (("x", {"x": x}), ("y", {"y1": y1}), ("z", {"y2": y2, "wide": rng.standard_normal((n, 600))})):
        rv2dist.write_activations(tmp_path / f"{name}.zarr", layers, network=name)
    args = ["compare", str(tmp_path / "y.zarr"), str(tmp_path / "x.zarr"), "--metric", "cka", "--bootstrap", "50",
            "--seed", "4"]
    done = run_cli(*args, "--keep-replicates", "--out", tmp_path / "r.nc")
    assert done.returncode == 0, done.stderr
    assert read_result(tmp_path / "r.nc")["cka_replicates"].shape == (50, 1, 1)
    refused = run_cli(*args[:-4], "--keep-replicates", "--out", tmp_path / "bad.nc")
    assert refused.returncode == 2
    assert "keep_replicates=True keeps bootstrap replicates" in refused.stderr
    assert not (tmp_path / "bad.nc").exists()

    (tmp_path / "job.toml").write_text('plots = false\nmetrics = ["cka"]\nbootstrap = 50\nseed = 4\n'
                                       'keep_replicates = true\n[networks]\nx = "x.zarr"\ny = "y.zarr"\nz = "z.zarr"\n'
                                       '[[compare]]\npairs = [["y", "x"], ["z", "x"]]\n')
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runner.run_job(jobfile.load_job(tmp_path / "job.toml"), client, progress=False, stream=open(os.devnull, "w"))
    combined = rv2dist.open_results(tmp_path / "results")
    assert combined.attrs["seed"] == 4 and combined.attrs["keep_replicates"] == 1
    # the routes used, per comparison and in all (not the job's "auto")
    assert list(combined["route"].values) == ["feature", "gram"] and combined.attrs["route"] == "feature,gram"
    assert combined.attrs["route_requested"] == "auto"
    from_job = rv2dist.compare_results(combined.sel(comparison="y__x"), combined.sel(comparison="z__x"), "cka",
                                       ("y1", "x"), ("y2", "x"))
    joint = rv2dist.similarity({"y1": y1, "y2": y2}, {"x": x}, metric="cka", bootstrap=50, seed=4,
                               keep_replicates=True)
    direct = rv2dist.compare_cells(joint, "cka", ("y1", "x"), ("y2", "x"))
    assert (from_job.low, from_job.high, from_job.p) == pytest.approx((direct.low, direct.high, direct.p), rel=1e-9)
    # said with the networks' names; a p-value at the least the replicates resolve says so
    assert str(from_job).startswith("cka(y1 of y, x of x) - cka(y2 of z, x of x) = ")
    assert from_job.p == 2 / 51 and "p <= 0.0392, the least 50 replicates resolve" in str(from_job)
