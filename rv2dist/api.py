"""The public entry points: :func:`similarity`, :func:`rv2` and :func:`plan`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import warnings

import numpy as np

from rv2dist.core import statistics as stat_checks
from rv2dist.core.measures import MEASURES, check_names
from rv2dist.core import significance
from rv2dist.io.ids import check_ids
from rv2dist.io.inputs import as_layers, backend, check_obs, is_dask, real_number
from rv2dist.io.names import is_pair, select, split_layer_selection
from rv2dist.planning.plan import make_plan

__all__ = ["similarity", "rv2", "plan", "UndefinedLayerWarning", "UndefinedReplicateWarning", "FewReplicatesWarning"]


class UndefinedLayerWarning(RuntimeWarning):
    """A layer has zero variance (or, uncentred, is all zeros): its metrics are NaN."""


class UndefinedReplicateWarning(RuntimeWarning):
    """Bootstrap replicates whose weights leave a metric undefined were left out of the
    intervals (the ``undefined_replicates`` attr of the interval variables)."""


class FewReplicatesWarning(UserWarning):
    """Too few bootstrap replicates for the interval's confidence: its ends rest on the
    most extreme replicates."""


def _result_dtype(layers):
    dtypes = {np.dtype(array.dtype) for _, array in layers}
    if all(d.kind == "f" and d.itemsize <= 4 for d in dtypes):
        return "float32"
    return "float64"


def default_memory_budget(client=None) -> int:
    """Bytes one task may use: a share of worker memory per thread (or of free RAM)."""
    if client is not None:
        info = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else client.scheduler_info()["workers"]
        shares = [w["memory_limit"] / max(1, w["nthreads"]) for w in info.values() if w.get("memory_limit")]
        if shares:
            return int(min(shares) / 2)
    import psutil

    return int(psutil.virtual_memory().available / max(1, os.cpu_count() or 1) / 2)


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


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
    return _local_task_threads()


@functools.lru_cache(maxsize=1)
def _local_task_threads() -> int:
    """Threads for dask's local scheduler: one per BLAS pool, since a multithreaded BLAS
    already spreads each GEMM over the cores and more tasks would oversubscribe them."""
    from threadpoolctl import threadpool_info

    cores = os.cpu_count() or 1
    blas = max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=1)
    return max(1, cores // max(1, blas))


DEVICES = ("auto", "cpu", "gpu")


def _choose_device(device, layers):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    on_gpu = any(backend(array) == "cupy" for _, array in layers)
    return "gpu" if on_gpu else "cpu"


def _require_cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise ValueError(
            f"device='gpu' needs CuPy and a CUDA GPU here (pip install 'rv2dist[gpu]'): "
            f"{type(error).__name__}: {error}"
        ) from None


def _gpu_memory_budget() -> int:
    try:
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
        return int(free // 4)
    except Exception:
        return 4 * 2**30


# each replicate is a pass over the data and a few tasks per row chunk in the graph:
# a million would be hours of work and gigabytes of graph before the first result
MAX_RESAMPLES = 100_000


def _positive_count(option, value):
    if value is None:
        return 0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{option} must be a positive integer, not {value!r}")
    if value > MAX_RESAMPLES:
        raise ValueError(f"{option}={value:,} is more than rv2dist runs (at most {MAX_RESAMPLES:,}, each a pass "
                         "over the data); for p-values below 1e-5 use the analytic tests (tests=True; --tests)")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Resampling:
    """The significance and resampling options of a job, validated (counts 0: none)."""

    tests: bool = False
    correction: str = "holm"
    permutations: int = 0
    bootstrap: int = 0
    seed: int = 0
    confidence: float = 0.95
    keep_replicates: bool = False


def check_resampling(tests, correction, permutations, bootstrap, seed, confidence, keep_replicates=False):
    """The resampling options, validated, as a :class:`Resampling` (counts as ints)."""
    if not isinstance(tests, (bool, np.bool_)):
        raise TypeError(f"tests must be True or False, not {tests!r}")
    if not isinstance(keep_replicates, (bool, np.bool_)):
        raise TypeError(f"keep_replicates must be True or False, not {keep_replicates!r}")
    significance.choose_correction(correction)
    permutations = _positive_count("permutations", permutations)
    bootstrap = _positive_count("bootstrap", bootstrap)
    if keep_replicates and not bootstrap:
        raise ValueError("keep_replicates=True keeps bootstrap replicates: give bootstrap=B as well")
    if seed is None:
        seed = 0
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if not real_number(confidence) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number between 0 and 1, not {confidence!r}")
    fewest = significance.fewest_replicates(confidence)
    if 0 < bootstrap < fewest:
        warnings.warn(f"bootstrap={bootstrap}: with fewer than {fewest} replicates the {confidence:g} interval's ends "
                      f"rest on the most extreme replicates; use {fewest} or more (1,000 for a paper)",
                      FewReplicatesWarning, stacklevel=3)
    return Resampling(bool(tests), correction, permutations, bootstrap, int(seed), float(confidence),
                      bool(keep_replicates))


def _prepare(a, b, metric, center, layers, route, client, memory_budget, precision, device, align_obs,
             layer_names=None, obs_dim=None, resampling=Resampling()):
    names = check_names(metric)
    tests, permutations, bootstrap = resampling.tests, resampling.permutations, resampling.bootstrap
    for option, value in (("center", center), ("align_obs", align_obs)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{option} must be True or False, not {value!r}")
    self_job = b is None
    names_a, names_b = _per_side(layer_names)
    layers_a, ids_a = as_layers(a, "a", names=names_a, obs_dim=obs_dim)
    layers_b, ids_b = (None, None) if self_job else as_layers(b, "b", names=names_b, obs_dim=obs_dim)
    want_a, want_b = split_layer_selection(layers, self_job)
    layers_a = select(layers_a, want_a, "a")
    if not self_job:
        layers_b = select(layers_b, want_b, "b")
        if align_obs and (ids_a is None or ids_b is None):
            raise ValueError("align_obs=True needs observation ids on both sides: give stores or Datasets "
                             "(arrays in a mapping have none)")
        order = check_ids(ids_a, ids_b, align_obs, labels=(_network_label(a, "a"), _network_label(b, "b")))
        if order is not None:
            layers_b = [(name, array[order]) for name, array in layers_b]
    everything = layers_a + (layers_b or [])
    n = check_obs(everything)
    needed = sorted({MEASURES[m].centred(center) for m in names}, reverse=True)
    for name in names:
        if n < MEASURES[name].min_obs:
            raise ValueError(f"{name} needs at least {MEASURES[name].min_obs} observations, got {n}")
    if tests and n < significance.MIN_OBS:
        raise ValueError(f"tests need at least {significance.MIN_OBS} observations (the permutation variance "
                         f"divides by n - 3), got n = {n}")
    device = _choose_device(device, everything)
    if device == "gpu" and client is None:
        _require_cupy()
    input_chunks = _row_chunks(everything)
    widths = [(name, _units(array)) for name, array in layers_a]
    widths_b = [(name, _units(array)) for name, array in layers_b] if layers_b else None
    shared = dict(
        dtype=_result_dtype(everything),
        memory_budget=(memory_budget if memory_budget is not None
                       else _gpu_memory_budget() if device == "gpu" else default_memory_budget(client)),
        parallelism=default_parallelism(client, device),
        row_chunks=input_chunks,
        precision=precision,
        device=device,
        n_stat_sets=len(needed),
    )
    # uncentred 1'Ã1 and row sums: only the tests and measures reading them (rv2_null, rsa) need them
    column_sums = bool(tests) or any(MEASURES[name].reads_column_sums for name in names)
    # the tests' skewness (tr(A^3) of every layer) is of centred statistics only
    job_plan = dataclasses.replace(make_plan(n, widths, widths_b, route=route, tests=tests and True in needed,
                                             **shared), column_sums=column_sums)
    extra = []
    if permutations:
        # a permutation changes only the products between a and the permuted b, and its
        # p-values read only those
        extra.append(("permutation", permutations, dataclasses.replace(
            make_plan(n, widths, widths_b or widths, route=job_plan.route, cross_only=True, **shared),
            column_sums=False)))
    if bootstrap:
        # weighted rows enter the feature route's products; the gram route has no weights
        extra.append(("bootstrap", bootstrap, dataclasses.replace(job_plan, tests=False, cube_flops=0.0)
                      if job_plan.route == "feature" else dataclasses.replace(
                          make_plan(n, widths, widths_b, route="feature", **shared), column_sums=column_sums)))
    job_plan = dataclasses.replace(job_plan, resampling=tuple(extra), tests=tests)
    # kept replicates are paired with another job's by the observations their weights fell on
    ids = ids_a if ids_a is not None else ids_b
    digest = ids_digest(ids) if resampling.keep_replicates and ids is not None else None
    return names, needed, everything, job_plan, self_job, layers_a, layers_b, device, digest


def ids_digest(ids) -> str:
    """A digest of observation ids in their order: equal for the same ids whatever
    their integer width or string dtype."""
    import hashlib

    ids = np.asarray(ids)
    if ids.dtype.kind in "iub":
        data = ids.astype(np.int64).tobytes()
    elif ids.dtype.kind == "f":
        data = ids.astype(np.float64).tobytes()
    else:
        data = "\0".join(map(str, ids.ravel().tolist())).encode()
    return hashlib.sha256(repr(ids.shape).encode() + data).hexdigest()


def _per_side(names):
    """``names=`` for both sides: one list, or a pair of lists (a's, b's)."""
    return tuple(names) if is_pair(names) else (names, names)


def _units(array) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) if len(array.shape) > 1 else 1


def _row_chunks(layers):
    chunkings = {tuple(array.chunks[0]) for _, array in layers if is_dask(array)}
    if len(chunkings) == 1 and all(is_dask(array) for _, array in layers):
        return chunkings.pop()
    return None


def _to_gpu(block):
    import cupy

    return cupy.asarray(block)


def _as_float(block):
    return block if block.dtype.kind == "f" else block.astype(np.float64)


def _row_chunk_list(array, row_chunks):
    """The row chunks ``(rows, units)`` of one layer as laid out by ``row_chunks``:
    views of an in-memory array (never copied), or the task keys of a dask array's
    chunks; and the dask collection those keys belong to (or None)."""
    if is_dask(array):
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim > 2:
            array = array.rechunk({i: -1 for i in range(1, array.ndim)}).reshape(array.shape[0], -1)
        array = array.rechunk({0: row_chunks, 1: -1})
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        return [(array.name, c, 0) for c in range(len(row_chunks))], array
    array = array.reshape(array.shape[0], -1)
    bounds = np.cumsum((0,) + tuple(row_chunks))
    return [_as_float(array[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])], None


def _inputs_token(layers):
    """Names the inputs in task keys: dask arrays by their names, in-memory arrays by a
    random token (hashing every byte would cost as much as a pass of the products)."""
    import uuid

    from dask.base import tokenize

    return tokenize([array.name if is_dask(array) else uuid.uuid4().hex for _, array in layers])


def plan(a, b=None, *, metric="rv2", center=True, layers=None, route="auto", client=None,
         memory_budget=None, precision="auto", device="auto", align_obs=False, names=None, obs_dim=None,
         tests=False, correction="holm", permutations=None, bootstrap=None, seed=None, confidence=0.95,
         keep_replicates=False):
    """The :class:`~rv2dist.planning.plan.Plan` that :func:`similarity` would run (shapes only).

    Takes the same arguments as :func:`similarity`; reads no data.  ``print()`` it to
    see the route and why, the chunking, the work in FLOP and the peak bytes per task.
    """
    resampling = check_resampling(tests, correction, permutations, bootstrap, seed, confidence, keep_replicates)
    with client_for(client) as client:
        return _prepare(a, b, metric, center, layers, route, client, memory_budget, precision, device, align_obs,
                        layer_names=names, obs_dim=obs_dim, resampling=resampling)[3]


def similarity(a, b=None, *, metric="rv2", center=True, layers=None, route="auto", client=None,
               memory_budget=None, precision="auto", device="auto", align_obs=False, names=None, obs_dim=None,
               tests=False, correction="holm", permutations=None, bootstrap=None, seed=None, confidence=0.95,
               keep_replicates=False, compute=True, progress=True):
    """Similarity matrices between the layers of two networks (or one with itself).

    Never forms an n x n matrix: every metric follows from sums over observations
    (see :mod:`rv2dist.core.measures`), computed in one dask graph for all layer pairs.

    Parameters
    ----------
    a, b : mapping, sequence, xarray.Dataset, xarray.DataArray or path
        Activations: ``{layer name: array (n_obs, ...)}`` of numpy, dask or CuPy arrays,
        PyTorch tensors (CPU ones share memory; CUDA ones go to CuPy through DLPack
        and the job runs on the GPU) or DataArrays (first dimension = observations);
        a sequence of such arrays (as hoggorm takes them; see ``names``); a Dataset
        (sample dimension ``obs`` or ``obs_dim``); a DataArray (one layer); or the path
        of an activation store.  Further dims are flattened into units; mappings and
        sequences keep their order as depth order.  ``b=None`` compares ``a`` with
        itself, computing each product once.  See :mod:`rv2dist.inputs`.
    metric : str or list of str
        ``"rv2"`` (modified RV, Smilde et al. 2009), ``"rv"``, ``"cka"`` (linear CKA),
        ``"cka_debiased"`` (Song et al.'s unbiased HSIC; may be negative) or
        ``"rv2_null"`` (expected RV2 under permutation of the rows of one side).
        A list returns an xarray.Dataset with one variable per metric.
    center : bool
        Centre columns first (default).  ``False`` reproduces hoggorm's RV2coeff;
        ``"cka"`` and ``"cka_debiased"`` always centre.
    layers : list of str, or (list, list), optional
        Layers to compare, in the order wanted; a pair gives a's and b's separately.
    route : {"auto", "feature", "gram"}
        The exact route (see :func:`rv2dist.planning.plan.make_plan`); ``"auto"`` lets the
        planner choose from the shapes.
    client : distributed.Client or str, optional
        Run on this cluster, or on the scheduler at this address (``"tcp://host:8786"``;
        connected for the call, and with ``compute=False`` only to plan); default: the
        current dask scheduler (threads, or the active distributed client).
    memory_budget : int or str, optional
        Bytes a task may use (or a size such as ``"4GB"``); default: half of worker
        memory per thread.
    precision : {"auto", "input", "float64"}
        Dtype of the per-chunk products (see :func:`rv2dist.planning.plan.make_plan`):
        ``"auto"`` keeps float32 input in float32 on CPUs and uses float64 on GPUs.
    device : {"auto", "cpu", "gpu"}
        Where the chunk products run.  ``"gpu"`` moves each chunk to the worker's GPU
        as a CuPy array (only the small sums come back); ``"auto"`` follows the input
        (CuPy-backed arrays run on the GPU).  The memory budget then defaults to a
        quarter of the free GPU memory.
    align_obs : bool
        When both networks come from stores (or Datasets) holding the same observation
        ids in different orders, reorder b's rows to a's order.  Default ``False``:
        differing ids are an error naming the first mismatch.
    names : list of str, or (list, list), optional
        Layer names of a sequence of arrays (default ``"0"``, ``"1"``, ...); a pair
        names a's and b's separately.
    obs_dim : str, optional
        The sample dimension of Datasets whose sample dimension is not ``obs``.
    tests : bool
        Add, per metric ``m`` of ``"rv2"``, ``"rv"``, ``"cka"``, ``"cka_debiased"``:
        ``m_z``, the z-score against the exact mean and variance of ``m`` when the rows
        of one side are randomly permuted (computed from the same sums, no
        permutations run); ``m_p``, its upper one-sided p-value (a Pearson type III
        law with the large-n skewness, from ``tr(A^3)`` of every layer on either route;
        normal where that is unknown), never below 1e-300 (a p-value of 1e-300 means
        p <= 1e-300: the z-score ranks such cells); ``m_p_corrected``, adjusted across
        the matrix (see :mod:`rv2dist.significance` and docs/statistics.md).
    correction : {"holm", "bh"}
        The adjustment of ``m_p_corrected``: Holm (family-wise error) or
        Benjamini-Hochberg (false discovery rate).
    permutations : int, optional
        Also run this many seeded random permutations of ``b``'s rows (of a second
        copy of ``a`` when ``b`` is None) and add ``m_p_permutation``, the Monte Carlo
        p-value ``(1 + #{permuted >= observed}) / (permutations + 1)``.  Each costs
        the products between ``a`` and ``b`` once more (the plan says how much).
        At most 100,000.
    bootstrap : int, optional
        Also compute this many Poisson bootstrap replicates (every observation
        weighted by an independent Poisson(1) count drawn from ``seed`` and its
        index, so chunking and workers do not change them) and add ``m_low`` and
        ``m_high``, the percentile interval of level ``confidence``.  Each replicate
        costs the job's products once more; the data are read once.  At most 100,000;
        fewer than ``2 / (1 - confidence) + 1`` (41 at 0.95) warn
        (:class:`FewReplicatesWarning`): the interval's ends then rest on the most
        extreme replicates.
    seed : int, optional
        Seed of the permutations and bootstrap counts (default 0).
    confidence : float
        Level of the bootstrap intervals (default 0.95).
    keep_replicates : bool
        With ``bootstrap``, also add ``m_replicates``, every replicate's matrix (dims
        ``replicate x layer_a x layer_b``), and the attr ``obs_digest`` (a digest of
        the observation ids, when the inputs have them): the paired differences of
        :func:`rv2dist.compare_cells` and :func:`rv2dist.compare_results` read them.
        Two calls with the same ``seed``, ``bootstrap`` and observations in the same
        order draw the same weights, so their replicates pair too.
    compute : bool
        ``False`` returns a :class:`dask.delayed.Delayed` that builds the result when
        computed; nothing is read or computed before that.  Its result names layers of
        zero variance in its ``undefined_layers`` attr, without the warning a computed
        call gives (see :func:`warn_undefined`).  Its tasks keep the arrays
        they read stored rows into (and, on the local scheduler, their slabs) for the next
        task and job: on the local scheduler for ``rv2dist.keep-buffers`` seconds after
        its last task, on a cluster's workers until a job ends there (as
        :func:`similarity` ends its own); :func:`rv2dist.release_buffers` frees them at
        once (see :mod:`rv2dist.buffers`).
    progress : bool
        Before computing a job whose work passes 100 GFLOP (products and resampling
        together: seconds or more), print its cost in one line on stderr (see
        :func:`rv2dist.service.progress.announce_cost`); ``False``, ``compute=False`` or the
        command line's ``-q``: no line.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Dims ``("layer_a", "layer_b")`` with layer names as coordinates, ``name`` the
        metric; attrs ``n_obs``, ``metric``, ``center``, ``route``, ``precision``.
        A Dataset for several metrics, or with tests, permutations or bootstrap.

    Raises
    ------
    ValueError, TypeError
        Naming the layer or value at fault: differing observation counts, NaN or Inf,
        non-numeric dtypes, empty layers, unknown metric, route or layer.
    """
    from rv2dist.engine.buffers import job_finished, keep_seconds

    resampling = check_resampling(tests, correction, permutations, bootstrap, seed, confidence, keep_replicates)
    seconds = keep_seconds()
    with client_for(client) as client:
        result = _lazy_result(a, b, metric, center, layers, route, client, memory_budget, precision, device,
                              align_obs, names, obs_dim, resampling, compute, seconds, progress)
        if not compute:
            return result
        if client is None:
            try:
                computed = compute_locally(result)
            finally:
                job_finished(seconds=seconds)
        else:
            computed = client.compute(result, sync=True)
            job_finished(client, seconds)
    warn_undefined(computed)
    return computed


def _lazy_result(a, b, metric, center, layers, route, client, memory_budget, precision, device, align_obs,
                 layer_names, obs_dim, resampling, compute, seconds, progress):
    """The :class:`dask.delayed.Delayed` that :func:`similarity` computes (see there)."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    from rv2dist.engine.buffers import finish_job
    from rv2dist.engine.graph import TaskGraph, build_statistics
    from rv2dist.service.progress import announce_cost

    names, needed, everything, job_plan, self_job, layers_a, layers_b, device, digest = _prepare(
        a, b, metric, center, layers, route, client, memory_budget, precision, device, align_obs,
        layer_names=layer_names, obs_dim=obs_dim, resampling=resampling,
    )
    announce_cost(job_plan, enabled=progress and compute)
    graph = TaskGraph(_inputs_token(everything))
    collections = []
    layouts = {}

    # where each row chunk has one consumer, a stored chunk is read by that task: no
    # read task, and no chunk moved between workers
    read_in_task = (device == "cpu" and job_plan.route == "feature" and not job_plan.resampling
                    and len(job_plan.product_groups) == 1 and len(needed) == 1)

    def chunks_for(row_chunks):
        if row_chunks not in layouts:
            layouts[row_chunks] = _chunk_lists(graph, everything, row_chunks, device, collections, len(layouts),
                                               shared=bool(job_plan.resampling), read_in_task=read_in_task)
        return layouts[row_chunks]

    chunks = chunks_for(job_plan.row_chunks)
    statistics = [build_statistics(graph, chunks, job_plan, flag) for flag in needed]
    resampled = _resampled_statistics(graph, chunks, chunks_for, job_plan, needed, len(layers_a), self_job,
                                      resampling.seed)
    final = graph.add("result", (), _assemble, statistics, needed, names, center, device, job_plan,
                      [n for n, _ in layers_a], [n for n, _ in (layers_b or layers_a)],
                      [_network_label(a, "a"), _network_label(b, "b")],
                      isinstance(metric, str) and not (resampling.tests or resampled), list(resampled),
                      list(resampled.values()), resampling, digest)
    if not compute:
        # computed by whoever, the job's end still starts the clock on its kept arrays
        final = graph.add("job-end", (), finish_job, final, seconds)
    with _gpu_annotation(client, device):
        layer = HighLevelGraph.from_collections(final[0], graph.tasks, dependencies=collections)
    return Delayed(final, layer, layer=final[0])


