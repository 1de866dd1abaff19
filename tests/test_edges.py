"""At the edges: a network against itself with permutations, undefined bootstrap
replicates, odd option values, ids that identify nothing, torch tensors that are no
plain arrays (each a right answer or a clear error); and outputs that stay readable
with long names."""

import warnings

import numpy as np
import pytest
import xarray as xr

import rv2dist
from conftest import relu_network
from rv2dist.core import resampling

from reference import resampled_metric


@pytest.fixture
def net(rng):
    return relu_network(rng, 60, (3, 5, 4))


@pytest.fixture
def threads_cluster(monkeypatch):
    """The command line's embedded cluster as threads in this process (fast to start),
    with a dashboard."""
    from distributed import Client

    from rv2dist.service import cluster

    monkeypatch.setattr(cluster, "connect", lambda **_: Client(n_workers=1, threads_per_worker=2, processes=False,
                                                               dashboard_address="127.0.0.1:0"))


# --- a network against itself with permutations ---------------------------------------------

def test_self_permutations_equal_those_of_the_network_against_a_copy(net):
    metrics = ["rv2", "cka_debiased"]
    for route in ("feature", "gram"):
        itself = rv2dist.similarity(net, metric=metrics, permutations=19, seed=3, route=route)
        copy = rv2dist.similarity(net, dict(net), metric=metrics, permutations=19, seed=3, route=route)
        for metric in metrics:
            name = f"{metric}_p_permutation"
            np.testing.assert_array_equal(itself[name].values, copy[name].values)
            # a layer against itself: no permutation reaches the observed 1
            np.testing.assert_array_equal(np.diag(itself[name].values), 1 / 20)


def test_self_permutations_from_the_command_line_and_a_job(net, tmp_path, capsys, threads_cluster):
    import os

    from distributed import Client

    from rv2dist import cli
    from rv2dist.service import jobfile, runner
    from rv2dist.io.results import read_result

    rv2dist.write_activations(tmp_path / "a.zarr", net, network="a")
    want = rv2dist.similarity(tmp_path / "a.zarr", permutations=9, seed=2)
    assert cli.main(["compare", str(tmp_path / "a.zarr"), "--permutations", "9", "--seed", "2",
                     "--out", str(tmp_path / "r.nc")]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_result(tmp_path / "r.nc").rv2_p_permutation.values,
                                  want.rv2_p_permutation.values)
    (tmp_path / "job.toml").write_text('permutations = 9\nseed = 2\nplots = false\n[networks]\na = "a.zarr"\n'
                                       '[[compare]]\nself = ["a"]\n')
    with Client(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as client:
        runner.run_job(jobfile.load_job(tmp_path / "job.toml"), client, progress=False, stream=open(os.devnull, "w"))
    np.testing.assert_array_equal(read_result(tmp_path / "results" / "a__a.nc").rv2_p_permutation.values,
                                  want.rv2_p_permutation.values)


# --- bootstrap replicates that leave a metric undefined ---------------------------------------

def test_undefined_bootstrap_replicates_are_counted_and_left_out(rng):
    """At n = 6 some Poisson replicates weigh fewer than the 4 observations debiased CKA
    needs (seed 0: two replicates of total weight 2), and one repeats one observation
    three times beside one other, whose unbiased HSIC is 0: they are undefined, said,
    and the interval is that of the other replicates."""
    n, count, seed = 6, 41, 0
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
    counts = resampling.poisson_weights(seed, 0, n, count)
    assert (counts.sum(axis=0) == 2).any()  # the case of the report
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.array([resampled_metric(x, y, "cka_debiased", True, counts[:, r]) if counts[:, r].sum() >= 4
                           else np.nan for r in range(count)])
    values[~np.isfinite(values)] = np.nan
    with pytest.warns(rv2dist.UndefinedReplicateWarning, match=r"cka_debiased: (\d+) of 41"):
        result = rv2dist.similarity({"x": x}, {"y": y}, metric="cka_debiased", bootstrap=count, seed=seed)
    undefined = int(np.isnan(values).sum())
    assert undefined >= 2
    low = result.cka_debiased_low
    assert low.attrs["undefined_replicates"] == undefined
    assert f"{undefined} of the 41 replicates left the metric undefined" in low.attrs["description"]
    expected = np.quantile(values[~np.isnan(values)], [0.025, 0.975])
    np.testing.assert_allclose([float(low[0, 0]), float(result.cka_debiased_high[0, 0])], expected, rtol=1e-9)


def test_defined_bootstrap_replicates_say_nothing(rng):
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", rv2dist.UndefinedReplicateWarning)
        result = rv2dist.similarity({"x": x}, {"y": y}, metric="cka_debiased", bootstrap=41)
    assert "undefined_replicates" not in result.cka_debiased_low.attrs


# --- option values ---------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"layers": 5}, "layers must be a layer name, a list of names, or a pair (a's, b's) of lists, not 5"),
    ({"layers": (["l0"],)}, "layers must be a layer name, a list of names, or a pair"),
    ({"memory_budget": float("inf")}, "memory_budget must be a positive number of bytes or a size such as '4GB', "
                                      "got inf"),
    ({"client": object()}, "client must be a distributed.Client or a scheduler address"),
])
def test_bad_options_are_named(net, options, message):
    with pytest.raises((TypeError, ValueError)) as caught:
        rv2dist.similarity(net, **options)
    assert message in str(caught.value)


