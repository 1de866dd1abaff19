"""Hostile and damaged input: every case is a clear error naming what is at fault, or
the right answer; never a silent wrong number, a traceback or a half-written file."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import rv2dist
from rv2dist.io.atomic import set_aside
from rv2dist.io.errors import StoreError
from rv2dist.io.reader import open_activations, store_fingerprint
from rv2dist.io.results import read_result
from rv2dist.io.writer import write_activations
from conftest import relu_network, run_cli, write_unchecked

RV2DIST = [sys.executable, "-m", "rv2dist.cli"]


def _assert_clean_failure(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr[-2000:])


def _chunked_store(tmp_path, rng, name="net", n=600, seed_layers=None):
    layers = seed_layers or relu_network(rng, n, (5, 7))
    path = tmp_path / f"{name}.zarr"
    write_activations(path, layers, network=name, chunk_bytes=7 * 8 * 100)  # 100-row chunks
    return path, layers


def _kill_during(tmp_path, code):
    """Run ``code`` in a fresh interpreter that dies by os._exit (as if SIGKILLed) at
    the patched instant."""
    script = tmp_path / "victim.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=os.path.dirname(__file__))
    assert done.returncode == 9, done.stderr


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic exchange", "rename aside"])
def test_overwrite_killed_midway_leaves_a_whole_store(rng, tmp_path, exchange):
    path, old = _chunked_store(tmp_path, rng)
    new = relu_network(np.random.default_rng(1), 600, (5, 7))
    np.savez(tmp_path / "new.npz", **new)
    # killed at the worst instant of each way: deleting the old copy after the
    # exchange, or between moving the old one aside and the new one in
    kill = ("atomic.discard = lambda p: os._exit(9)" if exchange else
            "atomic.exchange = lambda a, b: False\n"
            "real = os.replace\n"
            "def replace(a, b):\n"
            f"    if str(b) == {str(path)!r}: os._exit(9)  # the new store moving in\n"
            "    real(a, b)\n"
            "os.replace = replace")
    _kill_during(tmp_path, "\n".join([
        "import os, numpy as np",
        "from rv2dist.io import atomic",
        "from rv2dist.io.writer import write_activations",
        f"new = dict(np.load({str(tmp_path / 'new.npz')!r}))",
        kill,
        f"write_activations({str(path)!r}, new, overwrite=True, chunk_bytes=7 * 8 * 100)",
    ]))
    if exchange:
        got = open_activations(path)
        assert np.array_equal(got["l1"].values, new["l1"])
        info = run_cli("info", path)
        assert info.returncode == 0 and "leftover" in info.stdout and "partial" in info.stdout
    else:
        with pytest.raises(StoreError, match="replacement was interrupted; the previous store is whole"):
            open_activations(path)
        aside = set_aside(path)[0]
        assert np.array_equal(open_activations(aside)["l1"].values, old["l1"])


def test_missing_chunks_are_errors_naming_store_layer_and_rows(rng, tmp_path):
    path, _ = _chunked_store(tmp_path, rng)
    os.remove(path / "l1" / "c" / "2" / "0")
    with pytest.raises(StoreError, match=r"layer 'l1', chunk 2 \(rows 200 to 299\), is missing"):
        open_activations(path)
    out = tmp_path / "r.nc"
    _assert_clean_failure(run_cli("info", path), "chunk 2 (rows 200 to 299), is missing")
    _assert_clean_failure(run_cli("compare", path, "--out", out), "chunk 2 (rows 200 to 299), is missing")
    _assert_clean_failure(run_cli("import", path, "--out", tmp_path / "copy.zarr"),
                          "chunk 2 (rows 200 to 299), is missing")
    assert not out.exists() and not (tmp_path / "copy.zarr").exists()
    ids_path, _ = _chunked_store(tmp_path, rng, name="ids")
    os.remove(ids_path / "obs" / "c" / "1")
    with pytest.raises(StoreError, match=r"observation ids, chunk 1 \(rows 100 to 199\), is missing"):
        open_activations(ids_path)


def test_corrupt_chunk_is_a_clean_error_from_the_workers(rng, tmp_path):
    path, _ = _chunked_store(tmp_path, rng)
    (path / "l0" / "c" / "3" / "0").write_bytes(b"not zstd at all" * 10)
    with pytest.raises(StoreError, match=r"layer 'l0', chunk 3 \(rows 300 to 399\), cannot be read"):
        rv2dist.similarity(path)
    out = tmp_path / "r.nc"
    done = run_cli("compare", path, "--out", out)  # the cluster's worker processes read the chunk
    _assert_clean_failure(done, "layer 'l0', chunk 3 (rows 300 to 399), cannot be read")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "another chunk's frame"])
def test_chunk_that_decodes_to_the_wrong_rows_is_a_clean_error(rng, tmp_path, damage):
    """A stored chunk decoded straight into the task's buffer: a truncated file, or a
    valid frame of another size, is an error naming the rows, never other numbers."""
    path, _ = _chunked_store(tmp_path, rng)
    chunk = path / "l1" / "c" / "2" / "0"
    if damage == "truncated":
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    else:
        chunk.write_bytes((path / "l0" / "c" / "2" / "0").read_bytes())  # 5 units, not 7
    with pytest.raises(StoreError, match=r"layer 'l1', chunk 2 \(rows 200 to 299\), cannot be read"):
        rv2dist.similarity(path)


def _foreign_store(path, layers, obs=None):
    n = len(next(iter(layers.values())))
    dataset = xr.Dataset({name: (("obs", f"{name}_unit"), value) for name, value in layers.items()},
                         coords={"obs": np.arange(n) if obs is None else obs})
    dataset.to_zarr(path, mode="w")
    return path


def test_complex_and_text_layers_in_stores_are_refused(rng, tmp_path):
    good = rng.standard_normal((20, 3))
    complex_store = _foreign_store(tmp_path / "c.zarr", {"ok": good, "waves": good + 1j * good})
    with pytest.raises(StoreError, match=r"c.zarr: layer 'waves' has dtype complex128 \(complex\)"):
        rv2dist.similarity(complex_store)
    text_store = _foreign_store(tmp_path / "t.zarr", {"ok": good, "labels": good.astype(str)})
    _assert_clean_failure(run_cli("compare", text_store, "--out", tmp_path / "r.nc"), "layer 'labels'", "real numbers")


@pytest.mark.parametrize("name", ["a/b", "", "obs", ".hidden", "l0_unit", "x" * 256, "é" * 128])
def test_layer_names_a_store_cannot_give_back_are_refused(rng, tmp_path, name):
    layers = {"l0": rng.standard_normal((10, 3)), name: rng.standard_normal((10, 2))}
    with pytest.raises(StoreError, match="layer name"):
        write_activations(tmp_path / "s.zarr", layers)
    assert not list(tmp_path.iterdir())


def test_layer_names_as_long_as_a_file_name_are_stored(rng, tmp_path):
    layers = {"x" * 255: rng.standard_normal((10, 3)), "é" * 127: rng.standard_normal((10, 2))}
    write_activations(tmp_path / "s.zarr", layers)
    assert list(rv2dist.open_activations(tmp_path / "s.zarr").data_vars) == list(layers)


def test_repeated_observation_ids_are_refused_on_open(rng, tmp_path):
    layers = {"x": rng.standard_normal((6, 3))}
    path = _foreign_store(tmp_path / "d.zarr", layers, obs=np.array([0, 1, 2, 2, 4, 5]))
    with pytest.raises(StoreError, match="observation id 2 repeats"):
        rv2dist.similarity(path, path, align_obs=True)


def test_fingerprint_follows_content_not_times_or_copies(rng, tmp_path):
    path, layers = _chunked_store(tmp_path, rng)
    first = store_fingerprint(path)
    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)  # new modification times
    assert store_fingerprint(copy) == first
    times = {f: f.stat() for f in path.rglob("*")}
    changed = {name: value.copy() for name, value in layers.items()}
    changed["l1"][0, 0] += 1.0
    write_activations(path, changed, network="net", chunk_bytes=7 * 8 * 100, overwrite=True)
    for file, stat in times.items():
        if file.exists():
            os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store_fingerprint(path) != first


@pytest.mark.parametrize("route", ["feature", "gram"])
@pytest.mark.parametrize("center", [True, False])
def test_float32_activations_near_1e19_give_the_float64_answer(rng, route, center):
    """float32 products of such values overflow; the chunks are redone in float64, and
    the answer is the float64 one (every metric is scale-invariant)."""
    layers = relu_network(rng, 300, (6, 40))
    huge = {name: (value * 3e19).astype(np.float32) for name, value in layers.items()}
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(3e19) * np.float32(3e19))
    metrics = ["rv2", "rv", "cka", "cka_debiased"]
    got = rv2dist.similarity(huge, metric=metrics, route=route, center=center)
    assert got.attrs["precision"] == "float32"
    want = rv2dist.similarity(layers, metric=metrics, route=route, center=center, precision="float64")
    for metric in metrics:
        np.testing.assert_allclose(got[metric].values, want[metric].values, rtol=0, atol=1e-6)


# --- faults: real scheduler and worker processes, signals by pid ------------------------

from test_service import real_cluster  # noqa: E402,F401  (the fixture)


@pytest.fixture(scope="module")
def long_stores(tmp_path_factory):
    """Two stores of wide layers, written once for the tests that stop a long job (few,
    large chunks: written quickly)."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(20261126)
    for name in ("big1", "big2"):
        write_activations(folder / f"{name}.zarr", relu_network(rng, 20000, (600, 800, 1000), np.float32),
                          network=name, chunk_bytes=4_000_000)
    return folder