@contextlib.contextmanager
def client_for(client):
    """``client=`` as a :class:`distributed.Client` (or None): one given, or one
    connected to a scheduler address for the block and closed after it."""
    if isinstance(client, str):
        from rv2dist.service.cluster import connect

        with connect(scheduler=client) as connected:
            yield connected
        return
    if client is not None:
        from distributed import Client

        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client or a scheduler address such as "
                            f"'tcp://host:8786', not a {type(client).__module__}.{type(client).__name__}")
    yield client


def _resampled_statistics(graph, chunks, chunks_for, job_plan, needed, n_layers_a, self_job, seed):
    """Keys of the permuted and bootstrap statistics, ``{kind: [keys per statistic set]}``;
    ``chunks_for(row_chunks)`` gives the chunk lists of a sub-plan's layout."""
    from rv2dist.engine.graph import bootstrap_statistics, permuted_statistics

    resampled = {}
    for kind, count, sub_plan in job_plan.resampling:
        sub_chunks = chunks_for(sub_plan.row_chunks)
        if kind == "permutation":
            # b's rows are gathered from the job's own chunks (a's second copy in a self job)
            chunks_b = chunks[:n_layers_a] if self_job else chunks[n_layers_a:]
            resampled[kind] = [permuted_statistics(graph, sub_chunks[:n_layers_a], chunks_b, sub_plan, flag, seed, count)
                               for flag in needed]
        else:
            resampled[kind] = [bootstrap_statistics(graph, sub_chunks, sub_plan, flag, seed, count) for flag in needed]
    return resampled


