"""The service: job files, resuming, real scheduler and worker processes, faults, the
dashboard page in headless Chromium, and bad input on every verb."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import rv2dist
from conftest import relu_network, run_cli
from rv2dist.io.chunks import StoredLayer
from rv2dist.io.results import read_result
from rv2dist.service import jobfile, runner

RV2DIST = [sys.executable, "-m", "rv2dist.cli"]


def _write_job(folder, networks, compare, **options):
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    lines.append("[networks]")
    lines += [f'{name} = "{name}.zarr"' for name in networks]
    for table in compare:
        lines.append("[[compare]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path = folder / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stores(folder, rng, sizes, widths=(6, 12, 24), chunk_bytes=30_000):
    for name, n in sizes.items():
        rv2dist.write_activations(folder / f"{name}.zarr", relu_network(rng, n, widths), network=name,
                                  chunk_bytes=chunk_bytes, overwrite=True)


def _mtimes(folder):
    """Modification times of the per-comparison results (not the combined one)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*__*.nc")}


@pytest.mark.slow
def test_run_resumes_after_the_client_is_killed(rng, tmp_path):
    """Kill `rv2dist run` (client and embedded cluster) as soon as its first result is
    written: the rerun keeps the finished files untouched and computes only the rest;
    rewriting one store recomputes exactly the comparisons that read it."""
    _stores(tmp_path, rng, {"ref": 4000, "small": 4000})
    _stores(tmp_path, rng, {"wide1": 4000, "wide2": 4000}, widths=(200, 250, 300), chunk_bytes=200_000)
    job = _write_job(tmp_path, ["ref", "small", "wide1", "wide2"],
                     [{"pairs": [["ref", "small"]]}, {"pairs": [["wide1", "wide2"]]}, {"self": ["wide1", "wide2"]}],
                     metrics=["rv2", "cka"], plots=False)
    results = tmp_path / "results"
    process = subprocess.Popen([*RV2DIST, "run", str(job), "--no-progress"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not list(results.glob("*__*.nc")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = _mtimes(results)
    assert before, "no result was written before the kill"
    assert len(before) < 4, "the job finished before it could be interrupted"
    assert not list(results.glob(".*partial*"))  # nothing half-written is left visible
    rerun = run_cli("run", job, "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} done before" in rerun.stdout
    after = _mtimes(results)
    assert len(after) == 4
    for name, mtime in before.items():
        assert after[name] == mtime, f"{name} was recomputed"
        assert f"skip {name[:-3]}" in rerun.stdout
    for comparison, (a, b) in {"ref__small": ("ref", "small"), "wide1__wide2": ("wide1", "wide2"),
                               "wide1__wide1": ("wide1", None), "wide2__wide2": ("wide2", None)}.items():
        result = read_result(results / f"{comparison}.nc")
        want = rv2dist.similarity(tmp_path / f"{a}.zarr", b and tmp_path / f"{b}.zarr", metric=["rv2", "cka"])
        assert np.allclose(result.rv2.values, want.rv2.values, rtol=0, atol=1e-12)
        assert result.attrs["network_a"] == a and result.attrs["rv2dist_version"] == rv2dist.__version__
        assert result.attrs["store_a"].endswith(f"{a}.zarr") and result.attrs["job"] == "job"
    _stores(tmp_path, np.random.default_rng(5), {"small": 4000})
    changed = run_cli("run", job, "--no-progress")
    assert changed.returncode == 0, changed.stderr
    assert "3 done before" in changed.stdout and "recompute ref__small" in changed.stdout
    final = _mtimes(results)
    assert [name for name in final if final[name] != after[name]] == ["ref__small.nc"]


def test_job_shares_reads_and_reports_to_the_board(rng, tmp_path, monkeypatch):
    """In-process: a reference against two networks; each chunk of the reference is read
    once for both comparisons; the board counts every rv2dist task of each comparison
    and holds the finished matrices."""
    import collections

    from distributed import Client, LocalCluster

    reads = collections.Counter()
    read, read_into = StoredLayer.__getitem__, StoredLayer.read_into

    def counted(layer, key):
        reads[(os.path.basename(layer.path), layer.name, str(key))] += 1
        return read(layer, key)

    def counted_into(layer, start, stop, out, pool=None):
        reads[(os.path.basename(layer.path), layer.name, str(slice(start, stop)))] += 1
        return read_into(layer, start, stop, out, pool)

    monkeypatch.setattr(StoredLayer, "__getitem__", counted)
    monkeypatch.setattr(StoredLayer, "read_into", counted_into)
    _stores(tmp_path, rng, {"ref": 900, "x": 900, "y": 900})
    job = jobfile.load_job(_write_job(tmp_path, ["ref", "x", "y"], [{"reference": "ref"}], metrics=["cka", "rv2"]))
    assert [c.name for c in job.comparisons] == ["ref__x", "ref__y"]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        summary = runner.run_job(job, client, progress=False, stream=open(os.devnull, "w"))
        assert summary.computed == ("ref__x", "ref__y") and summary.skipped == ()
        snapshot = cluster.scheduler.plugins["rv2dist"].snapshot()
        link = client.dashboard_link
    # x and y, in one comparison each, are read by the tasks that use them (their
    # shifts read their first rows besides)
    assert {path for path, _, _ in reads} == {"ref.zarr", "x.zarr", "y.zarr"}
    assert {count for (path, _, _), count in reads.items() if path == "ref.zarr"} == {1}
    latest = snapshot["jobs"][0]
    assert latest["status"] == "finished" and latest["comparisons_done"] == 2
    for entry in latest["comparisons"]:
        assert entry["tasks_total"] > 0
        assert cluster.scheduler.plugins["rv2dist"].tasks_done(entry["token"]) == entry["tasks_total"]
        assert list(entry["matrices"]) == ["cka", "rv2"] and len(entry["matrices"]["cka"]) == 3
    assert link


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_page_in_headless_chromium(rng, tmp_path):
    """The scheduler serves /rv2dist: real headless Chromium runs its script, which
    fetches the JSON route and draws one heatmap per finished comparison."""
    if not _chromium():
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    from distributed import Client, LocalCluster

    from rv2dist.service import dashboard

    _stores(tmp_path, rng, {"ref": 500, "x": 500})
    job = jobfile.load_job(_write_job(tmp_path, ["ref", "x"], [{"reference": "ref"}, {"self": ["x"]}]))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        runner.run_job(job, client, progress=False, stream=open(os.devnull, "w"))
        # in-process clusters name the machine's address; the server listens on 127.0.0.1
        port = client.dashboard_link.split(":")[-1].split("/")[0]
        page = dashboard.page_link(f"http://127.0.0.1:{port}/status")
        with urllib.request.urlopen(page + "/api/progress", timeout=10) as answer:
            progress = json.load(answer)
        dom = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom", page],
            capture_output=True, text=True, timeout=60,
        ).stdout
    assert progress["jobs"][0]["comparisons_done"] == 2
    assert {c["name"] for c in progress["jobs"][0]["comparisons"]} == {"ref__x", "x__x"}
    dom = dom.split("<script")[0]  # what the script drew, not the script's own text
    assert dom.count('class="heatmap"') == 2, dom[:2000]
    assert dom.count('class="cell"') == 2 * 9  # two 3 x 3 matrices
    assert "finished - 2 of 2 comparisons" in dom and "ref vs x" in dom


def _start(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **kwargs)


@pytest.fixture
def real_cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    from distributed import Client

    scheduler_file = tmp_path / "scheduler.json"
    processes = [_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)])]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    for _ in range(2):
        processes.append(_start(["distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                                 "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1"]))
    client = Client(scheduler_file=str(scheduler_file), timeout="30s")
    client.wait_for_workers(2, timeout=60)
    yield client, scheduler_file, processes
    client.close()
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_real_processes_and_a_killed_worker(rng, tmp_path, real_cluster):
    client, scheduler_file, processes = real_cluster
    address = client.scheduler.address
    _stores(tmp_path, rng, {"a": 1500, "b": 1500})
    done = run_cli("compare", tmp_path / "a.zarr", tmp_path / "b.zarr", "--metric", "rv2", "cka_debiased",
                    "--scheduler", address, "--out", tmp_path / "r.nc")
    assert done.returncode == 0, done.stderr
    got = read_result(tmp_path / "r.nc")
    want = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric=["rv2", "cka_debiased"])
    for metric in ("rv2", "cka_debiased"):
        assert np.allclose(got[metric].values, want[metric].values, rtol=0, atol=1e-12)

    # a job long enough to lose a worker in the middle of it
    _stores(tmp_path, rng, {"big1": 12000, "big2": 12000}, widths=(100, 150, 200), chunk_bytes=160_000)
    job = _write_job(tmp_path, ["big1", "big2"], [{"pairs": [["big1", "big2"]]}, {"self": ["big1", "big2"]}],
                     plots=False)
    run = subprocess.Popen([*RV2DIST, "run", str(job), "--no-progress", "--scheduler-file", str(scheduler_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.time() + 60
    while victim is None and time.time() < deadline:
        busy = [addr for addr, keys in client.processing().items() if any("rv2dist-" in str(k) for k in keys)]
        if busy:
            victim = busy[0]
        time.sleep(0.05)
    assert victim, "the job's tasks never reached a worker"
    pid = client.scheduler_info()["workers"][victim]["pid"] if "pid" in client.scheduler_info()["workers"][victim] \
        else client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    assert len(client.scheduler_info()["workers"]) == 1  # the kill was real
    for name, (a, b) in {"big1__big2": ("big1", "big2"), "big1__big1": ("big1", None)}.items():
        result = read_result(tmp_path / "results" / f"{name}.nc")
        want = rv2dist.similarity(tmp_path / f"{a}.zarr", b and tmp_path / f"{b}.zarr")
        assert np.allclose(result.rv2.values, want.values, rtol=0, atol=1e-12)


def test_bad_input_on_every_verb(rng, tmp_path):
    import dask

    _stores(tmp_path, rng, {"a": 100, "b": 100})
    good = ["[networks]", 'a = "a.zarr"', 'b = "b.zarr"', "[[compare]]", 'reference = "a"']
    jobs_text = {
        "syntax.toml": ("[networks\n", "not valid TOML"),
        "unknown.toml": ("colour = 1\n" + "\n".join(good), "unknown key 'colour'"),
        "nonet.toml": ("[[compare]]\nself = ['a']\n", "[networks]"),
        "noref.toml": ("\n".join(good[:3]) + "\n[[compare]]\nreference = 'zz'\n", "network 'zz'"),
        "metric.toml": ('metrics = ["rv3"]\n' + "\n".join(good), "unknown metric 'rv3'"),
        "missing.toml": ("\n".join(good).replace("b.zarr", "gone.zarr"), "gone.zarr"),
        "pair.toml": ("\n".join(good[:3]) + "\n[[compare]]\npairs = [['a']]\n", "a pair needs two"),
        "both.toml": ("\n".join(good) + "\nself = ['a']\n", "exactly one of"),
        "format.toml": ('format = "csv"\n' + "\n".join(good), "format must be"),
    }
    for name, (text, named) in jobs_text.items():
        (tmp_path / name).write_text(text)
        done = run_cli("run", tmp_path / name)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
        assert name in done.stderr or named in done.stderr
    assert not (tmp_path / "results").exists()
    cases = [
        (("run", tmp_path / "nothere.toml"), "nothere.toml: no such job file"),
        (("cluster", "--workers", "0"), "--workers must be at least 1"),
        (("compare", tmp_path / "a.zarr", "--gpus", "--out", tmp_path / "g.nc"), "--gpus"),
        (("compare", tmp_path / "a.zarr", "--scheduler", "tcp://127.0.0.1:1", "--out", tmp_path / "s.nc"),
         "cannot reach the scheduler"),
        (("compare", tmp_path / "a.zarr", "--scheduler-file", tmp_path / "none.json", "--out", tmp_path / "s.nc"),
         "none.json does not exist"),
        (("demo", "--out", tmp_path / "d", "--n-obs", "60", "--gpus"), "--gpus"),
    ]
    for args, named in cases:
        with dask.config.set({"rv2dist.scheduler-timeout": 1}):  # the unreachable scheduler: said sooner
            done = run_cli(*args)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    for value in ("soon", 0):
        with dask.config.set({"rv2dist.scheduler-timeout": value}):
            done = run_cli("compare", tmp_path / "a.zarr", "--scheduler", "tcp://127.0.0.1:1", "--out",
                           tmp_path / "t.nc")
        named = f"error: dask config 'rv2dist.scheduler-timeout' is {value!r}: give the seconds"
        assert done.returncode == 2 and named in done.stderr, done.stderr
    assert not list(tmp_path.glob("*.nc"))


def test_one_labelled_result_per_job_and_recomputes_name_the_change(rng, tmp_path):
    import xarray as xr
    from distributed import Client, LocalCluster

    _stores(tmp_path, rng, {"ref": 300, "x": 300, "y": 300})
    job_file = _write_job(tmp_path, ["ref", "x", "y"], [{"reference": "ref"}, {"self": ["y"]}],
                          metrics=["rv2", "cka"], plots=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=open(os.devnull, "w"))
        combined = rv2dist.open_results(tmp_path / "results")
        assert combined.rv2.dims == ("comparison", "layer_a", "layer_b")
        assert list(combined.comparison.values) == ["ref__x", "ref__y", "y__y"]
        assert list(combined.network_a.values) == ["ref", "ref", "y"]
        assert list(combined.network_b.values) == ["x", "y", "y"]
        assert combined.rv2.attrs["long_name"] == "modified RV coefficient (RV2)" and combined.attrs["job"] == "job"
        for name in combined.comparison.values:
            single = read_result(tmp_path / "results" / f"{name}.nc")
            assert np.array_equal(combined.cka.sel(comparison=name).values, single.cka.values)
        # the per-comparison files keep their own names when opened together
        files = sorted((tmp_path / "results").glob("*__*.nc"))
        together = xr.open_mfdataset(files, combine="nested", concat_dim="comparison", engine="h5netcdf")
        assert list(together.network_b.values) == ["x", "y", "y"]
        together.close()
        _stores(tmp_path, np.random.default_rng(9), {"x": 300})
        lines = io.StringIO()
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=lines)
    assert f"recompute ref__x: store {tmp_path / 'x.zarr'} changed since" in lines.getvalue()
    drawn = run_cli("plot", tmp_path / "results" / "combined.nc", "--out", tmp_path / "grid.png", "--metric", "cka")
    assert drawn.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0, drawn.stderr
    assert "skip ref__y" in lines.getvalue() and "skip y__y" in lines.getvalue()


def test_a_job_notes_undefined_layers_per_comparison(rng, tmp_path):
    from distributed import Client, LocalCluster

    _stores(tmp_path, rng, {"p": 80})
    rv2dist.write_activations(tmp_path / "q.zarr", {"flat": np.full((80, 3), 2.0), **relu_network(rng, 80, (4,))},
                              network="q")
    job_file = _write_job(tmp_path, ["p", "q"], [{"pairs": [["p", "q"]]}], metrics=["rv2"], plots=False)
    lines = io.StringIO()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=lines)
    assert "  note p__q: layer(s) 'flat' have zero variance: their rows/columns are NaN" in lines.getvalue()


def _dump_dom(url, profile):
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout.split("<script")[0]


def test_report_and_live_page_in_headless_chromium(rng, tmp_path):
    """After a job, report.html (offline, the data embedded) holds every matrix with a
    metric selector, colour bar, plan and provenance; during a job the live page shows
    progress and an ETA."""
    if not _chromium():
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    from distributed import Client, LocalCluster

    from rv2dist.service import dashboard

    _stores(tmp_path, rng, {"ref": 300, "x": 300})
    job = jobfile.load_job(_write_job(tmp_path, ["ref", "x"], [{"reference": "ref"}, {"self": ["x"]}],
                                   metrics=["cka", "rv2", "rv2_null"], plots=False))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        runner.run_job(job, client, progress=False, stream=open(os.devnull, "w"))
        client.run_on_scheduler(dashboard.post_to_board, "live", {
            "name": "live job", "status": "running", "started": time.time() - 30, "client": client.id,
            "comparisons": {"a__b": {"status": "running", "network_a": "a", "network_b": "b", "token": "t",
                                     "tasks_total": 10}}})
        cluster.scheduler.plugins["rv2dist"].finished_tasks["t"] = {(f"k{i}",) for i in range(4)}
        port = client.dashboard_link.split(":")[-1].split("/")[0]
        live = _dump_dom(dashboard.page_link(f"http://127.0.0.1:{port}/status"), tmp_path / "c1")
    # 4 of 10 tasks done in the first 30 s (and the seconds until the page drew): 45 s or a bit more left
    eta = re.search(r"running - 0 of 1 comparisons - about (\d+) s left", live)
    assert eta and 45 <= int(eta.group(1)) <= 120, live[-600:]
    report = _dump_dom((tmp_path / "results" / "report.html").as_uri(), tmp_path / "c2")
    assert report.count('class="heatmap"') == 2 and report.count('class="metric"') == 2
    assert report.count("<option") == 6 and "layer of x" in report and report.count('class="colourbar"') == 40
    assert "rv2dist plan: route=" in report and "finished - 2 of 2 comparisons" in report
    assert "ref = " in report and "done in" in report


def test_a_job_tells_its_work_as_events_to_its_subscribers_only(rng, tmp_path, capsys):
    """The runner only emits: a subscriber of its own sees the job's events in order,
    and without the usual subscribers nothing is printed and no report is written,
    while the results are.  The rerun keeps both results and checks their stores."""
    from distributed import Client, LocalCluster

    from rv2dist.service import events as ev
    from rv2dist.service.page import comparison_entry

    _stores(tmp_path, rng, {"ref": 200, "x": 200})
    job = jobfile.load_job(_write_job(tmp_path, ["ref", "x"], [{"reference": "ref"}, {"self": ["x"]}],
                                      metrics=["rv2", "rv2_null"], plots=False))
    seen = []

    class Recorder:
        def attach(self, events):
            for kind in (ev.JobStarted, ev.CheckingInputs, ev.ComparisonQueued, ev.ComparisonStarted,
                         ev.ComparisonFinished, ev.ComparisonFailed, ev.JobFinished, ev.JobInterrupted):
                events.subscribe(kind, seen.append)

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for _ in range(2):
            bus = ev.JobEvents()
            Recorder().attach(bus)
            summary = runner.run(job, client, bus)
    kinds = [type(event).__name__ for event in seen]
    first = kinds[:kinds.index("JobFinished") + 1]
    assert first[:5] == ["JobStarted", "ComparisonQueued", "ComparisonQueued", "ComparisonStarted",
                         "ComparisonStarted"]
    assert sorted(first[5:-1]) == ["ComparisonFinished"] * 2 and first[-1] == "JobFinished"
    assert kinds[len(first):] == ["JobStarted", "CheckingInputs", "JobFinished"]
    assert summary.computed == () and summary.skipped == ("ref__x", "x__x")
    finished = [event for event in seen if isinstance(event, ev.ComparisonFinished)]
    assert {event.path for event in finished} == {job.result_path(c) for c in job.comparisons}
    assert all(event.path.exists() for event in finished) and (job.out / "combined.nc").exists()
    assert seen[-1].status == "finished" and set(seen[-1].results) == set(job.comparisons)
    assert not (job.out / "report.html").exists() and capsys.readouterr().out == ""
    # the page draws each measure on its own scale, from the table of measures
    entry = comparison_entry(finished[0].comparison, seen[0].networks, "done", result=finished[0].result,
                             metrics=job.metrics)
    assert entry["scales"] == {"rv2": "unit", "rv2_null": "data"}


def test_one_rule_for_a_clusters_gpus():
    """device="auto" runs on the GPUs of a cluster whose workers declare a GPU resource:
    any of them (its tasks then go to those workers), for the API and the command line
    alike (which passes "auto" unless --gpus)."""
    import argparse

    from distributed import Client, LocalCluster

    from rv2dist.engine.execute import gpu_workers
    from rv2dist.cli.connection import device

    class Mixed:  # one CPU worker and one GPU worker, as the scheduler describes them
        def scheduler_info(self, n_workers=5):
            return {"workers": {"cpu": {"resources": {}}, "gpu": {"resources": {"GPU": 1}}}}

    assert gpu_workers(Mixed()) and not gpu_workers(None)
    assert device(argparse.Namespace(gpus=False)) == "auto" and device(argparse.Namespace(gpus=True)) == "gpu"
    layers = {"a": np.ones((40, 3), np.float32) * np.arange(40)[:, None] % 7, "b": np.arange(80.0).reshape(40, 2)}
    layers = {name: array.astype(np.float32) for name, array in layers.items()}
    for resources, dtype in ((None, "float32"), ({"GPU": 1}, "float64")):  # float64 products on GPUs
        with LocalCluster(n_workers=1, processes=False, resources=resources, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            assert rv2dist.plan(layers, client=client).compute_dtype == dtype, resources
