"""Streaming writer, preprocessing transforms, numpy import and alignment by id."""

import time
import tracemalloc

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import rv2dist
from conftest import relu_network, run_cli
from reference import dense_matrix
from rv2dist.io.checksums import verified_checksums
from rv2dist.io.chunks import StoredLayer, StoredRows, _blosc_only, stored_rows
from rv2dist.io.errors import StoreError
from rv2dist.io.reader import open_activations
from rv2dist.io.schema import COMPLETE_ATTR, validate_dataset
from rv2dist.core import preprocess as transforms
from rv2dist.engine.buffers import KEPT_BUFFERS, KeptBuffers


def _batches(n, sizes):
    start = 0
    for size in sizes:
        if start >= n:
            return
        yield start, min(n, start + size)
        start += size
    if start < n:
        yield start, n


def test_writer_streams_batches_into_one_chunking(rng, tmp_path):
    layers = {"conv": rng.standard_normal((500, 3, 4, 2)).astype(np.float32), "fc": rng.standard_normal((500, 9))}
    ids = np.array([f"img{i:04d}" for i in range(500)])
    with rv2dist.ActivationWriter(tmp_path / "s.zarr", network="net", rows_per_chunk=64, attrs={"seed": 3}) as w:
        for start, stop in _batches(500, [1, 63, 200, 7, 0, 100]):
            w.append({k: v[start:stop] for k, v in layers.items()}, obs=ids[start:stop])
        assert not (tmp_path / "s.zarr").exists()  # nothing at the path before close
    opened = rv2dist.open_activations(tmp_path / "s.zarr")
    assert opened.attrs["network"] == "net" and opened.attrs["seed"] == 3
    assert list(opened.attrs["layers"]) == ["conv", "fc"]
    assert np.array_equal(opened.obs.values, ids)
    for name, array in layers.items():
        assert np.array_equal(opened[name].values, array)
        assert set(opened[name].data.chunks[0][:-1]) == {64}
    got = rv2dist.similarity(tmp_path / "s.zarr", metric="cka")
    assert np.array_equal(got.values, rv2dist.similarity(layers, metric="cka").values) or np.allclose(
        got.values, rv2dist.similarity(layers, metric="cka").values, rtol=0, atol=1e-13)


def test_writer_memory_does_not_grow_with_observations(tmp_path):
    """200,000 observations x 3 layers (1,024 units, 820 MB as float32) streamed in batches
    of 2,000: tracemalloc's peak stays near one chunk per layer."""
    widths = (256, 256, 512)
    batch = 2000
    rng = np.random.default_rng(1)
    template = {f"l{i}": rng.standard_normal((batch, w)).astype(np.float32) for i, w in enumerate(widths)}
    with rv2dist.ActivationWriter(tmp_path / "warm.zarr") as writer:  # imports stay out of the count
        writer.append(template)
    tracemalloc.start()
    with rv2dist.ActivationWriter(tmp_path / "big.zarr", chunk_bytes=8 * 2**20) as writer:
        for _ in range(100):
            writer.append(template)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full = 200_000 * sum(widths) * 4
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB for {full / 2**20:.0f} MiB of data"
    assert rv2dist.open_activations(tmp_path / "big.zarr").sizes["obs"] == 200_000


def test_interrupted_writer_leaves_no_store(rng, tmp_path):
    layers = relu_network(rng, 100, (3,))
    with pytest.raises(RuntimeError):
        with rv2dist.ActivationWriter(tmp_path / "x.zarr", rows_per_chunk=16) as writer:
            writer.append(layers)
            raise RuntimeError("recording crashed")
    assert not list(tmp_path.iterdir())
    # a process killed mid-write leaves only its hidden partial: refused on open
    killed = rv2dist.ActivationWriter(tmp_path / "y.zarr", rows_per_chunk=16)
    killed.append(layers)
    with pytest.raises(StoreError, match="interrupted"):
        rv2dist.open_activations(tmp_path / "y.zarr")
    killed.abort()
    with pytest.raises(StoreError, match="no such activation store"):
        rv2dist.open_activations(tmp_path / "y.zarr")