def _chunk_lists(graph, layers, row_chunks, device, collections, index, shared=False, read_in_task=False):
    """Per layer, its row chunks laid out by ``row_chunks`` (see :func:`_row_chunk_list`),
    moved to the GPU when the job runs there; dask collections read are appended to
    ``collections``.  ``shared``: in-memory chunks become tasks of their own, which the
    many tasks of resampling refer to instead of each carrying a copy.  ``read_in_task``:
    a layer read from a store as it is comes as stored rows (:func:`rv2dist.io.chunks.stored_rows`)
    that the one task using each chunk reads itself."""
    from rv2dist.engine.graph import to_device
    from rv2dist.io.chunks import stored_rows

    chunks = []
    for i, (_, array) in enumerate(layers):
        ranges = stored_rows(array, row_chunks) if read_in_task else None
        if ranges is not None:
            chunks.append(ranges)
            continue
        layer_chunks, collection = _row_chunk_list(array, row_chunks)
        if shared and collection is None:
            layer_chunks = [graph.add(f"rows-{index}", (i, c), _same, chunk) for c, chunk in enumerate(layer_chunks)]
        chunks.append(layer_chunks)
        collections += [collection] if collection is not None else []
    if device == "gpu" and not all(backend(array) == "cupy" for _, array in layers):
        # chunks are read on the host and moved to the worker's GPU once
        chunks = to_device(graph, chunks, _to_gpu, f"-{index}" if index else "")
    return chunks


