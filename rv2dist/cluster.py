"""Clients for the three ways to run: embedded local cluster, an address, local GPUs."""

from __future__ import annotations

import logging
import os

# the embedded clusters' own log lines (a worker's "Compute Failed" with its traceback)
# would reach the terminal before rv2dist's one-line message about the same fault
EMBEDDED_LOG_LEVEL = logging.CRITICAL


class ClusterError(ValueError):
    """A cluster could not be reached or started as asked."""


def connect(scheduler=None, scheduler_file=None, gpus=False, workers=None):
    """A :class:`distributed.Client` to the cluster asked for.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    scheduler_file : str, optional
        A scheduler file written by ``dask scheduler --scheduler-file`` (HPC habit).
    gpus : bool
        Start a :class:`dask_cuda.LocalCUDACluster`, one worker per GPU.
    workers : int, optional
        Workers of the embedded local cluster; default one per core, one thread each.
    """
    from distributed import Client, LocalCluster

    if scheduler or scheduler_file:
        try:
            if scheduler_file:
                if not os.path.exists(scheduler_file):
                    raise ClusterError(f"scheduler file {scheduler_file} does not exist")
                return Client(scheduler_file=scheduler_file, timeout="15s")
            return Client(scheduler, timeout="15s")
        except OSError as error:
            raise ClusterError(f"cannot reach the scheduler at {scheduler or scheduler_file}: {error}") from None
    if gpus:
        return Client(_cuda_cluster())
    cores = os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=workers or min(cores, 8),
        threads_per_worker=1 if workers is None else max(1, cores // workers),
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=EMBEDDED_LOG_LEVEL,
    )
    return Client(cluster)


def _cuda_cluster():
    try:
        import cupy
        from dask_cuda import LocalCUDACluster
    except ImportError as error:
        raise ClusterError(f"--gpus needs cupy and dask-cuda (pip install 'rv2dist[gpu]'): {error}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise ClusterError(f"--gpus: no CUDA GPU is usable here ({error})") from None
    if count == 0:
        raise ClusterError("--gpus: no CUDA GPU is usable here")
    import importlib.util

    options = {}
    if importlib.util.find_spec("rmm") is not None:
        # one memory pool per GPU, shared by CuPy through RMM's allocator (a fraction of
        # the card: dask-cuda reads "70%" as no number and the workers never start)
        options = {"rmm_pool_size": 0.7, "rmm_allocator_external_lib_list": ["cupy"]}
    return LocalCUDACluster(host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=EMBEDDED_LOG_LEVEL,
                            **options)


def dashboard_link(client) -> str:
    """The dashboard URL of ``client``'s cluster ("" when it has none)."""
    try:
        return client.dashboard_link or ""
    except Exception:
        return ""