def test_writer_rejects_inconsistent_batches(rng, tmp_path):
    with pytest.raises(StoreError, match="'b' changed between batches"):
        with rv2dist.ActivationWriter(tmp_path / "a.zarr") as writer:
            writer.append({"a": np.ones((4, 2)), "b": np.ones((4, 3))})
            writer.append({"a": np.ones((4, 2)), "b": np.ones((4, 5))})
    with pytest.raises(StoreError, match="layer 'b' has 3 observations but layer 'a' has 4"):
        rv2dist.ActivationWriter(tmp_path / "b.zarr").append({"a": np.ones((4, 2)), "b": np.ones((3, 2))})
    with pytest.raises(StoreError, match="observation id 'x' repeats"):
        with rv2dist.ActivationWriter(tmp_path / "c.zarr") as writer:
            writer.append({"a": np.ones((2, 2))}, obs=["x", "y"])
            writer.append({"a": np.ones((2, 2))}, obs=["z", "x"])
    with pytest.raises(StoreError, match="no observations"):
        with rv2dist.ActivationWriter(tmp_path / "d.zarr"):
            pass
    with pytest.raises(StoreError, match="dtype <U1"):
        rv2dist.ActivationWriter(tmp_path / "e.zarr").append({"a": np.array([["x"]])})
    rv2dist.write_activations(tmp_path / "f.zarr", {"a": np.ones((3, 1))})
    with pytest.raises(StoreError, match="f.zarr already exists"):
        rv2dist.ActivationWriter(tmp_path / "f.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_schema_faults_are_named(rng, tmp_path):
    xr.Dataset({"c1": (("row", "unit"), np.ones((5, 2)))}).to_zarr(tmp_path / "noobs.zarr")
    with pytest.raises(StoreError, match="noobs.zarr: has no 'obs' dimension"):
        rv2dist.open_activations(tmp_path / "noobs.zarr")
    uneven = xr.Dataset({"c1": (("obs", "u"), np.ones((5, 2))), "c2": (("time", "v"), np.ones((4, 2)))},
                        attrs={"layers": ["c1", "c2"]})
    with pytest.raises(StoreError, match="layer 'c2' has dims"):
        validate_dataset(uneven, "uneven")
    rv2dist.write_activations(tmp_path / "half.zarr", relu_network(rng, 10, (2,)))
    import zarr

    zarr.open_group(tmp_path / "half.zarr", mode="r+").attrs[COMPLETE_ATTR] = 0
    zarr.consolidate_metadata(tmp_path / "half.zarr")
    with pytest.raises(StoreError, match="half.zarr: the store is incomplete"):
        rv2dist.open_activations(tmp_path / "half.zarr")


def test_align_by_id_reorders_b(rng, tmp_path):
    a = relu_network(rng, 120, (5, 3))
    order = rng.permutation(120)
    ids = np.array([f"s{i}" for i in range(120)])
    rv2dist.write_activations(tmp_path / "a.zarr", a, obs=ids)
    rv2dist.write_activations(tmp_path / "b.zarr", {k: v[order] for k, v in a.items()}, obs=ids[order],
                              chunk_bytes=500)
    with pytest.raises(ValueError, match="differ first at position 0.*align_obs=True"):
        rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr")
    aligned = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", align_obs=True, metric="rv")
    assert np.allclose(np.diag(aligned.values), 1, atol=1e-12)
    rv2dist.write_activations(tmp_path / "c.zarr", a, obs=np.r_[ids[:-1], ["extra"]])
    with pytest.raises(ValueError, match=r"observation 's119' of network a \(.*a.zarr\) is not in network b "
                                         r"\(.*c.zarr\)"):
        rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "c.zarr", align_obs=True)