def _same(value):
    return value


def compute_locally(lazy):
    """Compute with the active scheduler (a distributed client, or dask's configured
    one); by default, local threads sized by :func:`_local_task_threads` (in the calling
    thread when that is one and every input is in memory)."""
    import dask
    from dask.base import get_scheduler

    # a client exists only once distributed is imported: asking dask would import it
    # (half a second on a process's first job)
    client_possible = "distributed" in sys.modules
    if dask.config.get("scheduler", None) is not None or (client_possible and get_scheduler() is not None):
        return lazy.compute()
    threads = _local_task_threads()
    if len(lazy.dask.layers) > 1:
        return lazy.compute(scheduler="threads", num_workers=threads)
    # in-memory inputs: the graph is rv2dist's own tasks, leaving dask's collection
    # optimisations nothing to do; run directly, it costs a millisecond less a call (a
    # small job's whole overhead is a few), and with one thread no hand-offs to a pool
    from dask.local import get_sync
    from dask.threaded import get

    graph = dict(lazy.dask)
    return get_sync(graph, lazy.key) if threads == 1 else get(graph, lazy.key, num_workers=threads)


def _undefined_message(names, center):
    return (f"layer(s) {', '.join(map(repr, names))} have zero variance"
            f"{'' if center else ' (or are all zeros, or too small to square)'}: their rows/columns are NaN")