def test_names_must_be_strings(net):
    with pytest.raises(TypeError, match=r"names must be a name or a list of names \(strings\), not \[1, 2\]"):
        rv2dist.similarity([net["l0"], net["l1"]], names=[1, 2])


def test_numpy_numbers_and_iterables_of_names_are_taken(net):
    plain = rv2dist.similarity(net, dict(net), metric="rv2", layers=["l0", "l2"], bootstrap=41, confidence=0.9,
                               memory_budget=10**8)
    numpy = rv2dist.similarity(net, dict(net), metric="rv2", layers=np.array(["l0", "l2"]),
                               bootstrap=np.int64(41), confidence=np.float32(0.9), memory_budget=np.int64(10**8))
    np.testing.assert_allclose(numpy.rv2_low.values, plain.rv2_low.values, rtol=1e-6)  # float32's 0.9
    pair = rv2dist.similarity(net, dict(net), layers=[["l0"], ["l1", "l2"]])
    assert list(pair.layer_a.values) == ["l0"] and list(pair.layer_b.values) == ["l1", "l2"]
    pair = rv2dist.similarity(net, dict(net), layers=(net.keys(), "l1"))
    assert list(pair.layer_a.values) == ["l0", "l1", "l2"] and list(pair.layer_b.values) == ["l1"]


def test_client_as_a_scheduler_address(net):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        on_cluster = rv2dist.similarity(net, metric="cka", client=cluster.scheduler_address)
    np.testing.assert_allclose(on_cluster.values, rv2dist.similarity(net, metric="cka").values, rtol=1e-12)


def test_an_unreachable_scheduler_address_is_named_after_the_configured_wait(net):
    import socket
    import time

    import dask

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    start = time.monotonic()
    with dask.config.set({"rv2dist.scheduler-timeout": 1}), \
            pytest.raises(ConnectionError, match=f"cannot reach the scheduler at {address}"):
        rv2dist.similarity(net, metric="cka", client=address)
    assert time.monotonic() - start < 10  # not the 15 s default


# --- Datasets and observation ids ------------------------------------------------------------

def test_dataset_layers_stored_units_first_count_and_others_are_named(net):
    units_first = xr.Dataset({"l0": (("obs", "u0"), net["l0"]), "l1": (("u1", "obs"), net["l1"].T),
                              "labels": (("class",), np.arange(3))})
    with pytest.warns(UserWarning, match="variable\\(s\\) 'labels' have no 'obs' dimension"):
        result = rv2dist.similarity(units_first, metric="cka")
    expected = rv2dist.similarity({"l0": net["l0"], "l1": net["l1"]}, metric="cka")
    assert list(result.layer_a.values) == ["l0", "l1"]
    np.testing.assert_allclose(result.values, expected.values, rtol=1e-12)


def test_nan_observation_ids_are_refused(net, tmp_path):
    ids = np.arange(60.0)
    ids[7] = np.nan
    dataset = xr.Dataset({name: (("obs", f"{name}_u"), v) for name, v in net.items()}, coords={"obs": ids})
    with pytest.raises(ValueError, match="the observation id at position 7 is NaN, which identifies nothing"):
        rv2dist.similarity(dataset, dataset.copy())
    with pytest.raises(ValueError, match="net.zarr: the observation id at position 7 is NaN"):
        rv2dist.write_activations(tmp_path / "net.zarr", net, obs=ids, chunk_bytes=200)
    assert not list(tmp_path.iterdir())


# --- preprocessing ---------------------------------------------------------------------------

