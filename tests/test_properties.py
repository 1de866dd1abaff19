"""Invariances with exact answers, chunking independence, laziness and memory."""

import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rv2dist
from conftest import relu_network

ROUTES = ["feature", "gram"]


def _orthogonal(rng, p):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("c", [-3.5, 1e-3, 250.0])
def test_rv2_invariant_to_scaling_and_rotation(rng, route, center, c):
    x = relu_network(rng, 80, (30,))["l0"]
    y = c * x @ _orthogonal(rng, 30)
    got = rv2dist.similarity({"x": x}, {"y": y}, metric=["rv2", "rv", "cka"], center=center, route=route)
    for metric in ("rv2", "rv", "cka"):
        assert abs(got[metric].values[0, 0] - 1.0) < 1e-12


@pytest.mark.parametrize("route", ROUTES)
def test_self_matrix_symmetric_with_unit_diagonal(rng, route):
    a = relu_network(rng, 120, (2, 17, 300, 9))
    got = rv2dist.similarity(a, metric=["rv2", "rv", "cka", "cka_debiased"], route=route)
    for metric in got.data_vars:
        m = got[metric].values
        assert np.allclose(np.diag(m), 1.0, atol=1e-12, rtol=0)
        assert np.array_equal(m, m.T) or np.max(np.abs(m - m.T)) < 1e-14


def test_independent_wide_layers_rv_near_one_rv2_near_zero(rng):
    n, p = 40, 20000
    x, y = rng.standard_normal((n, p)), rng.standard_normal((n, p))
    got = rv2dist.similarity({"x": x}, {"y": y}, metric=["rv", "rv2"], center=False)
    assert got.rv.values[0, 0] > 0.99
    assert abs(got.rv2.values[0, 0]) < 0.05


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_row_chunking_gives_the_single_chunk_matrix(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(6, 60))
    a = relu_network(rng, n, (3, 11))
    b = relu_network(rng, n, (5,))
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=6)))
    chunks = tuple(np.diff([0, *cuts, n]).tolist())
    route = data.draw(st.sampled_from(ROUTES))
    center = data.draw(st.booleans())
    whole = rv2dist.similarity(a, b, metric=["rv2", "cka_debiased"], center=center, route="feature")
    chunked = rv2dist.similarity(
        {k: da.from_array(v, chunks=(chunks, -1)) for k, v in a.items()},
        {k: da.from_array(v, chunks=(chunks, -1)) for k, v in b.items()},
        metric=["rv2", "cka_debiased"], center=center, route=route,
    )
    for metric in ("rv2", "cka_debiased"):
        assert np.max(np.abs(chunked[metric].values - whole[metric].values)) < 1e-10


def test_building_the_graph_computes_nothing(rng):
    calls = []

    def record(block):
        if block.size:  # dask probes meta with empty blocks
            calls.append(block.shape)
        return block

    base = relu_network(rng, 100, (4, 6))
    layers = {k: da.from_array(v, chunks=(30, -1)).map_blocks(record, dtype=v.dtype) for k, v in base.items()}
    lazy = rv2dist.similarity(layers, metric="rv2", compute=False)
    rv2dist.plan(layers)
    assert calls == []
    result = lazy.compute()
    assert calls and result.shape == (2, 2)
    eager = rv2dist.similarity(base, metric="rv2")
    assert np.max(np.abs(result.values - eager.values)) < 1e-12


def test_multi_dimensional_layers_are_flattened(rng):
    x = rng.standard_normal((50, 4, 3, 2))
    flat = x.reshape(50, -1)
    y = rng.standard_normal((50, 5))
    got = rv2dist.similarity({"x": da.from_array(x, chunks=(20, 2, 3, 1))}, {"y": y}, metric="rv2")
    want = rv2dist.similarity({"x": flat}, {"y": y}, metric="rv2")
    assert abs(got.values[0, 0] - want.values[0, 0]) < 1e-12


def test_wide_layers_split_into_column_blocks_match(rng):
    a = relu_network(rng, 90, (70, 5, 40))
    b = relu_network(rng, 90, (33,))
    small = rv2dist.plan(a, b, route="feature", memory_budget=2 * 8 * 5 * 20**2)
    assert len(small.blocks) > 3
    got = rv2dist.similarity(a, b, metric=["rv2", "cka_debiased"], route="feature", memory_budget=2 * 8 * 5 * 20**2)
    want = rv2dist.similarity(a, b, metric=["rv2", "cka_debiased"], route="gram")
    for metric in ("rv2", "cka_debiased"):
        assert np.max(np.abs(got[metric].values - want[metric].values)) < 1e-10
    self_got = rv2dist.similarity(a, metric="rv2", route="feature", memory_budget=2 * 8 * 5 * 20**2)
    self_want = rv2dist.similarity(a, metric="rv2", route="gram")
    assert np.max(np.abs(self_got.values - self_want.values)) < 1e-10