def undefined_message(result):
    """What a result's ``undefined_layers`` attr says, as the warning puts it (None
    when every layer is defined)."""
    names = list(result.attrs.get("undefined_layers", ()))
    return _undefined_message(names, bool(result.attrs.get("center", 1))) if names else None


def replicates_message(result):
    """What the ``undefined_replicates`` attrs of a result's interval variables say, in
    one sentence (None when every bootstrap replicate was defined)."""
    variables = result.data_vars.values() if hasattr(result, "data_vars") else ()
    counts = {v.attrs["metric"]: v.attrs["undefined_replicates"] for v in variables
              if "undefined_replicates" in v.attrs and v.name.endswith("_low")}
    if not counts:
        return None
    listed = ", ".join(f"{metric}: {count:,}" for metric, count in counts.items())
    return (f"bootstrap replicates whose weights leave a metric undefined (too few weighted observations, or a "
            f"layer without variance in the resample) are left out of the intervals ({listed} of "
            f"{result.attrs.get('bootstrap', '?'):,})")


def warn_undefined(result, stacklevel=2):
    """Warn of the layers a computed result marks undefined (its ``undefined_layers``
    attr) and of bootstrap replicates left out of its intervals, in the caller's
    process: the task that found them may have run on a worker."""
    for message, category in ((undefined_message(result), UndefinedLayerWarning),
                              (replicates_message(result), UndefinedReplicateWarning)):
        if message:
            warnings.warn(message, category, stacklevel=stacklevel + 1)