def test_stored_chunks_are_read_by_the_task_that_uses_them(rng, tmp_path):
    """A job from two stores of different chunkings has no read task: each chunk task
    reads its rows (spanning stored chunks) itself; the values are the dense formulas'.
    With resampling, chunks are read once by tasks of their own."""
    a = relu_network(rng, 900, (5, 7), dtype=np.float32)
    b = relu_network(rng, 900, (3, 6), dtype=np.float32)
    rv2dist.write_activations(tmp_path / "a.zarr", a, chunk_bytes=7 * 4 * 100)
    rv2dist.write_activations(tmp_path / "b.zarr", b, chunk_bytes=6 * 4 * 150)
    paths = tmp_path / "a.zarr", tmp_path / "b.zarr"
    lazy = rv2dist.similarity(*paths, metric=["rv2", "cka"], memory_budget=2**14, compute=False)
    assert not [key for key in dict(lazy.dask) if "rv2dist-read" in str(key)]
    # one thread: each task reads into the buffers the one before gave back (the last,
    # shorter chunk into a view of them); two threads: each keeps its own
    for scheduler in ("sync", "threads", "threads"):
        result = lazy.compute(scheduler=scheduler)
        for metric in ("rv2", "cka"):
            expected = dense_matrix(a, b, metric)
            np.testing.assert_allclose(result[metric].values, expected, rtol=2e-5, atol=1e-6)
    assert KEPT_BUFFERS.nbytes > 0
    # a store against itself: its chunks are read twice per task, into two buffers
    with dask.config.set({"rv2dist.keep-buffers": 0}):
        same = rv2dist.similarity(paths[0], paths[0], memory_budget=2**14)
    np.testing.assert_allclose(same.values, dense_matrix(a, a, "rv2"), rtol=2e-5, atol=1e-6)
    assert KEPT_BUFFERS.nbytes == 0  # freed at the end of the job when told to keep none
    resampled = rv2dist.similarity(*paths, bootstrap=2, compute=False)
    assert [key for key in dict(resampled.dask) if "rv2dist-read" in str(key)]


def test_stored_rows_read_into_buffers_equal_zarrs(rng, tmp_path):
    """Row ranges of a store read by the tasks that use them (whole stored chunks decoded
    from their files, edges through zarr) hold zarr's values, for flat and 4-d layers,
    ranges within a chunk, across chunks and up to the short last one; a store of
    other codecs reads through zarr alone."""
    import zarr

    layers = {"conv": rng.standard_normal((1030, 2, 3, 4)).astype(np.float32),
              "fc": rng.standard_normal((1030, 9)).astype(np.float32)}
    written = tmp_path / "s.zarr"
    rv2dist.write_activations(written, layers, chunk_bytes=24 * 4 * 100)
    foreign = tmp_path / "f.zarr"
    xr.Dataset({name: (("obs",) + tuple(f"{name}_{i}" for i in range(1, value.ndim)), value)
                for name, value in layers.items()}).chunk({"obs": 100}).to_zarr(foreign, zarr_format=3, consolidated=False)
    (whole,) = stored_rows(open_activations(written)["fc"].data, (1030,))
    assert isinstance(whole, StoredRows)  # the writer's stores are read in the tasks
    pool = _RecordingPool()
    for path, direct in ((written, True), (foreign, False)):
        sums = verified_checksums(path)  # the writer's: each chunk read is checked
        assert (sums is not None) is direct
        for name, expected in layers.items():
            assert _blosc_only(zarr.open_array(path / name, mode="r")) is direct
            layer = StoredLayer(str(path), name, expected.shape, expected.dtype, sums and sums[name])
            for start, stop in ((0, 100), (100, 400), (150, 250), (130, 140), (900, 1030), (1000, 1030)):
                rows = StoredRows(layer, start, stop)
                assert rows.shape == (stop - start, expected[0].size) and rows.dtype == expected.dtype
                for lender in (None, pool):  # scratch memory new, or lent
                    out = np.full(rows.shape, np.nan, rows.dtype)
                    rows.read_into(out, lender)
                    np.testing.assert_array_equal(out, expected[start:stop].reshape(stop - start, -1))
    # the edges of ranges and the encoded chunks of the writer's store used lent scratch
    # memory, every array of it given back
    assert pool.lent and not pool.out
    with pytest.raises(ValueError, match=r"C-ordered float32 array of shape \(30, 9\)"):
        whole.first_rows(30).read_into(np.empty((9, 30), np.float32))


class _RecordingPool:
    """A pool of scratch arrays that records what it lends and what comes back."""

    def __init__(self):
        self.lent, self.out = 0, {}

    def lend(self, shape, dtype):
        array = np.empty(shape, dtype)
        self.lent += 1
        self.out[id(array)] = array
        return array

    def give_back(self, array):
        assert self.out.pop(id(array)) is array


