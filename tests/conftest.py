import contextlib
import dataclasses
import functools
import io
import logging
import sys
import warnings

import numpy as np
import pytest


def relu_network(rng, n, widths, dtype=np.float64, offset=0.5):
    """Layers shaped like a ReLU network's: each a noisy mix of the previous layer,
    rectified, with positive means."""
    layers = {}
    previous = rng.standard_normal((n, 8))
    for i, width in enumerate(widths):
        weights = rng.standard_normal((previous.shape[1], width)) / np.sqrt(previous.shape[1])
        current = np.maximum(previous @ weights + offset + 0.3 * rng.standard_normal((n, width)), 0)
        layers[f"l{i}"] = current.astype(dtype)
        previous = current
    return layers


def pytest_collection_modifyitems(items):
    """Tests marked slow first (in their order): pytest-xdist hands them out as its
    processes come free, so none is left running alone at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """PyTorch on one thread in this process: the suite runs several processes on few
    cores, where PyTorch's threads spin waiting for each other many times longer than
    the tests' small models take to compute."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(20261126)


def write_unchecked(path, layers, **options):
    """A store holding what the writer refuses (NaN, Inf), as another tool or an older
    rv2dist could leave one: the comparisons must refuse it too."""
    from rv2dist.io import writer

    check = writer.check_finite
    writer.check_finite = lambda *args: None
    try:
        writer.write_activations(path, layers, **options)
    finally:
        writer.check_finite = check


# --- the command line, in this process -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Ran:
    """What one command-line call left, named as subprocess.CompletedProcess names it."""

    returncode: int
    stdout: str
    stderr: str


@functools.cache
def _shared_cluster():
    from distributed import LocalCluster

    # as the command line's embedded cluster: worker processes (a task's errors and
    # warnings cross a process boundary), one thread each, its logs silenced
    return LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.CRITICAL)


def shared_scheduler() -> str:
    """Address of the one local cluster of this test process, started at its first use."""
    return _shared_cluster().scheduler_address


@pytest.fixture(scope="session", autouse=True)
def _close_shared_cluster():
    yield
    if _shared_cluster.cache_info().currsize:
        _shared_cluster().close()


def run_cli(*args) -> Ran:
    """``rv2dist ARGS`` in this process on the shared cluster (named by
    ``DASK_SCHEDULER_ADDRESS``, as the container recipes name theirs): ``cli.main`` with its
    outputs captured and its exit status returned (argparse's exits too), as a fresh
    process would see it: Python's default warning filters, and the log levels it sets
    restored afterwards. The embedded cluster itself is tested in real processes."""
    from rv2dist import cli

    levels = {name: logging.getLogger(name).level for name in ("distributed.client", "rv2dist")}
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setenv("DASK_SCHEDULER_ADDRESS", shared_scheduler())
        warnings.resetwarnings()  # a fresh interpreter's filters
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        try:
            status = cli.main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse: --help, --version, usage errors
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
    return Ran(status, out.getvalue(), err.getvalue())