def _gpu_annotation(client, device):
    """Restrict tasks to workers with a ``GPU`` resource when the cluster declares one
    (a mixed CPU/GPU cluster); otherwise annotate nothing, so no task waits forever."""
    import contextlib

    import dask

    if device != "gpu" or client is None:
        return contextlib.nullcontext()
    workers = client.scheduler_info()["workers"].values()
    if any("GPU" in w.get("resources", {}) for w in workers):
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


def _network_label(source, side):
    """How errors name network ``side``: with its path when it came from a store."""
    return f"network {side} ({os.fspath(source)})" if isinstance(source, (str, os.PathLike)) else f"network {side}"


def _assemble(statistics, flags, names, center, device, job_plan, names_a, names_b, networks, single, kinds,
              resampled, resampling, digest):
    import xarray as xr

    statistics = dict(zip(flags, statistics))
    # (task arguments hold keys in lists only: dask does not look inside dicts)
    resampled = {kind: dict(zip(flags, sets)) for kind, sets in zip(kinds, resampled)}
    layer_names = job_plan.layer_names

    def layer(i):
        # both networks may have a layer of that name
        side = "" if job_plan.self_job else f" of {networks[0 if i < job_plan.n_layers_a else 1]}"
        return f"layer {layer_names[i]!r}{side}"

    for stats in statistics.values():
        bad = [i for i, ok in enumerate(stats.finite) if not ok]
        if bad:
            raise ValueError(f"{layer(bad[0])} contains NaN or Inf (or values too large to sum in float64)")
        faults = [(i, fault) for i, fault in
                  enumerate(stat_checks.scale_faults(stats, job_plan.widths, job_plan.compute_dtype)) if fault]
        if faults:
            i, fault = faults[0]
            wider = ", or pass precision='float64'" if job_plan.compute_dtype == "float32" else ""
            raise ValueError(f"{layer(i)} {fault}; multiply it by a constant (no metric depends on a layer's "
                             f"scale){wider}")
    # told by the caller from the attrs: a warning here, on a worker, would go to its stderr
    undefined = sorted({layer_names[i] for stats in statistics.values()
                        for i, u in enumerate(stats.undefined) if u})
    if job_plan.self_job:
        # (not the permuted sets: a layer against another's shuffled rows is no symmetric pair)
        statistics = {flag: stat_checks.symmetrised(stats) for flag, stats in statistics.items()}
        if "bootstrap" in resampled:
            resampled["bootstrap"] = {flag: [stat_checks.symmetrised(r) for r in sets]
                                      for flag, sets in resampled["bootstrap"].items()}
        if "permutation" in resampled:
            # computed as the network against a permuted copy of itself: twice its layers
            resampled["permutation"] = {flag: [stat_checks.against_copy(r, job_plan.n_layers_a) for r in sets]
                                        for flag, sets in resampled["permutation"].items()}
    la = job_plan.n_layers_a
    rows = slice(0, la)
    cols = slice(0, la) if job_plan.self_job else slice(la, job_plan.n_layers)
    coords = {"layer_a": ("layer_a", list(names_a), {"long_name": "layer of network a"}),
              "layer_b": ("layer_b", list(names_b), {"long_name": "layer of network b"})}

    def variable(values, name, long_name, description, **attrs):
        return xr.DataArray(values, dims=("layer_a", "layer_b"), coords=coords, name=name,
                            attrs={"long_name": long_name, "description": description, **attrs})

    variables = {}
    for name in names:
        measure = MEASURES[name]
        centred = measure.centred(center)
        stats = statistics[centred]
        values = measure.matrix(stats)
        variables[name] = variable(values[rows, cols], name, measure.long_name, measure.description, metric=name,
                                   center=int(centred))
        replicates = (np.stack([measure.matrix(r)[rows, cols] for r in resampled["bootstrap"][centred]])
                      if resampling.bootstrap else None)
        undefined_replicates = (significance.undefined_replicates(replicates, values[rows, cols])
                                if resampling.bootstrap else 0)
        extra = _significance(name, values, stats, resampled.get("permutation", {}).get(centred), replicates,
                              (rows, cols), job_plan.self_job, resampling)
        for suffix, array in extra.items():
            long_name, description = significance.DESCRIPTIONS[suffix]
            more = {"correction": resampling.correction} if suffix == "p_corrected" else {}
            if suffix in ("p", "p_corrected"):
                more["floor"] = significance.P_FLOOR
            if suffix in ("low", "high") and undefined_replicates:
                description += significance.LEFT_OUT
                more["undefined_replicates"] = undefined_replicates
            variables[f"{name}_{suffix}"] = variable(
                array, f"{name}_{suffix}", f"{long_name} of {name}", description.format(
                    correction=resampling.correction, permutations=resampling.permutations,
                    bootstrap=resampling.bootstrap, confidence=resampling.confidence,
                    undefined=undefined_replicates, floor=significance.P_FLOOR), metric=name, **more)
        if resampling.keep_replicates:
            variables[f"{name}_replicates"] = xr.DataArray(
                replicates, dims=("replicate", "layer_a", "layer_b"), name=f"{name}_replicates",
                coords={**coords, "replicate": ("replicate", np.arange(len(replicates)),
                                                {"long_name": "bootstrap replicate"})},
                attrs={"long_name": f"bootstrap replicates of {name}", "metric": name,
                       "description": significance.REPLICATES_DESCRIPTION.format(bootstrap=resampling.bootstrap)})
    attrs = {
        "n_obs": int(job_plan.n_obs),
        "center": int(bool(center)),
        "route": job_plan.route,
        "precision": job_plan.compute_dtype,
        "device": device,
    }
    if undefined:
        attrs.update(undefined_layers=undefined)
    if resampling.tests:
        attrs.update(tests=1, correction=resampling.correction)
    if resampling.permutations or resampling.bootstrap:
        attrs.update(seed=resampling.seed)
    if resampling.permutations:
        attrs.update(permutations=resampling.permutations)
    if resampling.bootstrap:
        attrs.update(bootstrap=resampling.bootstrap, confidence=resampling.confidence)
    if digest is not None:
        attrs.update(obs_digest=digest)
    if single:
        result = variables[names[0]]
        result.attrs.update(attrs)
        return result
    dataset = xr.Dataset(variables)
    dataset.attrs.update(attrs, metric=list(names))
    return dataset


