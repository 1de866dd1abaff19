"""The second-moment measures as a user meets them: the command line, job files, the
report, compare_models and combined results — their options reach the values, are
recorded with them, and bad values are refused before any work, naming the value."""

import io
import json
import re

import numpy as np
import pytest

import rv2dist
from conftest import relu_network, run_cli
from rv2dist.io.results import read_result
from rv2dist.service import jobfile

OPTIONS = {"alpha": 0.3, "ridge_lambda": 2.0, "svcca_variance": 0.8}
METRICS = ["shape_metric", "ridge", "svcca", "linreg"]
BAD = [("alpha", 1.5, "alpha must be in [0, 1], got 1.5"), ("alpha", -0.1, "alpha must be in [0, 1], got -0.1"),
       ("ridge_lambda", -1.0, "ridge_lambda must be a finite number >= 0, got -1.0"),
       ("svcca_variance", 0.0, "svcca_variance must be in (0, 1], got 0.0"),
       ("svcca_variance", 1.5, "svcca_variance must be in (0, 1], got 1.5")]


@pytest.fixture
def stores(rng, tmp_path):
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 120, (3, 8)), network="first")
    rv2dist.write_activations(tmp_path / "b.zarr", relu_network(rng, 120, (5, 4)), network="second")
    return tmp_path / "a.zarr", tmp_path / "b.zarr"


def test_compare_takes_the_options_records_them_and_says_what_it_prints(stores, tmp_path):
    a, b = stores
    flags = [arg for key, value in OPTIONS.items() for arg in (f"--{key.replace('_', '-')}", value)]
    done = run_cli("compare", a, b, "--metric", *METRICS, *flags, "--out", tmp_path / "r.nc")
    assert done.returncode == 0, done.stderr
    assert "shape_metric: angular shape metric (alpha=0.3); rows: layers of first, columns: layers of second" \
        in done.stdout
    result = read_result(tmp_path / "r.nc")
    want = rv2dist.similarity(a, b, metric=METRICS, **OPTIONS)
    for name in METRICS:
        np.testing.assert_allclose(result[name].values, want[name].values, rtol=1e-12)
        assert result[name].attrs["rcond"] == 1e-8  # float64 stores: float64 products
    assert result.shape_metric.attrs["alpha"] == 0.3 and result.ridge.attrs["ridge_lambda"] == 2.0
    assert result.svcca.attrs["svcca_variance"] == 0.8 and "alpha" not in result.linreg.attrs
    # regression is not symmetric: its figure says which way it goes
    import matplotlib.pyplot as plt

    ax = rv2dist.plot.heatmap(result, metric="linreg")
    assert ax.get_title() == "first vs second: R² (columns from rows)"
    plt.close(ax.figure)


@pytest.mark.parametrize("option, value, message", BAD)
def test_compare_refuses_a_bad_option_naming_its_value(stores, tmp_path, option, value, message):
    a, b = stores
    out = tmp_path / "out"
    out.mkdir()
    done = run_cli("compare", a, b, "--metric", *METRICS, f"--{option.replace('_', '-')}", value,
                   "--out", out / "r.nc", "--plot", out / "r.png")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(out.iterdir()) == []