def _long_job(tmp_path, long_stores):
    """A job of several seconds of products (wide layers), its results in ``tmp_path``."""
    networks = "".join(f'{name} = "{long_stores / name}.zarr"\n' for name in ("big1", "big2"))
    path = tmp_path / "job.toml"
    path.write_text(f'plots = false\n[networks]\n{networks}[[compare]]\npairs = [["big1", "big2"]]\n'
                    '[[compare]]\nself = ["big1", "big2"]\n')
    return path


def _when_running(client, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any("rv2dist-" in str(k) for keys in client.processing().values() for k in keys):
            return
        time.sleep(0.05)
    raise AssertionError("the job's tasks never reached a worker")


@pytest.mark.slow
@pytest.mark.xdist_group("long_stores")  # one test process writes them once
def test_lost_scheduler_is_one_line_in_bounded_time(tmp_path, long_stores, real_cluster):
    client, scheduler_file, processes = real_cluster
    job = _long_job(tmp_path, long_stores)
    start = time.time()
    # (the client tries the lost scheduler again for rv2dist.scheduler-timeout seconds before it closes)
    run = subprocess.Popen([*RV2DIST, "run", str(job), "--scheduler-file", str(scheduler_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "DASK_RV2DIST__SCHEDULER_TIMEOUT": "3"})
    _when_running(client)
    os.kill(processes[0].pid, signal.SIGKILL)  # the scheduler
    _, errors = run.communicate(timeout=120)
    assert run.returncode == 1, errors
    assert time.time() - start < 90
    assert "Traceback" not in errors and "connection to the scheduler was lost" in errors
    assert "comparisons computed this run were saved in" in errors and "run the job again" in errors


@pytest.mark.slow
@pytest.mark.xdist_group("long_stores")  # one test process writes them once
def test_all_workers_dead_without_a_nanny_ends_the_wait(tmp_path, long_stores, real_cluster):
    client, scheduler_file, processes = real_cluster
    job = _long_job(tmp_path, long_stores)
    run = subprocess.Popen([*RV2DIST, "run", str(job), "--scheduler-file", str(scheduler_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "DASK_RV2DIST__NO_WORKERS_TIMEOUT": "3"})
    _when_running(client)
    for worker in processes[1:]:
        os.kill(worker.pid, signal.SIGKILL)
    _, errors = run.communicate(timeout=120)
    assert run.returncode == 1 and "Traceback" not in errors, errors
    assert "has had no worker for 3 s" in errors


@pytest.fixture
def mounted(tmp_path):
    """A tmpfs of a few kilobytes at a folder (read-only if asked); skips where this
    process may not mount."""
    mounts = []

    def mount(name, options):
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_and_full_output_folders_are_messages(rng, tmp_path, mounted):
    path, _ = _chunked_store(tmp_path, rng)
    read_only = mounted("ro", "ro,size=64k")
    _assert_clean_failure(run_cli("compare", path, "--out", read_only / "r.nc"),
                          str(read_only / "r.nc"), "Read-only file system")
    full = mounted("full", "size=16k")
    (full / "filler").write_bytes(b"x" * (16 * 1024 - 1024))
    for args in (("compare", path, "--out", full / "r.nc"), ("import", path, "--out", full / "copy.zarr")):
        done = run_cli(*args)
        _assert_clean_failure(done, "No space left on device")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # nothing partial left


def test_os_level_faults_on_the_command_line(rng, tmp_path):
    path, _ = _chunked_store(tmp_path, rng)
    folder = tmp_path / "taken.nc"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    _assert_clean_failure(run_cli("compare", path, "--out", folder), "taken.nc: is a folder")
    assert (folder / "keep.txt").read_text() == "mine"
    refused = run_cli("compare", path, "--out", path)
    _assert_clean_failure(refused, "is an activation store")
    assert "task/s" not in refused.stderr and len(refused.stderr.splitlines()) == 1  # refused before any work
    assert open_activations(path)["l0"].shape == (600, 5)
    not_json = tmp_path / "scheduler.json"
    not_json.write_text("this is not json")
    _assert_clean_failure(run_cli("compare", path, "--out", tmp_path / "r.nc", "--scheduler-file", not_json),
                          "error: " + str(not_json) + ": not a scheduler file")
    piped = subprocess.run(f"{sys.executable} -m rv2dist.cli info {path} | head -1", shell=True,
                           capture_output=True, text=True)
    assert piped.stdout.startswith("store") and piped.stderr == ""


# --- the dashboard page ---------------------------------------------------------------

HOSTILE = "<img src=x onerror=document.body.setAttribute('data-pwned','{}')>"


def test_dashboard_page_escapes_job_network_layer_names_and_errors(rng, tmp_path):
    from test_service import _chromium

    if not _chromium():
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    from distributed import Client, LocalCluster

    from rv2dist.service import dashboard
    from rv2dist.service import jobfile, runner

    layers = relu_network(rng, 300, (3, 4))
    hostile_layer = {"l0": layers["l0"], HOSTILE.format("layer"): layers["l1"]}
    write_activations(tmp_path / "ref.zarr", hostile_layer, network=HOSTILE.format("network"))
    broken = dict(hostile_layer)
    broken[HOSTILE.format("layer")] = np.where(np.arange(300)[:, None] == 7, np.nan, layers["l1"])
    write_unchecked(tmp_path / "bad.zarr", broken, network="bad")
    job_file = tmp_path / "job.toml"
    job_file.write_text(f'name = "{HOSTILE.format("job")}"\nplots = false\n[networks]\nref = "ref.zarr"\n'
                        'bad = "bad.zarr"\n[[compare]]\nself = ["ref"]\n[[compare]]\npairs = [["ref", "bad"]]\n')
    job = jobfile.load_job(job_file)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        with pytest.raises(jobfile.JobError, match="contains NaN"):
            runner.run_job(job, client, progress=False, stream=open(os.devnull, "w"))
        port = client.dashboard_link.split(":")[-1].split("/")[0]
        page = dashboard.page_link(f"http://127.0.0.1:{port}/status")
        dom = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=5000", "--dump-dom", page],
            capture_output=True, text=True, timeout=60,
        ).stdout
    drawn = dom.split("<script")[0]
    assert 'class="heatmap"' in drawn, drawn[:2000]
    assert "<img" not in drawn  # no element made from a name
    assert "<body data-pwned" not in dom and "<body" in dom  # and no handler ran
    for place in ("job", "network", "layer"):
        assert "&lt;img src=x onerror=document.body.setAttribute('data-pwned','" + place + "')&gt;" in drawn, place
    error_text = [line for line in drawn.split("<div") if "contains NaN" in line]
    assert error_text and "&lt;img" in error_text[0]
    report = subprocess.run(  # the job's offline report embeds the same names: escaped too
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'c2'}",
         "--virtual-time-budget=3000", "--dump-dom", (tmp_path / "results" / "report.html").as_uri()],
        capture_output=True, text=True, timeout=60).stdout
    assert "<body data-pwned" not in report and "<img" not in report.split("<script")[0]
    assert "&lt;img src=x onerror=document.body.setAttribute('data-pwned','layer')&gt;" in report