def test_stored_rows_are_found_in_the_arrays_own_graph(rng, tmp_path):
    """A float layer read as it is has stored rows, whichever Dataset of the store it
    comes from; after any operation on it, or of integers, or from another tool's store
    that xarray decodes (a fill value), it has none and is read by dask's tasks."""
    layers = {"f": rng.standard_normal((300, 4)).astype(np.float32), "i": np.arange(600).reshape(300, 2)}
    rv2dist.write_activations(tmp_path / "s.zarr", layers, chunk_bytes=4 * 4 * 100)
    first, second = open_activations(tmp_path / "s.zarr"), open_activations(tmp_path / "s.zarr")
    for dataset in (first, second):
        found = stored_rows(dataset["f"].data, (120, 180))
        assert [(rows.start, rows.stop) for rows in found] == [(0, 120), (120, 300)]
        out = np.empty(found[1].first_rows(7).shape, np.float32)
        found[1].first_rows(7).read_into(out)
        np.testing.assert_array_equal(out, layers["f"][120:127])
    data = first["f"].data
    for changed in (data[:, :2], data + 0, data.rechunk(50), first["f"].isel(obs=slice(0, 200)).data):
        assert stored_rows(changed, changed.chunks[0]) is None
    assert stored_rows(first["i"].data, (300,)) is None
    assert stored_rows(layers["f"], (300,)) is None
    masked = tmp_path / "masked.zarr"
    xr.Dataset({"f": (("obs", "unit"), layers["f"])}).chunk({"obs": 100}).to_zarr(
        masked, encoding={"f": {"_FillValue": -1.0}}, zarr_format=3)
    assert stored_rows(open_activations(masked)["f"].data, (300,)) is None


def test_kept_buffers_are_lent_once_and_reused():
    """A kept buffer goes to one task at a time; a shorter request gets a view of its
    first rows; buffers are kept per shape of the other axes and dtype, and released."""
    buffers = KeptBuffers()
    first, second = buffers.lend((8, 3), np.float32), buffers.lend((8, 3), np.float32)
    assert not np.shares_memory(first, second)
    buffers.give_back(first)
    shorter = buffers.lend((5, 3), np.float32)
    assert shorter.shape == (5, 3) and shorter.flags.c_contiguous and np.shares_memory(shorter, first)
    assert not np.shares_memory(buffers.lend((5, 3), np.float32), first)  # not lent twice
    assert not np.shares_memory(buffers.lend((5, 4), np.float32), first)
    assert not np.shares_memory(buffers.lend((5, 3), np.float64), first)
    buffers.give_back(shorter.reshape(5, 3, 1)[:, :, 0])  # a view of a view: the whole comes back
    assert buffers.nbytes == 8 * 3 * 4
    longer = buffers.lend((9, 3), np.float32)  # too short to serve: a new one, and the short one dropped
    assert longer.shape == (9, 3) and buffers.nbytes == 0
    buffers.give_back(longer)
    buffers.release()
    assert buffers.nbytes == 0


def test_kept_buffers_outlive_a_job_for_a_while():
    """After a job the pool keeps what that job lent, drops what it did not (other
    shapes), frees the rest after the kept seconds, and a lend in between keeps them."""
    buffers = KeptBuffers()
    old = buffers.lend((4, 2), np.float64)
    buffers.give_back(old)
    buffers.job_finished(60)
    used, unused = buffers.lend((4, 3), np.float64), buffers.lend((4, 5), np.float64)
    buffers.give_back(used)
    buffers.job_finished(60)
    assert buffers.nbytes == 4 * 3 * 8  # old's shape was not lent in the last job: dropped
    buffers.give_back(unused)  # lent during that job, given back after it: kept until released
    buffers.job_finished(0.2)
    assert buffers.nbytes == 0  # nothing lent since: all dropped
    again = buffers.lend((4, 3), np.float64)
    buffers.give_back(again)
    buffers.job_finished(0.2)
    assert buffers.nbytes == 4 * 3 * 8
    time.sleep(0.5)
    assert buffers.nbytes == 0  # freed by the timer
    buffers.give_back(buffers.lend((4, 3), np.float64))
    buffers.job_finished(0.2)
    buffers.lend((1, 1), np.float64)  # a task started: the release is called off
    time.sleep(0.5)
    assert buffers.nbytes == 4 * 3 * 8


