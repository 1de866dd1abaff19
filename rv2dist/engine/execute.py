"""Where and how a job's graph runs: the resources it may use (threads, memory, GPU),
a client for a scheduler address, and the computation itself (dask's local threads by
default, or a distributed cluster), ending the job on every worker that took part."""

from __future__ import annotations

import contextlib
import functools
import os
import sys

from rv2dist.engine.buffers import job_finished


def default_memory_budget(client=None) -> int:
    """Bytes one task may use: a share of worker memory per thread (or of free RAM)."""
    if client is not None:
        shares = [w["memory_limit"] / max(1, w["nthreads"]) for w in _workers(client) if w.get("memory_limit")]
        if shares:
            return int(min(shares) / 2)
    import psutil

    return int(psutil.virtual_memory().available / max(1, os.cpu_count() or 1) / 2)


def _workers(client) -> list[dict]:
    """What the scheduler knows of every worker of ``client``'s cluster (all of them:
    newer distributed lists five unless asked)."""
    import inspect

    takes_count = "n_workers" in inspect.signature(client.scheduler_info).parameters
    return list((client.scheduler_info(n_workers=-1) if takes_count else client.scheduler_info())["workers"].values())


def gpu_workers(client) -> bool:
    """Whether ``client``'s cluster runs on GPUs: any of its workers declares a ``GPU``
    resource (``dask cuda worker --resources GPU=1``, as the deploy recipes start them).
    The one rule for a cluster's GPUs: ``device="auto"`` then runs on them (the command
    line too), and a GPU job's tasks go to those workers (:func:`gpu_annotations`)."""
    return client is not None and any("GPU" in w.get("resources", {}) for w in _workers(client))


def gpu_memory_budget() -> int:
    """A quarter of the free memory of this process's GPU (4 GiB when unknown)."""
    try:
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
        return int(free // 4)
    except Exception:
        return 4 * 2**30


def default_parallelism(client=None, device="cpu") -> int:
    """Tasks that run at once: the cluster's threads, or (no cluster) the local tasks
    that leave each its share of the BLAS thread pool; with ``device="gpu"``, one per
    worker (a worker drives one GPU)."""
    if device == "gpu":
        return len(client.scheduler_info()["workers"]) if client is not None else 1
    if client is not None:
        threads = sum(client.nthreads().values())
        if threads:
            return threads
    return local_task_threads()


@functools.lru_cache(maxsize=1)
def local_task_threads() -> int:
    """Threads for dask's local scheduler: one per BLAS pool, since a multithreaded BLAS
    already spreads each GEMM over the cores and more tasks would oversubscribe them."""
    from threadpoolctl import threadpool_info

    cores = os.cpu_count() or 1
    blas = max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=1)
    return max(1, cores // max(1, blas))


def require_cupy():
    """A ValueError saying what is missing unless CuPy and a CUDA GPU are usable here."""
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise ValueError(f"device='gpu' needs CuPy and a CUDA GPU here (pip install 'rv2dist[gpu]'): "
                         f"{type(error).__name__}: {error}") from None


def gpu_annotations(client, device):
    """Task annotations restricting a GPU job to workers with a ``GPU`` resource when
    the cluster declares one (a mixed CPU/GPU cluster); otherwise none, so no task
    waits forever."""
    return {"resources": {"GPU": 1}} if device == "gpu" and gpu_workers(client) else {}


def scheduler_timeout() -> float:
    """Seconds a scheduler named by address or file is tried before it is said to be
    unreachable, and a lost one is tried again before the client closes (dask config
    ``rv2dist.scheduler-timeout``: seconds or a time such as ``"30s"``; default 15)."""
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get("rv2dist.scheduler-timeout", 15)
    try:
        seconds = parse_timedelta(value, default="s")
    except (TypeError, ValueError, KeyError):
        seconds = None
    if not seconds or seconds <= 0:
        raise ValueError(f"dask config 'rv2dist.scheduler-timeout' is {value!r}: give the seconds to wait for "
                         "a scheduler, as 15 or '15s'")
    return seconds


def connect_to(address=None, scheduler_file=None):
    """A :class:`distributed.Client` of the scheduler at ``address`` (or named by
    ``scheduler_file``), tried for :func:`scheduler_timeout` seconds: a ConnectionError
    naming it when it cannot be reached, a ValueError when it is no address."""
    from distributed import Client

    timeout = scheduler_timeout()
    try:
        if scheduler_file:
            return Client(scheduler_file=scheduler_file, timeout=timeout)
        return Client(address, timeout=timeout)
    except OSError as error:
        raise ConnectionError(f"cannot reach the scheduler at {address or scheduler_file}: {error}") from None
    except ValueError as error:  # an address that is no address
        raise ValueError(f"{address!r} is not a scheduler address ({error})") from None


@contextlib.contextmanager
def client_for(client):
    """``client=`` as a :class:`distributed.Client` (or None): one given, or one
    connected to a scheduler address for the block and closed after it."""
    if isinstance(client, str):
        with connect_to(client) as connected:
            yield connected
        return
    if client is not None:
        from distributed import Client

        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client or a scheduler address such as "
                            f"'tcp://host:8786', not a {type(client).__module__}.{type(client).__name__}")
    yield client


def compute_locally(lazy):
    """Compute with the active scheduler (a distributed client, or dask's configured
    one); by default, local threads sized by :func:`local_task_threads` (in the calling
    thread when that is one and every input is in memory)."""
    import dask
    from dask.base import get_scheduler

    # a client exists only once distributed is imported: asking dask would import it
    # (half a second on a process's first job)
    client_possible = "distributed" in sys.modules
    if dask.config.get("scheduler", None) is not None or (client_possible and get_scheduler() is not None):
        return lazy.compute()
    threads = local_task_threads()
    if len(lazy.dask.layers) > 1:
        return lazy.compute(scheduler="threads", num_workers=threads)
    # in-memory inputs: the graph is rv2dist's own tasks, leaving dask's collection
    # optimisations nothing to do; run directly, it costs a millisecond less a call (a
    # small job's whole overhead is a few), and with one thread no hand-offs to a pool
    from dask.local import get_sync
    from dask.threaded import get

    graph = dict(lazy.dask)
    return get_sync(graph, lazy.key) if threads == 1 else get(graph, lazy.key, num_workers=threads)


def run(lazy, client, keep_seconds):
    """Compute a job's result on ``client`` (None: locally) and end the job there,
    keeping its working arrays ``keep_seconds`` (see :mod:`rv2dist.engine.buffers`)."""
    if client is None:
        try:
            return compute_locally(lazy)
        finally:
            job_finished(seconds=keep_seconds)
    computed = client.compute(lazy, sync=True)
    job_finished(client, keep_seconds)
    return computed