def _significance(name, values, stats, permuted, replicates, block, self_job, resampling):
    """``{suffix: (La, Lb) array}``: the tests, permutation p-values and bootstrap
    interval of metric ``name`` from its full matrix ``values``, the statistics, the
    permuted statistics and the bootstrap replicates (already of the result's cells);
    ``block`` the result's rows and columns of the full matrices."""
    rows, cols = block
    tested = name in significance.TESTED
    extra = {}
    if resampling.tests and tested:
        mean, variance = significance.null_moments(name, stats)
        extra["z"] = significance.z_scores(values, mean, variance)[rows, cols]
        extra["p"] = significance.upper_p(extra["z"], significance.skewness(stats)[rows, cols])
        extra["p_corrected"] = significance.corrected_matrix(extra["p"], self_job, resampling.correction)
    if resampling.permutations and tested:
        extra["p_permutation"] = significance.permutation_p(name, stats, permuted)[rows, cols]
    if resampling.bootstrap:
        extra["low"], extra["high"] = significance.percentile_interval(replicates, resampling.confidence)
    return extra


def rv2(x, y, *, center=True) -> float:
    """RV2 between two arrays with the same observations (rows) in the same order.

    Parameters
    ----------
    x, y : array_like
        ``(n_obs, ...)`` arrays; further dims are flattened into units.
    center : bool
        Centre columns first (default); ``False`` matches hoggorm's RV2coeff.
    """
    result = similarity({"x": x}, {"y": y}, metric="rv2", center=center, route="feature")
    return float(result.values[0, 0])
