"""Clients for the three ways to run (an embedded local cluster, an address, local
GPUs), and watching work on them in bounded time when the cluster goes away."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from rv2dist.engine.execute import connect_to

# the default level of the embedded clusters' own log lines: a worker's "Compute Failed"
# with its traceback would reach the terminal before rv2dist's one-line message about
# the same fault (``rv2dist -v`` passes INFO)
EMBEDDED_LOG_LEVEL = logging.CRITICAL


class ClusterError(ValueError):
    """A cluster could not be reached or started as asked."""


class ClusterLostError(RuntimeError):
    """The cluster went away during a job: the scheduler stopped answering, or no
    worker was left to run the tasks."""


def no_workers_timeout() -> float:
    """Seconds a job waits while the cluster has no worker (dask config
    ``rv2dist.no-workers-timeout``, default 60): workers of a nanny-less cluster that
    died do not come back, and the tasks would wait for ever."""
    import dask

    return float(dask.config.get("rv2dist.no-workers-timeout", 60))


def watch(client, futures, poll=0.5, on_poll=None):
    """Yield ``futures`` as they finish (any state); call ``on_poll()`` every ``poll``
    seconds while some are pending (a progress display).

    Raises
    ------
    ClusterLostError
        When the scheduler cannot be reached for ``distributed.comm.timeouts.connect``
        or the cluster has had no worker for :func:`no_workers_timeout` seconds.
    """
    import time

    from distributed import wait
    from distributed.client import FuturesCancelledError

    pending, lost_since, idle_since = set(futures), None, None
    while pending:
        try:
            finished, pending = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:  # none finished this time round (TimeoutError is an OSError)
            finished = ()
        except OSError as error:
            raise ClusterLostError(f"the connection to the scheduler was lost ({error})") from None
        except FuturesCancelledError as error:
            reasons = {str(group.reason) for group in error.error_groups}
            if "scheduler-connection-lost" in reasons:
                raise ClusterLostError("the connection to the scheduler was lost") from None
            raise ClusterLostError(f"the job's tasks were cancelled ({'; '.join(sorted(reasons))})") from None
        yield from finished
        if on_poll is not None and pending and client.status == "running":
            try:
                on_poll()
            except OSError as error:
                raise ClusterLostError(f"the connection to the scheduler was lost ({error})") from None
        now = time.monotonic()
        if client.status != "running":
            lost_since = lost_since or now
            if now - lost_since > _connect_timeout():
                raise ClusterLostError(f"the connection to the scheduler was lost (client {client.status})")
            continue
        lost_since = None
        workers = client.scheduler_info().get("workers", {})
        idle_since = None if workers else (idle_since or now)
        if idle_since is not None and now - idle_since > no_workers_timeout():
            raise ClusterLostError(f"the cluster has had no worker for {no_workers_timeout():.0f} s "
                                   "(workers started without a nanny do not come back)")


def compute(client, lazy, tasks, events):
    """The value of ``lazy``, computed on ``client`` (in bounded time if the cluster goes
    away: :func:`watch`), with :class:`~rv2dist.service.events.TaskProgress` of its
    ``tasks`` (:func:`rv2dist.service.dashboard.tasks_of`) on ``events`` while it runs,
    and all of them when it is done (a failed job's count stops short of them)."""
    from rv2dist.engine.buffers import job_finished
    from rv2dist.service import dashboard
    from rv2dist.service.events import TaskProgress

    future = client.compute(lazy)
    for finished in watch(client, [future], on_poll=dashboard.task_poll(client, events, lambda: [tasks.token])):
        result = finished.result()
    events.emit(TaskProgress({tasks.token: tasks.total}))
    job_finished(client)
    return result


def _connect_timeout() -> float:
    import dask
    from dask.utils import parse_timedelta

    return parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")


def check_config() -> None:
    """A ClusterError naming a dask config value of rv2dist's that a job would refuse
    (``rv2dist.blas``), so that a command says so before starting a cluster."""
    from rv2dist.engine.feature_graph import blas_setting

    try:
        blas_setting()
    except ValueError as error:
        raise ClusterError(str(error)) from None


def connect(scheduler=None, scheduler_file=None, workers=None, log_level=EMBEDDED_LOG_LEVEL):
    """A :class:`distributed.Client` to a running cluster, or to an embedded local one.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    scheduler_file : str, optional
        A scheduler file written by ``dask scheduler --scheduler-file`` (HPC habit).
    workers : int, optional
        Workers of the embedded local cluster (neither of the above given); default
        one per core, one thread each.
    log_level : int
        Level from which the embedded cluster's log lines show.
    """
    from distributed import Client, LocalCluster

    if scheduler_file:
        if not os.path.exists(scheduler_file):
            raise ClusterError(f"scheduler file {scheduler_file} does not exist")
        _check_scheduler_file(scheduler_file)
    if scheduler or scheduler_file:
        try:
            return connect_to(scheduler, scheduler_file)
        except (ConnectionError, ValueError) as error:
            raise ClusterError(str(error)) from None
    cores = os.cpu_count() or 1
    with _workers_ignore_ctrl_c():
        cluster = LocalCluster(
            n_workers=workers or min(cores, 8),
            threads_per_worker=1 if workers is None else max(1, cores // workers),
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=log_level,
        )
    return Client(cluster)


def connect_gpus(log_level=EMBEDDED_LOG_LEVEL):
    """A :class:`distributed.Client` to an embedded :class:`dask_cuda.LocalCUDACluster`,
    one worker per GPU (``--gpus``); ``log_level`` as :func:`connect` takes it."""
    from distributed import Client

    with _workers_ignore_ctrl_c():
        return Client(_cuda_cluster(log_level))


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (inherited): Ctrl-C reaches the whole
    terminal process group, and the main process, not each worker with its traceback,
    stops the job and closes the cluster."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_scheduler_file(path):
    import json

    try:
        with open(path) as handle:
            address = json.load(handle).get("address")
    except (ValueError, AttributeError) as error:
        raise ClusterError(f"{path}: not a scheduler file ({type(error).__name__}: {error})") from None
    if not isinstance(address, str):
        raise ClusterError(f"{path}: not a scheduler file (it names no scheduler address)")


def _cuda_cluster(log_level):
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
    return LocalCUDACluster(host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=log_level, **options)


def dashboard_link(client) -> str:
    """The dashboard URL of ``client``'s cluster ("" when it has none)."""
    try:
        return client.dashboard_link or ""
    except Exception:
        return ""
