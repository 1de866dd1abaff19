"""The host BLAS of cross-products: numpy's or torch's give the same products and the same
job; "auto" never imports torch and never times anything for small products."""

import sys

import dask
import numpy as np
import pytest

import rv2dist
from rv2dist.core import host_blas
from conftest import relu_network

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("blas", ["numpy", "torch"])
def test_cross_products_of_slab_views_with_either_blas(rng, blas):
    slab = rng.standard_normal((300, 50)).astype(np.float32)
    x, y = slab[:, 3:20], slab[:, 25:50]  # strided column pieces, as the chunk kernel takes them
    want = x.astype(np.float64).T @ y.astype(np.float64)
    matmul = host_blas.cross_matmul(blas, flop=0)
    out = np.empty((17, 25), dtype=np.float32)
    assert matmul(x.T, y, out) is out
    for got in (out, matmul(x.T, y, None)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_auto_is_numpy_for_small_products_or_without_torch_imported(monkeypatch):
    assert host_blas.cross_matmul("auto", flop=host_blas.CALIBRATE_FLOP / 2) is host_blas._numpy_matmul
    monkeypatch.delitem(sys.modules, "torch")
    assert host_blas.cross_matmul("auto", flop=1e15) is host_blas._numpy_matmul
    assert "torch" not in sys.modules


def test_auto_takes_torch_only_when_timed_faster(monkeypatch):
    host_blas._measured_choice.cache_clear()
    try:
        choice = host_blas._measured_choice()
        assert choice in ("numpy", "torch")
        expected = host_blas._torch_matmul if choice == "torch" else host_blas._numpy_matmul
        assert host_blas.cross_matmul("auto", flop=1e15) is expected
    finally:
        host_blas._measured_choice.cache_clear()


def test_a_job_is_the_same_with_either_blas(rng):
    a = relu_network(rng, 400, (20, 30, 40), np.float32)
    b = relu_network(rng, 400, (25, 35), np.float32)
    results = {}
    for blas in ("numpy", "torch"):
        with dask.config.set({"rv2dist.blas": blas}):
            results[blas] = rv2dist.similarity(a, b, metric=["cka", "cka_debiased", "rv2"], route="feature")
    for metric in ("cka", "cka_debiased", "rv2"):
        np.testing.assert_allclose(results["torch"][metric].values, results["numpy"][metric].values, rtol=0, atol=1e-6)


def test_unknown_or_missing_blas_is_named(rng, monkeypatch):
    a = relu_network(rng, 50, (4, 5), np.float32)
    for route in ("feature", "gram"):
        with dask.config.set({"rv2dist.blas": "mkl"}), pytest.raises(ValueError, match="'rv2dist.blas' is 'mkl'; choose"):
            rv2dist.similarity(a, a, route=route)
    monkeypatch.setitem(sys.modules, "torch", None)  # what an uninstalled torch imports as
    with dask.config.set({"rv2dist.blas": "torch"}), pytest.raises(ValueError, match="torch cannot be imported"):
        rv2dist.similarity(a, relu_network(rng, 50, (6,), np.float32))


def test_a_bad_blas_setting_stops_the_command_line_before_a_cluster_starts(rng, tmp_path, monkeypatch):
    from conftest import run_cli

    from rv2dist.service import cluster

    def no_cluster(**options):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(cluster, "connect", no_cluster)
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 40, (3, 4), np.float32))
    with dask.config.set({"rv2dist.blas": "mkl"}):
        done = run_cli("compare", tmp_path / "a.zarr", "--out", tmp_path / "r.nc")
    assert done.returncode == 2 and "'rv2dist.blas' is 'mkl'; choose one of auto, numpy, torch" in done.stderr
    assert not (tmp_path / "r.nc").exists()