def test_preprocess_matches_numpy(rng):
    conv = rng.standard_normal((103, 4, 5, 6))
    fc = rng.standard_normal((103, 7))
    ids = np.arange(1000, 1103)
    out, kept = transforms.preprocess({"conv": conv, "fc": fc}, obs=ids, pool=True, downsample_by=5, method="mean")
    pooled = conv.mean(axis=(2, 3))
    assert np.allclose(out["conv"], np.stack([pooled[5 * i:5 * i + 5].mean(0) for i in range(20)]))
    assert np.allclose(out["fc"][3], fc[15:20].mean(0))
    assert np.array_equal(kept, ids[:100:5])
    out, kept = transforms.preprocess({"conv": conv}, obs=ids, pool=True, channel_axis=-1, downsample_by=4)
    assert np.allclose(out["conv"], conv[::4].mean(axis=(1, 2))) and np.array_equal(kept, ids[::4])
    import dask.array as da

    lazy, _ = transforms.preprocess({"conv": da.from_array(conv, chunks=(17, 4, 5, 6))}, pool=True,
                                    downsample_by=3, method="mean")
    assert np.allclose(lazy["conv"].compute(), pooled[:102].reshape(34, 3, 4).mean(1))
    for bad, message in ((0, "positive integer"), (2.5, "positive integer")):
        with pytest.raises(ValueError, match=message):
            transforms.downsample(conv, bad)
    with pytest.raises(ValueError, match="unknown downsample method 'median'"):
        transforms.downsample(conv, 2, "median")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=12), st.integers(1, 4), st.sampled_from(["stride", "mean"]))
def test_streaming_downsample_equals_whole(sizes, factor, method):
    rng = np.random.default_rng(sum(sizes))
    n = sum(sizes)
    data = rng.standard_normal((n, 3))
    stream = transforms.StreamingDownsampler(factor, method)
    pieces, ids = [], []
    start = 0
    for size in sizes:
        kept, kept_ids = stream.feed({"x": data[start:start + size]}, np.arange(start, start + size))
        pieces.append(kept["x"])
        ids.append(kept_ids)
        start += size
    assert np.allclose(np.concatenate(pieces), transforms.downsample(data, factor, method))
    assert np.array_equal(np.concatenate(ids), transforms.downsample_ids(np.arange(n), factor, method))