def _lazy_layers(n, widths, rows):
    return {
        f"l{i}": da.random.default_rng(i).standard_normal((n, w), chunks=(rows, -1)).astype(np.float32) + 1
        for i, w in enumerate(widths)
    }


def _peak_bytes(func):
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="threads", num_workers=2):
            result = func()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_300k_observations_never_allocate_n_by_anything():
    n = 300_000
    layers = _lazy_layers(n, (16, 32, 8, 64, 24), 15_000)
    result, peak = _peak_bytes(
        lambda: rv2dist.similarity(layers, metric=["rv2", "cka_debiased"], memory_budget=64 * 2**20)
    )
    # n x n float64 is 720 GB; n x 50 float64 (a row-length array of 50 columns) is 120 MB
    assert peak < 100 * 2**20, peak
    assert np.allclose(np.diag(result.rv2.values), 1.0)
    assert np.max(np.abs(result.rv2.values - np.eye(5))) < 0.01


def test_gram_route_memory_stays_within_tiles():
    n = 8000
    layers = _lazy_layers(n, (8, 16, 4), 1000)
    budget = 48 * 2**20
    job = rv2dist.plan(layers, route="gram", memory_budget=budget)
    result, peak = _peak_bytes(
        lambda: rv2dist.similarity(layers, metric="rv2", route="gram", memory_budget=budget)
    )
    # n x n float64 is 512 MB; planned tiles are <= 2000 rows
    assert max(job.row_chunks) <= 2000
    assert peak < 4 * budget, peak
    assert np.allclose(np.diag(result.values), 1.0)


def test_distributed_client_gives_same_result(rng):
    distributed = pytest.importorskip("distributed")
    a = relu_network(rng, 200, (5, 50))
    b = relu_network(rng, 200, (7,))
    with distributed.Client(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        got = rv2dist.similarity(a, b, metric=["rv2", "cka"], client=client)
        job = rv2dist.plan(a, b, client=client)
    want = rv2dist.similarity(a, b, metric=["rv2", "cka"])
    assert "peak per task" in repr(job)
    for metric in ("rv2", "cka"):
        assert np.max(np.abs(got[metric].values - want[metric].values)) < 1e-12


@pytest.mark.parametrize("threads", [1, 2])
def test_in_memory_jobs_run_directly_on_the_local_pool(rng, monkeypatch, threads):
    import threading

    from reference import dense_matrix

    import rv2dist.engine.execute
    import rv2dist.core.feature_totals

    a = relu_network(rng, 150, (6, 30))
    b = relu_network(rng, 150, (9, 4))
    ran_in = []
    statistics = rv2dist.core.feature_totals.feature_statistics
    monkeypatch.setattr(rv2dist.core.feature_totals, "feature_statistics",
                        lambda *args, **kwargs: ran_in.append(threading.get_ident()) or statistics(*args, **kwargs))
    monkeypatch.setattr(rv2dist.engine.execute, "local_task_threads", lambda: threads)
    got = rv2dist.similarity(a, b, metric="rv2", center=False)
    want = dense_matrix(a, b, "rv2", center=False)
    assert np.max(np.abs(got.values - want)) < 1e-12
    # one thread: the calling one, with no hand-off to a pool
    assert (ran_in == [threading.get_ident()]) == (threads == 1)


def test_in_memory_jobs_leave_distributed_unimported():
    import subprocess
    import sys

    # a fresh process: the suite itself has imported distributed long ago
    script = (
        "import sys, numpy as np, rv2dist\n"
        "x = np.random.default_rng(0).standard_normal((40, 3))\n"
        "r = rv2dist.similarity({'a': x}, {'b': 2 * x})\n"
        "assert abs(float(r.values[0, 0]) - 1) < 1e-12, r.values\n"
        "print('distributed' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("route", ["feature", "gram"])
def test_a_network_against_itself_is_exactly_symmetric_with_unit_diagonal(rng, route):
    layers = relu_network(rng, 90, (5, 40, 7))
    layers = {name: value.astype(np.float32) for name, value in layers.items()}
    metric = ["rv2", "rv", "cka", "cka_debiased"]
    got = rv2dist.similarity(layers, metric=metric, route=route, bootstrap=41)
    for name in metric + [f"{m}_{end}" for m in metric for end in ("low", "high")]:
        assert np.array_equal(got[name].values, got[name].values.T), name
    for name in metric:
        assert np.array_equal(np.diag(got[name].values), np.ones(3)), name
