"""Damaged, malformed and raced stores: every chunk read is checked against the checksum
the writer recorded, so damage is an error naming the store, layer, chunk and rows, never
other numbers; malformed attributes, writers used after close, interrupted or concurrent
writes, and workers in other folders are clear messages, with nothing left behind."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import rv2dist
from conftest import relu_network, run_cli
from rv2dist.io.checksums import verified_checksums
from rv2dist.io.errors import StoreError
from rv2dist.io.reader import describe, open_activations, store_fingerprint
from rv2dist.io.results import read_result
from rv2dist.io.schema import observation_ids
from rv2dist.io.writer import ActivationWriter, write_activations
from rv2dist import cli
from rv2dist.service import jobfile, runner

RV2DIST = [sys.executable, "-m", "rv2dist.cli"]
CHUNK_1 = r"layer 'l1', chunk 1 \(rows 1,000 to 1,999\), "
DAMAGED = CHUNK_1 + r"(does not match the checksum written with it|cannot be read).*the store is damaged"


def _store(path, rng, n=3000, zarr_format=3):
    """Three row chunks of 1,000 rows, float32 ReLU layers."""
    layers = relu_network(rng, n, (20, 40), np.float32)
    write_activations(path, layers, network=path.stem, chunk_bytes=40 * 4 * 1000, zarr_format=zarr_format)
    return layers


def _damage(path, how):
    """Damage the stored chunk of rows 1,000 to 1,999 of layer l1 as a disk or a careless
    tool would: the file cut to half or short by 16 bytes, its body garbled behind an
    intact header, or rows rewritten with zarr (NaN: values no layer had)."""
    if how == "rewritten with zarr":
        zarr.open_array(path / "l1", mode="r+")[1000:1500] = np.nan
        return
    chunk = next(p for p in (path / "l1" / "c" / "1" / "0", path / "l1" / "1.0") if p.exists())
    data = bytearray(chunk.read_bytes())
    if how == "cut to half":
        data = data[: len(data) // 2]
    elif how == "short by 16 bytes":
        data = data[:-16]
    else:  # bytes flipped behind the 16-byte Blosc header, which still gives the right size
        for i in np.random.default_rng(1).integers(64, len(data), 20):
            data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))


DAMAGES = ["cut to half", "short by 16 bytes", "garbled body", "rewritten with zarr"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_chunk_is_an_error_naming_it_on_every_read(rng, tmp_path, how):
    path = tmp_path / "net.zarr"
    _store(path, rng)
    _damage(path, how)
    with pytest.raises(StoreError, match=DAMAGED) as caught:
        rv2dist.similarity(path)  # the chunk tasks read their rows, decoded from the files
    assert "NaN" not in str(caught.value)  # the damaged chunk is blamed, not the layer's values
    with pytest.raises(StoreError, match=DAMAGED):
        open_activations(path)["l1"][1500:1600].values  # dask's reads: a part of the chunk
    with pytest.raises(StoreError, match=DAMAGED):
        rv2dist.similarity(path, bootstrap=41)  # read by tasks of their own, shared by the replicates
    with pytest.raises(StoreError, match=DAMAGED):
        rv2dist.convert(path, tmp_path / "copy.zarr")
    assert not (tmp_path / "copy.zarr").exists()


def test_a_damaged_chunk_of_a_zarr_v2_store_or_of_its_ids_is_named(rng, tmp_path):
    """Stores whose chunks zarr decodes (format 2, other codecs): each chunk read whole
    and checked; the observation ids are checked when the store is opened."""
    path = tmp_path / "v2.zarr"
    _store(path, rng, zarr_format=2)
    _damage(path, "garbled body")
    with pytest.raises(StoreError, match=DAMAGED):
        rv2dist.similarity(path)
    ids = tmp_path / "ids.zarr"
    _store(ids, rng)
    zarr.open_array(ids / "obs", mode="r+")[5] = 10**6  # still unique, so nothing else sees it
    with pytest.raises(StoreError, match=r"observation ids, chunk 0 \(rows 0 to 999\), does not match the "
                                               r"checksum written with it"):
        rv2dist.similarity(ids)


def test_a_store_of_another_tool_reads_through_zarrs_decoding_and_names_a_bad_chunk(rng, tmp_path):
    path = tmp_path / "foreign.zarr"
    layers = relu_network(rng, 3000, (20, 40), np.float32)
    xr.Dataset({name: (("obs", f"{name}_unit"), value) for name, value in layers.items()}).chunk(
        {"obs": 1000}).to_zarr(path, zarr_format=3, consolidated=False)
    assert verified_checksums(path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing about the store's unconsolidated metadata either
        read = rv2dist.similarity(path)
    np.testing.assert_allclose(read.values, rv2dist.similarity(layers).values, atol=1e-12)
    _damage(path, "cut to half")
    with pytest.raises(StoreError, match=CHUNK_1 + r"cannot be read \(RuntimeError: Zstd"):
        rv2dist.similarity(path)


def test_a_rerun_notices_a_chunk_rewritten_with_zarr(rng, tmp_path):
    """The store's metadata and recorded checksums stay as they were: a job rerun reads the
    stores of the results it would keep, and names the changed chunk instead."""
    from distributed import Client, LocalCluster
    from test_service import _write_job

    for name in ("a", "b"):
        _store(tmp_path / f"{name}.zarr", rng)
    job_file = _write_job(tmp_path, ["a", "b"], [{"pairs": [["a", "b"]]}], plots=False)
    result = tmp_path / "results" / "a__b.nc"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=open(os.devnull, "w"))
        written = result.stat().st_mtime_ns
        shutil.copytree(tmp_path / "b.zarr", tmp_path / "b2.zarr")  # a copy and a touch are no change
        shutil.rmtree(tmp_path / "b.zarr")
        (tmp_path / "b2.zarr").rename(tmp_path / "b.zarr")
        os.utime(tmp_path / "b.zarr" / "l1" / "c" / "1" / "0")
        summary = runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=open(os.devnull, "w"))
        assert summary.computed == () and summary.skipped == ("a__b",)
        before = store_fingerprint(tmp_path / "b.zarr")
        zarr.open_array(tmp_path / "b.zarr" / "l1", mode="r+")[1000:2000] *= 2
        assert store_fingerprint(tmp_path / "b.zarr") == before  # metadata and record unchanged
        with pytest.raises(StoreError, match=f"{tmp_path / 'b.zarr'}: " + CHUNK_1 + "does not match"):
            runner.run_job(jobfile.load_job(job_file), client, progress=False, stream=open(os.devnull, "w"))
    assert result.stat().st_mtime_ns == written


# --- a real cluster whose processes run in another folder ------------------------------

@pytest.fixture(scope="module")
def cluster_elsewhere(tmp_path_factory):
    """A `dask scheduler` and a `dask worker` process started in a folder of their own:
    they resolve relative paths against it, not against the client's."""
    folder = tmp_path_factory.mktemp("cluster-folder")
    root = str(Path(rv2dist.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    scheduler_file = folder / "scheduler.json"
    started = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                                 str(scheduler_file)], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    started.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                     str(scheduler_file), "--nthreads", "2", "--no-nanny", "--host", "127.0.0.1"],
                                    cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout="30s") as client:
        client.wait_for_workers(1, timeout=60)
        address = client.scheduler.address
    yield address
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.xdist_group("cluster_elsewhere")  # one test process starts it once
def test_damage_on_a_cluster_of_other_processes(rng, tmp_path, cluster_elsewhere, capsys):
    for how in DAMAGES:
        path = tmp_path / f"{how.replace(' ', '-')}.zarr"
        _store(path, rng)
        _damage(path, how)
        assert cli.main(["-q", "compare", str(path), "--out", str(tmp_path / "r.nc"),
                         "--scheduler", cluster_elsewhere]) == 2
        error = capsys.readouterr().err
        assert f"{path}: layer 'l1', chunk 1 (rows 1,000 to 1,999), " in error and "damaged" in error, error
        assert "NaN" not in error and not (tmp_path / "r.nc").exists()