def _job(folder, **keys):
    lines = [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    lines += ["[networks]", 'first = "a.zarr"', 'second = "b.zarr"', "[[compare]]", 'reference = "first"']
    path = folder / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("option, value, message", BAD)
def test_a_job_file_refuses_a_bad_option_naming_file_and_key(tmp_path, option, value, message):
    path = _job(tmp_path, metrics=METRICS, **{option: value})
    with pytest.raises(jobfile.JobError, match=re.escape(f"{path}: {message}")):
        jobfile.load_job(path)


def test_a_job_records_its_options_in_results_and_report(stores, tmp_path):
    from distributed import Client, LocalCluster

    from rv2dist.service import runner

    job = jobfile.load_job(_job(tmp_path, metrics=["rv2", *METRICS], alpha=0.3, plots=False))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runner.run_job(job, client, progress=False, stream=io.StringIO())
    combined = rv2dist.open_results(tmp_path / "results")
    assert combined.shape_metric.attrs["alpha"] == 0.3 and combined.ridge.attrs["ridge_lambda"] == 0.1
    assert combined.attrs["alpha"] == 0.3 and "ridge_lambda" not in combined.attrs  # the job's own keys
    page = (tmp_path / "results" / "report.html").read_text()
    provenance = json.loads(page.split('"provenance": ')[1].split("}")[0] + "}")
    assert (provenance["alpha"], provenance["ridge_lambda"], provenance["svcca_variance"]) == (0.3, 0.1, 0.99)
    assert "rcond" not in provenance  # not set: it follows the products' dtype, recorded per result


def test_combined_results_keep_only_the_options_they_share(rng):
    layers = relu_network(rng, 60, (3, 5))
    low, high = (rv2dist.similarity(layers, metric=["shape_metric", "ridge"], alpha=alpha) for alpha in (0.2, 0.7))
    combined = rv2dist.open_results([low, high])
    assert "alpha" not in combined.shape_metric.attrs  # they differ: neither is said
    assert combined.shape_metric.attrs["long_name"] == "angular shape metric"
    assert combined.ridge.attrs["ridge_lambda"] == 0.1
    np.testing.assert_array_equal(combined.shape_metric.values[1], high.shape_metric.values)


def test_compare_models_checks_metric_and_options_before_recording():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)) for _ in range(2)]
    read = []

    def loader():
        for i in range(3):
            read.append(i)
            yield torch.randn(20, 5)

    cases = [(dict(metric="procrustez"), ValueError, "unknown metric 'procrustez'"),
             *((dict(metric=METRICS, **{option: value}), ValueError, message) for option, value, message in BAD),
             (dict(alpah=0.5), TypeError, "alpah"), (dict(bootstrap=0), ValueError, "bootstrap")]
    for options, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            rv2dist.compare_models(*models, loader(), ["0", "2"], names=("a", "b"), progress=False, **options)
        assert read == [], options
    result = rv2dist.compare_models(*models, loader(), ["0", "2"], names=("a", "b"), progress=False,
                                    metric=["shape_metric"], alpha=0.5)
    assert read == [0, 1, 2] and result.shape_metric.attrs["alpha"] == 0.5


def test_an_option_no_metric_reads_is_said_once_and_changes_nothing(stores, tmp_path):
    a, b = stores
    with pytest.warns(rv2dist.UnreadOptionWarning) as caught:
        result = rv2dist.similarity(a, b, metric=["cka", "rv2"], ridge_lambda=2.0, alpha=0.5)
    said = sorted(str(w.message) for w in caught)
    assert said == ["alpha=0.5 changes nothing: no metric asked for (cka, rv2) reads it (shape_metric would)",
                    "ridge_lambda=2.0 changes nothing: no metric asked for (cka, rv2) reads it (ridge would)"]
    assert caught[0].filename == __file__  # the caller's line
    np.testing.assert_array_equal(result.cka.values, rv2dist.similarity(a, b, metric=["cka", "rv2"]).cka.values)
    with pytest.warns(rv2dist.UnreadOptionWarning, match=r"^rcond=1e-06 changes nothing: .*\(cca, cca_r2, svcca"):
        rv2dist.plan(a, b, metric="cka", rcond=1e-6)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read by a metric asked for, or left at its default: nothing said
        rv2dist.similarity(a, b, metric=["cka", "ridge"], ridge_lambda=2.0, rcond=1e-6)
        rv2dist.similarity(a, b, metric="cka", ridge_lambda=0.1)
    done = run_cli("compare", a, b, "--metric", "cka", "--ridge-lambda", "2", "--out", tmp_path / "r.nc")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("rv2dist compare: warning: ridge_lambda=2.0 changes nothing") == 1, done.stderr


def test_tests_of_only_untested_measures_are_refused_before_a_cluster_starts(stores, tmp_path, monkeypatch):
    from rv2dist.cli import compare

    def no_cluster(args):
        raise AssertionError("a cluster was asked for")

    monkeypatch.setattr(compare, "connect", no_cluster)
    a, b = stores
    done = run_cli("compare", a, b, "--metric", "cca", "procrustes", "--tests", "--out", tmp_path / "r.nc")
    assert done.returncode == 2, done.stderr
    assert "none of the metrics asked for (cca, procrustes) has them" in done.stderr
    assert not (tmp_path / "r.nc").exists()