def test_preprocess_checks_ids_and_what_downsampling_leaves(net, tmp_path):
    with pytest.raises(ValueError, match="3 observation ids for 60 observations"):
        rv2dist.preprocess(net, obs=[1, 2, 3])
    with pytest.raises(ValueError, match="layer 'short' has 59 observations but 'l0' has 60"):
        rv2dist.preprocess({**net, "short": net["l1"][1:]})
    np.savez(tmp_path / "acts.npz", **net)
    for factor, method, left in ((30, "stride", 2), (60, "stride", 1), (31, "mean", 1), (61, "mean", 0)):
        arguments = dict(downsample_by=factor, method=method)
        if left >= 2:
            rv2dist.convert(tmp_path / "acts.npz", tmp_path / "ok.zarr", **arguments, overwrite=True)
            assert rv2dist.open_activations(tmp_path / "ok.zarr").sizes["obs"] == left
            continue
        with pytest.raises(ValueError, match=f"acts.npz: downsampling 60 observations by {factor} \\({method}\\) "
                                             f"would leave {left}; a comparison needs at least 2"):
            rv2dist.convert(tmp_path / "acts.npz", tmp_path / "one.zarr", **arguments)
    assert not (tmp_path / "one.zarr").exists()


# --- torch tensors that are no plain arrays ---------------------------------------------------

