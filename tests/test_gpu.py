"""The GPU path: checked against numpy float64 where a GPU is present; the plumbing that
runs without one (clear errors, GPU planning) everywhere."""

import subprocess
import sys

import numpy as np
import pytest

import rv2dist
from conftest import relu_network


def _gpu_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


needs_gpu = pytest.mark.skipif(not _gpu_available(), reason="needs cupy and a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("route", ["feature", "gram"])
@pytest.mark.parametrize("precision", ["auto", "input"])
def test_gpu_matches_numpy_float64(rng, route, precision):
    import cupy

    a = relu_network(rng, 500, (7, 90), dtype=np.float32)
    b = relu_network(rng, 500, (30,), dtype=np.float32)
    metrics = ["rv2", "rv", "cka", "cka_debiased"]
    want = rv2dist.similarity(a, b, metric=metrics, route=route, precision="float64", device="cpu")
    got = rv2dist.similarity({k: cupy.asarray(v) for k, v in a.items()}, {k: cupy.asarray(v) for k, v in b.items()},
                             metric=metrics, route=route, precision=precision)
    assert got.attrs["device"] == "gpu"
    for metric in metrics:
        assert np.max(np.abs(got[metric].values - want[metric].values)) < 2e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("route", ["feature", "gram"])
def test_gpu_significance_matches_numpy_float64(rng, route):
    """Tests (the gram route's tr(A^3) from its kept tiles too), permutations and
    bootstrap replicates on CuPy arrays give numpy's values (the permutations and
    counts depend on the seed only)."""
    import cupy

    a = relu_network(rng, 600, (7, 40))
    b = relu_network(rng, 600, (30,))
    options = dict(metric=["rv2", "cka", "cka_debiased"], tests=True, permutations=7, bootstrap=3, seed=5,
                   keep_replicates=True, route=route)
    want = rv2dist.similarity(a, b, device="cpu", **options)
    got = rv2dist.similarity({k: cupy.asarray(v) for k, v in a.items()}, {k: cupy.asarray(v) for k, v in b.items()},
                             **options)
    assert got.attrs["device"] == "gpu"
    for name in want.data_vars:
        np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.skipif(_gpu_available(), reason="checks the error raised without a GPU")
def test_gpu_requested_without_one_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="device='gpu' needs CuPy"):
        rv2dist.similarity(relu_network(rng, 20, (3,)), device="gpu")
    from rv2dist.service.cluster import ClusterError, connect_gpus

    with pytest.raises(ClusterError, match="--gpus"):
        connect_gpus()


@pytest.mark.skipif(_gpu_available(), reason="checks the error raised without a GPU")
def test_cli_gpus_without_gpu_exits_2(rng, tmp_path):
    rv2dist.write_activations(tmp_path / "a.zarr", relu_network(rng, 30, (3,)))
    done = subprocess.run([sys.executable, "-m", "rv2dist.cli", "compare", str(tmp_path / "a.zarr"),
                           "--out", str(tmp_path / "r.nc"), "--gpus"], capture_output=True, text=True)
    assert done.returncode == 2 and "--gpus" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.nc").exists()


def test_gpu_plans_use_float64_products_and_one_task_per_gpu(rng):
    a = relu_network(rng, 3000, (64, 128), dtype=np.float32)
    gpu = rv2dist.plan(a, memory_budget=2**30, device="gpu") if _gpu_available() else None
    from rv2dist.planning.planner import make_plan

    plan = make_plan(3000, [("x", 64), ("y", 128)], dtype="float32", memory_budget=2**30, device="gpu")
    assert plan.compute_dtype == "float64" and len(plan.row_chunks) == 1
    assert gpu is None or gpu.compute_dtype == "float64"