def test_dashboard_marks_a_vanished_client_stopped_and_counts_a_rerun_afresh():
    from distributed import Client, LocalCluster

    from rv2dist.service import dashboard

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        assert dashboard.install(client)
        board = cluster.scheduler.plugins["rv2dist"]
        leaving = Client(cluster)
        leaving.run_on_scheduler(dashboard.post_to_board, "j1", {
            "name": "j", "status": "running", "client": leaving.id,
            "comparisons": {"a__b": {"status": "running", "token": "t1"}}})
        board.finished_tasks["t1"] = {("rv2dist-chunk-t1", 0)}
        leaving.close()
        deadline = time.time() + 10
        while board.jobs["j1"]["status"] != "stopped" and time.time() < deadline:
            time.sleep(0.05)
        snapshot = board.snapshot()["jobs"][0]
        assert snapshot["status"] == "stopped" and snapshot["comparisons"][0]["status"] == "stopped"
        client.run_on_scheduler(dashboard.post_to_board, "j2", {
            "name": "j", "status": "running", "client": client.id,
            "comparisons": {"a__b": {"status": "running", "token": "t1", "tasks_total": 5}}})
        assert board.tasks_done("t1") == 0  # the same keys, counted again from zero


# --- job files and paths --------------------------------------------------------------