def test_nested_tensors_are_refused_and_quantized_ones_dequantized(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((30, 4)).astype(np.float32))
    y = rng.standard_normal((30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: quantized and nested tensors are prototypes
        quantized = torch.quantize_per_tensor(x, 0.05, 0, torch.qint8)
        nested = [torch.nested.nested_tensor([x[:3], x[:5]], layout=layout) for layout in (torch.strided, torch.jagged)]
    got = rv2dist.similarity({"q": quantized}, {"y": y}, metric="cka")
    want = rv2dist.similarity({"q": quantized.dequantize().numpy()}, {"y": y}, metric="cka")
    np.testing.assert_array_equal(got.values, want.values)
    for tensor in nested:
        with pytest.raises(TypeError, match="layer 'n' is a nested tensor .* pool each sequence to one vector"):
            rv2dist.similarity({"n": tensor}, {"y": y})


def test_two_models_of_one_class_are_called_a_and_b(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(4, 3)) for _ in range(2)]
    batches = [torch.from_numpy(rng.standard_normal((10, 4)).astype(np.float32)) for _ in range(3)]
    with pytest.warns(UserWarning, match=r"both models are Sequential: the result calls them 'a' and 'b'; "
                                         r"name them with names=\('pretrained', 'random'\)"):
        result = rv2dist.compare_models(*models, batches, ["0"], progress=False)
    assert (result.attrs["network_a"], result.attrs["network_b"]) == ("a", "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        named = rv2dist.compare_models(*models, batches, ["0"], names=("x", "y"), progress=False)
        itself = rv2dist.compare_models(models[0], models[0], batches, ["0"], progress=False)
    assert named.attrs["network_b"] == "y" and itself.attrs["network_b"] == "Sequential"


# --- readable outputs ------------------------------------------------------------------------

def test_progress_lines_in_logs_are_whole():
    import io

    from rv2dist.service.progress import ProgressBar

    stream = io.StringIO()
    detail = ", ".join(f"encoder.layer.{i}__encoder.layer.{i} {10 * i}%" for i in range(6))
    with ProgressBar(4, "job a long job name", unit="comparison", stream=stream) as bar:
        bar.detail = detail
        bar.update(4)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("job a long job name: 100%") and line.endswith(detail + "]")


def test_dask_config_silences_every_progress_bar_as_it_does_the_cost_line():
    import io

    import dask

    from rv2dist.service.progress import ProgressBar

    stream = io.StringIO()
    with dask.config.set({"rv2dist.progress": False}), ProgressBar(2, "quiet", stream=stream) as bar:
        bar.update(2)
    with ProgressBar(2, "shown", stream=stream) as bar:
        bar.update(2)
    assert "quiet" not in stream.getvalue() and "shown: 100%" in stream.getvalue()


def test_info_columns_align_for_long_layer_names(tmp_path):
    from rv2dist.io.reader import describe

    layers = {"encoder.layer.11.attention.output.dense": np.ones((10, 3)) * np.arange(10)[:, None],
              "fc": np.ones((10, 300)) * np.arange(10)[:, None]}
    rv2dist.write_activations(tmp_path / "s.zarr", layers)
    lines = describe(tmp_path / "s.zarr").splitlines()
    header = next(line for line in lines if line.startswith("layers"))
    rows = [line for line in lines if line.split()[0] in layers]
    assert [row.index(" 3 ") + 1 if "dense" in row else row.index("300") for row in rows] == [header.index("units")] * 2
    assert len({row.index("float64") for row in rows} | {header.index("dtype")}) == 1


def test_the_demo_prints_paths_not_links_that_die_with_it(tmp_path, capsys, threads_cluster):
    from rv2dist import cli

    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--n-obs", "300"]) == 0
    out = capsys.readouterr().out
    assert "http" not in out and f"result:  {tmp_path / 'demo' / 'result.nc'}" in out


CHECK_LABELS = """<script>
// every text of every heatmap inside its picture, and no layer name over the cells
const found = {outside: [], over: []};
for (const svg of document.querySelectorAll("svg.heatmap")) {
  const box = svg.getBoundingClientRect(), cells = [...svg.querySelectorAll("rect.cell")].map(r => r.getBoundingClientRect());
  const grid = {left: Math.min(...cells.map(r => r.left)), top: Math.min(...cells.map(r => r.top))};
  for (const text of svg.querySelectorAll("text")) {
    const r = text.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
      found.outside.push(text.textContent);
  }
  const layers = new Set(DATA.jobs.flatMap(job => job.comparisons.flatMap(c => [...c.layers_a, ...c.layers_b])));
  for (const text of [...svg.querySelectorAll("text")].filter(t => layers.has(t.textContent) || t.textContent.endsWith("\u2026"))) {
    const r = text.getBoundingClientRect();
    if (r.right > grid.left + 0.5 && r.bottom > grid.top + 0.5) found.over.push(text.textContent);
  }
}
document.body.setAttribute("data-found", JSON.stringify(found));
</script></body>"""


def test_report_sizes_label_space_to_the_names_in_headless_chromium(tmp_path):
    """Layer names of every length are shown whole (a very long one cut with an
    ellipsis, whole on hover), beside and above the cells, inside the picture."""
    import html
    import json
    import re

    from test_service import _chromium, _dump_dom

    from rv2dist.io.atomic import write_text
    from rv2dist.service.page import page_html

    if not _chromium():
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    long = [f"encoder.layer.{i}.attention.output.dense" for i in range(4)]

    def comparison(name, layers_a, layers_b, network_a, label="CKA"):
        values = np.linspace(0, 1, len(layers_a) * len(layers_b)).reshape(len(layers_a), -1)
        return {"name": name, "network_a": network_a, "network_b": "b", "status": "done",
                "matrices": {"cka": values.tolist()}, "layers_a": layers_a, "layers_b": layers_b,
                "labels": {"cka": label},
                "significant": {"cka": (values > 0.5).tolist()}, "significance": "* corrected p < 0.05 (holm)"}

    data = {"jobs": [{"id": "j", "name": "j", "status": "finished", "comparisons_done": 3, "comparisons_total": 3,
                      "comparisons": [comparison("long", long, long, "sentence-transformers/all-MiniLM-L6-v2"),
                                      comparison("short", ["c1", "c2"], ["c1", "c2"], "c",
                                                 "ridge R² (columns from rows)"),
                                      comparison("huge", ["x" * 150, "l"], long[:2], "e")]}]}
    page = page_html(data).replace("</body>", CHECK_LABELS)
    write_text(tmp_path / "report.html", page)
    dom = _dump_dom((tmp_path / "report.html").as_uri(), tmp_path / "chromium")
    found = json.loads(html.unescape(re.search(r'data-found="([^"]*)"', dom).group(1)))
    assert found == {"outside": [], "over": []}
    shown = re.findall(r'<text[^>]*>([^<]*)', dom)
    assert all(name in shown for name in long) and "c1" in shown
    assert "ridge R² (columns from rows)" in shown and "cka" not in shown  # the colour bar's title: the label
    assert any(name.startswith("xxxx") and name.endswith("\u2026") for name in shown)
    assert f"<title>{'x' * 150}</title>" in dom


def test_quiet_and_verbose_hold_for_their_own_call(rng, tmp_path, capsys, monkeypatch, threads_cluster):
    """-q and -v go to the verb they were given with, not to the process: the next call
    (of the API or the command line) says what its job costs again, and the embedded
    cluster's default log level stays."""
    import logging

    from rv2dist import cli
    from rv2dist.service import cluster

    for name in ("rv2dist", "distributed.client"):  # -v configures logging: restored after the test
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 60, (3, 4)))
    monkeypatch.setattr(rv2dist.api, "COST_LINE_FLOP", 0)  # as if every job were long
    assert cli.main(["-q", "compare", str(tmp_path / "a.zarr"), "--out", str(tmp_path / "q.nc")]) == 0
    assert "this job computes" not in capsys.readouterr().err
    rv2dist.similarity(tmp_path / "a.zarr")  # in the same process, after `rv2dist -q`
    assert "this job computes" in capsys.readouterr().err
    assert cli.main(["-v", "compare", str(tmp_path / "a.zarr"), "--out", str(tmp_path / "v.nc")]) == 0
    assert "this job computes" in capsys.readouterr().err
    assert cluster.EMBEDDED_LOG_LEVEL == logging.CRITICAL