def test_import_numpy_files_and_stores(rng, tmp_path):
    layers = {"c2": rng.standard_normal((60, 2, 3)), "c10": rng.standard_normal((60, 4)), "fc1": rng.standard_normal((60, 5))}
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, array in layers.items():
        np.save(folder / f"{name}.npy", array)
    np.save(folder / "obs.npy", np.arange(60) * 10)
    rv2dist.convert(folder, tmp_path / "from_npy.zarr", chunk_bytes=300)
    opened = rv2dist.open_activations(tmp_path / "from_npy.zarr")
    assert list(opened.attrs["layers"]) == ["c2", "c10", "fc1"]  # natural order
    assert np.array_equal(opened.obs.values, np.arange(60) * 10)
    assert np.array_equal(opened["c2"].values, layers["c2"])
    np.savez(tmp_path / "acts.npz", **layers)
    done = run_cli("import", tmp_path / "acts.npz", "--out", tmp_path / "pooled.zarr", "--pool",
                    "--downsample", "2", "--layers", "fc1", "c2")
    assert done.returncode == 0, done.stderr
    pooled = rv2dist.open_activations(tmp_path / "pooled.zarr")
    assert list(pooled.attrs["layers"]) == ["fc1", "c2"]
    assert np.allclose(pooled["c2"].values, layers["c2"][::2].mean(axis=2))
    again = run_cli("import", tmp_path / "pooled.zarr", "--out", tmp_path / "again.zarr", "--downsample", "3",
                     "--method", "mean")
    assert again.returncode == 0, again.stderr
    assert np.allclose(rv2dist.open_activations(tmp_path / "again.zarr")["fc1"].values[0],
                       layers["fc1"][[0, 2, 4]].mean(0))
    np.save(folder / "fc2.npy", np.ones((59, 2)))
    cases = [
        ((folder, "--out", tmp_path / "x.zarr"), "layer 'fc2' has 59 observations"),
        ((tmp_path / "acts.npz", "--layers", "c9", "--out", tmp_path / "x.zarr"), "has no layer 'c9'"),
        ((tmp_path / "nothing.npz", "--out", tmp_path / "x.zarr"), "nothing.npz: no such file"),
        ((tmp_path / "from_npy.zarr", "--out", tmp_path / "pooled.zarr"), "pooled.zarr already exists"),
        ((tmp_path / "acts.npz", "--downsample", "0", "--out", tmp_path / "x.zarr"), "positive integer"),
    ]
    (tmp_path / "broken.npz").write_text("not a zip")
    cases.append(((tmp_path / "broken.npz", "--out", tmp_path / "x.zarr"), "broken.npz: not an .npz archive"))
    np.savez(tmp_path / "scalar.npz", fc1=layers["fc1"], mean=np.float64(0.5))
    cases.append(((tmp_path / "scalar.npz", "--out", tmp_path / "x.zarr"),
                  "scalar.npz: layer 'mean' is a single number, not an array of observations x units"))
    for args, named in cases:
        done = run_cli("import", *args)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "x.zarr").exists() and not list(tmp_path.glob(".x.zarr*"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_writer_refuses_nan_and_inf_naming_layer_and_observation(rng, tmp_path, bad):
    """No comparison could use such a store: the write fails at the batch holding the
    value, names the layer, the observation and its id, and leaves no store behind."""
    layers = relu_network(rng, 300, (4, 3, 2), dtype=np.float32)
    layers["l1"] = layers["l1"].reshape(300, 3, 1)
    layers["l1"][211, 2, 0] = bad
    ids = np.array([f"img{i}" for i in range(300)])
    with pytest.raises(StoreError, match=rf"bad.zarr: layer 'l1' holds {bad} at observation 211 \(id 'img211'\)"):
        rv2dist.write_activations(tmp_path / "bad.zarr", layers, obs=ids, chunk_bytes=4 * 4 * 50)
    with pytest.raises(StoreError, match=r"layer 'l1' holds .* at observation 211 \(id 211\)"):
        with rv2dist.ActivationWriter(tmp_path / "streamed.zarr") as writer:
            for start in range(0, 300, 70):
                writer.append({name: value[start:start + 70] for name, value in layers.items()})
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # finite values whose float64 sum overflows are written
    huge = {"x": np.full((40, 3), 1e308), "y": np.full((40, 2), -1e308)}
    huge["y"][::2] = 1e308
    rv2dist.write_activations(tmp_path / "huge.zarr", huge)
    np.testing.assert_array_equal(rv2dist.open_activations(tmp_path / "huge.zarr")["y"].values, huge["y"])


def test_slabs_are_kept_in_process_but_not_on_workers(rng):
    """The local scheduler's tasks keep their slabs for the next job; a distributed
    worker's do not (its memory limit needs the room); both give the dense answer."""
    from distributed import Client, LocalCluster

    layers = relu_network(rng, 500, (6, 9))
    expected = dense_matrix(layers, layers, "rv2")
    rv2dist.release_buffers()
    np.testing.assert_allclose(rv2dist.similarity(layers, memory_budget=2**15).values, expected, rtol=1e-10)
    assert KEPT_BUFFERS.nbytes > 0
    rv2dist.release_buffers()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        got = rv2dist.similarity(layers, client=client, memory_budget=2**15)
    np.testing.assert_allclose(got.values, expected, rtol=1e-10)
    assert KEPT_BUFFERS.nbytes == 0


def test_a_job_computed_later_still_ends(rng):
    """``compute=False``: the job's last task starts the kept arrays' clock in the
    process that ran it (here: told to keep none, it frees them)."""
    layers = relu_network(rng, 500, (6, 9))
    rv2dist.release_buffers()
    with dask.config.set({"rv2dist.keep-buffers": 0}):
        lazy = rv2dist.similarity(layers, memory_budget=2**15, compute=False)
    for scheduler in ("sync", "threads"):
        np.testing.assert_allclose(lazy.compute(scheduler=scheduler).values, dense_matrix(layers, layers, "rv2"),
                                   rtol=1e-10)
        assert KEPT_BUFFERS.nbytes == 0


@pytest.mark.parametrize("value", ["soon", -1, "inf", "nan", [30]])
def test_a_malformed_keep_buffers_setting_is_refused_before_any_work(rng, tmp_path, value):
    layers = relu_network(rng, 60, (3, 4))
    with dask.config.set({"rv2dist.keep-buffers": value}):
        for compute in (False, True):
            with pytest.raises(ValueError, match=r"dask config 'rv2dist\.keep-buffers' is .*: give the seconds"):
                rv2dist.similarity(layers, compute=compute)
    if value == "soon":
        rv2dist.write_activations(tmp_path / "a.zarr", layers)
        with dask.config.set({"rv2dist.keep-buffers": value}):
            done = run_cli("compare", tmp_path / "a.zarr", "--out", tmp_path / "r.nc")
        assert done.returncode == 2, done.stderr
        assert "rv2dist.keep-buffers' is 'soon'" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "r.nc").exists()