GOOD_NETWORKS = '[networks]\na = "a.zarr"\nb = "b.zarr"\n'


@pytest.mark.parametrize("text, named", [
    (GOOD_NETWORKS + '[[compare]]\npairz = [["a", "b"]]\n', "[[compare]] number 1 has unknown key 'pairz'"),
    (GOOD_NETWORKS + '[[compare]]\nself = "ab"\n', 'self must be a list of network names, as self = [\'ab\']'),
    (GOOD_NETWORKS + '[[compare]]\nreference = "a"\nagainst = "b"\n', "against must be a list"),
    (GOOD_NETWORKS + '[[compare]]\nagainst = ["b"]\nself = ["a"]\n', "against goes with reference"),
    (GOOD_NETWORKS + '[[compare]]\npairs = ["ab"]\n', "a pair needs two networks"),
    ('metrics = []\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "metrics is empty"),
    ('metrics = 3\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "metrics must be a list of metric names"),
    ('center = "yes"\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "center must be true or false"),
    ('name = 3\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "name must be a string"),
    ('[networks]\na = 3\n[[compare]]\nself = ["a"]\n', "[networks] a must be a store path"),
    ('out = "/tmp/elsewhere"\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "leaves the job's folder"),
    ('out = "../up"\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n', "leaves the job's folder"),
    ('compare = 1\n' + GOOD_NETWORKS, "compare must be [[compare]] tables"),
    (GOOD_NETWORKS + '[[compare]]\npairs = 5\n',
     '[[compare]] number 1: pairs must be a list of two-name lists, as [["a", "b"]], not 5'),
    (GOOD_NETWORKS + '[[compare]]\nreference = "a"\nagainst = 5\n',
     '[[compare]] number 1: against must be "all" or a list of network names, not 5'),
    (GOOD_NETWORKS + '[[compare]]\nself = 5\n', "self must be a list of network names, not 5"),
    (GOOD_NETWORKS + '[[compare]]\nreference = 5\n', "reference must be a network name in quotes, not 5"),
    (GOOD_NETWORKS + '[[compare]]\nreference = "a"\nagainst = []\n',
     "[[compare]] number 1: against is empty, which makes no comparison"),
    (GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n[[compare]]\npairs = []\n',
     "[[compare]] number 2: pairs is empty, which makes no comparison"),
    (GOOD_NETWORKS + '[[compare]]\nself = []\n', "self is empty, which makes no comparison"),
    ('[networks]\na = "a.zarr"\n[[compare]]\nreference = "a"\n',
     "reference 'a' has no other network to compare against"),
    ('metrics = ["cca", "rv2", "ridge"]\nroute = "gram"\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n',
     'route = "gram" sums no p x p blocks, which metrics cca, ridge need'),
    ('metrics = ["cca", "rv2_null"]\ntests = true\n' + GOOD_NETWORKS + '[[compare]]\nself = ["a"]\n',
     "none of the metrics asked for (cca, rv2_null) has them"),
    ('[networks]\na__b = "a.zarr"\nc = "c.zarr"\na = "a.zarr"\nb__c = "b.zarr"\n'
     '[[compare]]\npairs = [["a__b", "c"], ["a", "b__c"]]\n',
     "comparisons 'a__b' against 'c' and 'a' against 'b__c' would both be called 'a__b__c'"),
])
def test_job_file_faults_name_the_file_and_key(tmp_path, text, named):
    from rv2dist.service import jobfile

    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(jobfile.JobError, match=None) as caught:
        jobfile.load_job(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_every_job_key_and_metric_is_in_the_keys_table_of_jobs_md():
    from pathlib import Path

    from rv2dist.core.measures import MEASURES
    from rv2dist.service.jobfile import JOB_KEYS

    rows = [line for line in (Path(__file__).parents[1] / "docs" / "jobs.md").read_text().splitlines()
            if line.startswith("| `")]
    documented = {line.split("`")[1].strip("[]") for line in rows}
    assert set(JOB_KEYS) <= documented, set(JOB_KEYS) - documented
    metrics_row = next(line for line in rows if line.startswith("| `metrics` |"))
    assert all(f"`{name}`" in metrics_row for name in MEASURES), metrics_row


def test_a_job_file_with_a_byte_order_mark_is_read(tmp_path):
    from rv2dist.service import jobfile

    path = tmp_path / "job.toml"
    path.write_text("\ufeff" + GOOD_NETWORKS + '[[compare]]\nreference = "a"\n', encoding="utf-8")
    job = jobfile.load_job(path)
    assert [c.name for c in job.comparisons] == ["a__b"] and job.networks["a"] == tmp_path / "a.zarr"


def test_job_faults_exit_2_before_any_cluster_starts(tmp_path):
    (tmp_path / "job.toml").write_text(GOOD_NETWORKS + '[[compare]]\nself = "ab"\n')
    done = run_cli("run", tmp_path / "job.toml")
    _assert_clean_failure(done, "self must be a list")
    assert "dashboard" not in done.stdout and not (tmp_path / "results").exists()


def test_a_job_that_cannot_plan_leaves_no_results_folder(rng, tmp_path):
    write_activations(tmp_path / "a.zarr", relu_network(rng, 3, (2,)))
    (tmp_path / "job.toml").write_text('metrics = ["cka_debiased"]\n[networks]\na = "a.zarr"\n'
                                       '[[compare]]\nself = ["a"]\n')
    _assert_clean_failure(run_cli("run", tmp_path / "job.toml"), "cka_debiased needs at least 4 observations")
    assert not (tmp_path / "results").exists()


def test_network_names_cannot_place_files_outside_the_results_folder(rng, tmp_path):
    from rv2dist.service import jobfile

    jobs_folder = tmp_path / "project"
    jobs_folder.mkdir()
    write_activations(jobs_folder / "a.zarr", relu_network(rng, 50, (3,)))
    (jobs_folder / "job.toml").write_text('plots = true\n[networks]\n"../../escaped" = "a.zarr"\n'
                                          '"a/b" = "a.zarr"\n[[compare]]\nself = ["../../escaped", "a/b"]\n')
    done = run_cli("run", jobs_folder / "job.toml", "--no-progress")
    assert done.returncode == 0, done.stderr
    results = jobs_folder / "results"
    job_files = {"combined.nc", "report.html"}
    written = sorted(p.name for p in results.iterdir() if p.name not in job_files)
    assert job_files <= {p.name for p in results.iterdir()}
    # one store under two names: the same task keys, and still both results
    assert len(written) == 4 and all(name.endswith((".nc", ".png")) for name in written)
    assert rv2dist.open_results(results).sizes["comparison"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert sorted(p.name for p in jobs_folder.iterdir()) == ["a.zarr", "job.toml", "results"]
    job = jobfile.load_job(jobs_folder / "job.toml")
    names = [job.result_path(c).name for c in job.comparisons]
    assert len(set(names)) == 2 and all("/" not in n and not n.startswith(".") for n in names)
    elsewhere = tmp_path / "chosen"
    assert run_cli("run", jobs_folder / "job.toml", "--out", elsewhere, "--no-progress").returncode == 0
    assert len(list(elsewhere.glob("*__*.nc"))) == 2


def test_smaller_faults_are_messages(rng, tmp_path):
    path, _ = _chunked_store(tmp_path, rng)
    _assert_clean_failure(run_cli("plot", path, "--out", tmp_path / "p.png"), "net.zarr: not an rv2dist result")
    assert not (tmp_path / "p.png").exists()
    with pytest.raises(ValueError, match="memory_budget must be a positive number of bytes or a size such as "
                                         "'4GB', got -1"):
        rv2dist.similarity(path, memory_budget=-1)
    for text in ("lots", "0B", "-1GB"):
        with pytest.raises(ValueError, match=f"got '{text}'"):
            rv2dist.similarity(path, memory_budget=text)
    # a size as dask writes it is the same budget as its bytes
    assert rv2dist.plan(path, memory_budget="64kiB") == rv2dist.plan(path, memory_budget=64 * 1024)
    assert "of a 64 KiB budget" in str(rv2dist.plan(path, memory_budget="64kiB"))
    with pytest.raises(ValueError, match="layer 'maps': channel_axis 7 is out of range for shape"):
        rv2dist.preprocess({"maps": np.zeros((4, 3, 2, 2))}, pool=True, channel_axis=7)
    np.savez(tmp_path / "maps.npz", maps=rng.standard_normal((6, 3, 2, 2)))
    _assert_clean_failure(run_cli("import", tmp_path / "maps.npz", "--out", tmp_path / "m.zarr", "--pool",
                               "--channel-axis", "4"), "layer 'maps': channel_axis 4 is out of range")
    nan_maps = rng.standard_normal((6, 3, 2, 2))
    nan_maps[4, 1, 0, 1] = np.nan
    np.savez(tmp_path / "nan.npz", maps=nan_maps)
    _assert_clean_failure(run_cli("import", tmp_path / "nan.npz", "--out", tmp_path / "n.zarr"),
                          "n.zarr: layer 'maps' holds nan at observation 4 (id 4); activations must be finite")
    assert not (tmp_path / "n.zarr").exists() and not (tmp_path / "m.zarr").exists()


def test_api_options_are_checked_not_guessed(rng):
    layers = {"ab": rng.standard_normal((30, 3)), "a": rng.standard_normal((30, 2)), "b": rng.standard_normal((30, 4))}
    picked = rv2dist.similarity(layers, layers="ab")
    assert list(picked.layer_a.values) == ["ab"]  # one name, not the letters a and b
    for options, message in (({"layers": []}, "layers is empty"), ({"layers": ["a", "a"]}, "names 'a' twice"),
                             ({"center": "no"}, "center must be True or False"),
                             ({"metric": None}, "metric must be a metric name"),
                             ({"align_obs": True, "b": layers}, "align_obs=True needs observation ids")):
        with pytest.raises((TypeError, ValueError), match=message):
            rv2dist.similarity(layers, **options)
    with pytest.raises(ValueError, match="layer 'r' is not an array of one shape"):
        rv2dist.similarity({"r": [[1.0, 2.0], [3.0]]})


@pytest.mark.slow
@pytest.mark.xdist_group("long_stores")  # one test process writes them once
def test_ctrl_c_stops_a_job_with_one_line_and_exit_130(tmp_path, long_stores):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: the embedded
    cluster's workers stay quiet, the job says what was saved, nothing partial is left."""
    job = _long_job(tmp_path, long_stores)
    run = subprocess.Popen([*RV2DIST, "run", str(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in run.stdout:
        if "to compute" in line:
            break
    time.sleep(1.0)
    os.killpg(run.pid, signal.SIGINT)
    _, errors = run.communicate(timeout=120)
    assert run.returncode == 130, errors
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors[-3000:]
    assert "rv2dist run: interrupted;" in errors and "run the job again to resume" in errors
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_command_line_conventions(rng, tmp_path):
    # `python -m rv2dist`, a real process, and three on the embedded cluster at once, as a user runs them:
    # progress with an ETA by default (a line per tenth off a terminal), none with -q; the embedded
    # cluster's log lines (its worker processes' too) only with -v
    path, _ = _chunked_store(tmp_path, rng)
    version, default, quiet, verbose = _processes(
        ["-m", "rv2dist", "--version"], [*RV2DIST[1:], "compare", path, "--out", tmp_path / "d.nc"],
        [*RV2DIST[1:], "-q", "compare", path, "--out", tmp_path / "q.nc"],
        [*RV2DIST[1:], "-v", "compare", path, "--out", tmp_path / "v.nc"])
    assert version.returncode == 0 and version.stdout.strip() == f"rv2dist {rv2dist.__version__}"
    done = run_cli("compare", path, "--out", tmp_path / "r.nc", "--precision", "float64", "--memory-budget", "64MB",
                   "--metric", "rv2", "cka")
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path / "r.nc")
    assert result.attrs["precision"] == "float64"
    want = rv2dist.similarity(path, metric=["rv2", "cka"], precision="float64")
    np.testing.assert_allclose(result["cka"].values, want["cka"].values, rtol=0, atol=1e-12)
    _assert_clean_failure(run_cli("compare", path, "--out", tmp_path / "s.nc", "--memory-budget", "-3"),
                          "not a positive number of bytes")
    helps = run_cli("compare", "--help").stdout
    assert "--precision" in helps and "--memory-budget" in helps
    assert "compare: 100%" in default.stderr and "<00:00" in default.stderr and "distributed." not in default.stderr
    assert quiet.stderr == ""
    assert "distributed.scheduler" in verbose.stderr


def _processes(*argvs):
    """``python ARGV`` for each of ``argvs``, all started at once; their CompletedProcesses."""
    started = [subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for argv in argvs]
    outputs = [process.communicate(timeout=300) for process in started]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(started, outputs)]