@pytest.mark.slow
def test_damage_in_a_job_on_a_local_cluster(rng, tmp_path):
    from test_service import _write_job

    names = [how.replace(" ", "-") for how in DAMAGES]
    for name, how in zip(names, DAMAGES):
        _store(tmp_path / f"{name}.zarr", rng)
        _damage(tmp_path / f"{name}.zarr", how)
    job = _write_job(tmp_path, names, [{"self": names}], plots=False)
    done = run_cli("run", job, "--no-progress")  # the damage found by worker processes
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{len(names)} comparison(s) failed" in done.stderr
    for name in names:
        assert f"FAILED {name}__{name}: StoreError: {tmp_path / name}.zarr: layer 'l1', chunk 1" in done.stdout
    assert not list((tmp_path / "results").glob("*__*"))


@pytest.mark.slow
@pytest.mark.xdist_group("cluster_elsewhere")  # one test process starts it once
def test_relative_paths_on_a_cluster_started_elsewhere(rng, tmp_path, cluster_elsewhere, capsys, monkeypatch):
    """Store and output paths relative to the client's folder (the command line's, the job
    file's, the demo's default) reach workers whose folder is another; a store missing
    where a task runs is said to be missing, not damaged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stores").mkdir()
    _store(tmp_path / "stores" / "a.zarr", rng)
    scheduler = ["--scheduler", cluster_elsewhere]
    assert cli.main(["-q", "compare", "stores/a.zarr", "--out", "a.nc", *scheduler]) == 0, capsys.readouterr().err
    np.testing.assert_allclose(read_result(tmp_path / "a.nc").rv2.values,
                               rv2dist.similarity(tmp_path / "stores" / "a.zarr").values, atol=1e-12)
    (tmp_path / "stores" / "job.toml").write_text('plots = false\n[networks]\na = "a.zarr"\n[[compare]]\nself = ["a"]\n')
    assert cli.main(["-q", "run", "stores/job.toml", *scheduler]) == 0, capsys.readouterr().err
    assert (tmp_path / "stores" / "results" / "a__a.nc").exists()
    assert cli.main(["-q", "demo", "--n-obs", "60", *scheduler]) == 0, capsys.readouterr().err
    demo = tmp_path / "rv2dist-demo"
    assert sorted(p.name for p in demo.iterdir()) == ["drifted.zarr", "result.nc", "rv2.png", "standard.zarr"]
    # an earlier demo is replaced only when asked, and nothing is touched before
    times = {p: p.stat().st_mtime_ns for p in demo.rglob("*")}
    capsys.readouterr()
    assert cli.main(["-q", "demo", "--n-obs", "80", *scheduler]) == 2
    assert "holds an earlier demo's standard.zarr, drifted.zarr, result.nc, rv2.png; pass --overwrite" in \
        capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*")} == times
    assert cli.main(["-q", "demo", "--n-obs", "80", "--overwrite", *scheduler]) == 0
    assert read_result(demo / "result.nc").attrs["rv2dist_version"] and \
        open_activations(demo / "standard.zarr").sizes["obs"] == 80
    # the store gone between opening and reading: missing where the task runs
    lazy = rv2dist.similarity("stores/a.zarr", compute=False)
    shutil.move(tmp_path / "stores" / "a.zarr", tmp_path / "moved.zarr")
    from distributed import Client

    with Client(cluster_elsewhere) as client, pytest.raises(StoreError) as caught:
        client.compute(lazy).result()
    assert "no such store where this task runs" in str(caught.value) and "damaged" not in str(caught.value)


# --- writers: use after close, Ctrl-C, two at once ------------------------------------

def test_a_writer_is_refused_after_close_or_abort_and_leaves_nothing(rng, tmp_path):
    batch = relu_network(rng, 10, (3,))
    for finish in ("close", "abort"):
        path = tmp_path / f"{finish}.zarr"
        writer = ActivationWriter(path)
        writer.append(batch)
        getattr(writer, finish)()
        done = "closed: the store was written" if finish == "close" else "discarded: nothing was kept"
        with pytest.raises(StoreError, match=f"this writer is {done}; write with a new ActivationWriter"):
            writer.append(batch)
        if finish == "abort":
            with pytest.raises(StoreError, match="discarded"):
                writer.close()
        writer.close() if finish == "close" else writer.abort()  # closing twice, aborting twice: nothing
        assert [p.name for p in tmp_path.iterdir()] == ["close.zarr"]
    assert open_activations(tmp_path / "close.zarr").sizes["obs"] == 10
    with ActivationWriter(tmp_path / "again.zarr") as writer:
        writer.append(batch)
        writer.abort()  # discarded inside the block: leaving it writes nothing
    assert not (tmp_path / "again.zarr").exists() and len(list(tmp_path.iterdir())) == 1


def test_a_store_that_appears_while_another_is_written_is_not_replaced(rng, tmp_path, capsys):
    """Two writes to one path without overwrite, at once: both pass the check at the
    start; the one that finishes second refuses to replace the other's store."""
    path = tmp_path / "net.zarr"
    first = ActivationWriter(path)
    first.append(relu_network(rng, 20, (3,)))
    np.savez(tmp_path / "other.npz", **relu_network(np.random.default_rng(5), 30, (4,)))
    assert cli.main(["import", str(tmp_path / "other.npz"), "--out", str(path)]) == 0  # finishes first
    with pytest.raises(StoreError, match="net.zarr appeared while this store was written .* pass "
                                               r"overwrite=True \(--overwrite\) to replace it"):
        first.close()
    assert open_activations(path).sizes["obs"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.zarr", "other.npz"]
    writer = ActivationWriter(tmp_path / "net.zarr", overwrite=True)  # asked to replace: it does
    writer.append(relu_network(rng, 20, (3,)))
    writer.close()
    assert open_activations(path).sizes["obs"] == 20


@pytest.mark.slow
def test_ctrl_c_during_import_leaves_nothing_and_exits_130(rng, tmp_path):
    """SIGINT to real `rv2dist import` processes at several instants of their writes:
    zarr's own writes are waited for, then the partial store is removed."""
    source = tmp_path / "acts"
    source.mkdir()
    for name, width in (("l0", 256), ("l1", 512)):
        np.save(source / f"{name}.npy", rng.random((24000, width), dtype=np.float32))
    delays = (0.0, 0.01, 0.03, 0.06)
    outcomes = {}

    def interrupt(delay):
        folder = tmp_path / f"after-{delay}"
        folder.mkdir()
        process = subprocess.Popen([*RV2DIST, "import", str(source), "--out", str(folder / "x.zarr")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not list(folder.glob(".x.zarr.partial-*")) and process.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=120)
        outcomes[delay] = (process.returncode, errors, sorted(p.name for p in folder.iterdir()))

    threads = [threading.Thread(target=interrupt, args=(delay,)) for delay in delays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for delay, (code, errors, left) in outcomes.items():
        assert "Traceback" not in errors, (delay, errors[-2000:])
        if left:  # interrupted after the store was complete: it is whole
            assert left == ["x.zarr"], (delay, left, errors)
            assert open_activations(tmp_path / f"after-{delay}" / "x.zarr").sizes["obs"] == 24000
        else:
            assert code == 130 and "rv2dist import: interrupted" in errors, (delay, code, errors)


# --- malformed attributes and inputs ---------------------------------------------------

def _set_attr(path, key, value):
    group = zarr.open_group(path, mode="r+")
    group.attrs[key] = value
    zarr.consolidate_metadata(path)


def _complex_metadata(path):
    for file in (path / "zarr.json", path / "l0" / "zarr.json"):
        file.write_text(file.read_text().replace('"float32"', '"complex64"', 1))


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
@pytest.mark.parametrize("edit, named", [
    (lambda p: _set_attr(p, "rv2dist_checksums", "not json"), "attribute 'rv2dist_checksums' is malformed (not JSON"),
    (lambda p: _set_attr(p, "rv2dist_checksums", 5), "attribute 'rv2dist_checksums' is malformed (5 is no table"),
    (lambda p: _set_attr(p, "rv2dist_checksums", '{"l0": [1, 2], "l1": [1, 2, 3], "obs": [1, 2, 3]}'),
     "attribute 'rv2dist_checksums' is malformed (it lists 2 chunks of 'l0', which has 3)"),
    (lambda p: _set_attr(p, "rv2dist_checksums", '{"l0": ["x"]}'),
     "attribute 'rv2dist_checksums' is malformed (the entry of 'l0' is ['x'], not a list of CRC-32C values)"),
    (lambda p: _set_attr(p, "layers", "l0"), "attribute 'layers' must list the layer names in depth order, not 'l0'"),
    (lambda p: _set_attr(p, "layers", 5), "attribute 'layers' must list the layer names in depth order, not 5"),
    (lambda p: _set_attr(p, "layers", ["l0", "l0"]), "attribute 'layers' names layer 'l0' twice"),
    (_complex_metadata, "array 'l0' declares data_type 'complex64' in zarr.json (complex)"),
])
def test_malformed_store_attributes_name_the_store_and_attribute(rng, tmp_path, edit, named):
    path = tmp_path / "net.zarr"
    _store(path, rng)
    edit(path)
    for call in (rv2dist.similarity, describe):
        with pytest.raises(StoreError) as caught:
            call(path)
        assert str(caught.value).startswith(f"{path}: ") and named in str(caught.value), caught.value


def test_layers_as_a_plain_list_and_ids_of_mixed_kinds_are_named(rng, tmp_path):
    arrays = [rng.standard_normal((6, 3)), rng.standard_normal((6, 2))]
    with pytest.raises(TypeError, match=r"layers must be a mapping \{layer name: array\}, not a list "
                                        r"\(a list of arrays: dict\(zip\(names, arrays\)\)\)"):
        rv2dist.write_activations(tmp_path / "list.zarr", arrays)
    nested = arrays[0].tolist()
    rv2dist.write_activations(tmp_path / "nested.zarr", {"l0": nested})  # a layer as nested lists
    np.testing.assert_array_equal(open_activations(tmp_path / "nested.zarr")["l0"].values, arrays[0])
    layer = {"l0": arrays[0]}
    for ids, message in ((np.array([0, "a", 2, "b", 4, "c"], dtype=object), "mix integers, strings"),
                         ([0, 1.5, None, 3, 4, 5], "mix NoneType, floats, integers"),
                         ([(0, 1)] * 6, r"must be one value per observation, not an array of shape \(6, 2\)"),
                         (np.arange(6).astype("datetime64[D]"), "of dtype datetime64\\[D\\] cannot be stored")):
        with pytest.raises(StoreError, match="observation ids " + message):
            rv2dist.write_activations(tmp_path / "ids.zarr", layer, obs=ids)
    with pytest.raises(StoreError, match="this batch's observation ids are strings, the first batch's "
                                         "integers"), ActivationWriter(tmp_path / "batches.zarr") as writer:
        writer.append({"l0": arrays[0][:3]}, obs=[0, 1, 2])
        writer.append({"l0": arrays[0][3:]}, obs=["a", "b", "c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nested.zarr"]
    rv2dist.write_activations(tmp_path / "objects.zarr", layer, obs=np.array(["a", "b", "c", "d", "e", "f"], object))
    assert list(observation_ids(open_activations(tmp_path / "objects.zarr"))) == list("abcdef")
    # bytes ids longer than the first chunk's: kept whole, as text
    long_ids = [b"x" * (i + 1) for i in range(6)]
    rv2dist.write_activations(tmp_path / "bytes.zarr", layer, obs=long_ids, chunk_bytes=2 * 3 * 8)
    assert list(observation_ids(open_activations(tmp_path / "bytes.zarr"))) == \
        [i.decode() for i in long_ids]
