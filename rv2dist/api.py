"""The public entry points: :func:`similarity`, :func:`plan` and :func:`rv2`.

Each call goes the same way down the layers: its options are checked into small types
(:mod:`rv2dist.planning.options`), its inputs become layers (:mod:`rv2dist.io.inputs`),
the planner makes a :class:`~rv2dist.planning.plan.Plan` from their shapes, the engine
builds one dask graph from it (:mod:`rv2dist.engine.build`) and runs it
(:mod:`rv2dist.engine.execute`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from rv2dist.core import checks, significance
from rv2dist.core.block_measures import check_measure_options
from rv2dist.core.errors import FewReplicatesWarning, UndefinedLayerWarning, UndefinedReplicateWarning
from rv2dist.core.measures import MEASURES, check_names, warn_unread_options
from rv2dist.engine import execute
from rv2dist.engine.assemble import ResultSpec, undefined_message, warn_undefined
from rv2dist.engine.layout import InputLayer, backend, input_row_chunks
from rv2dist.io.ids import check_ids, ids_digest
from rv2dist.io.inputs import as_layers, check_obs
from rv2dist.io.names import is_pair, select, split_layer_selection
from rv2dist.planning.options import check_resampling
from rv2dist.planning.plan import Plan, cost_line
from rv2dist.planning.planner import check_given_plan, make_plan

__all__ = ["similarity", "rv2", "plan", "DEVICES", "UndefinedLayerWarning", "UndefinedReplicateWarning",
           "FewReplicatesWarning", "undefined_message", "warn_undefined"]

DEVICES = ("auto", "cpu", "gpu")
# a job whose work passes this says what it costs before it starts: seconds or more of
# a laptop's cores, and below it a line would be noise
COST_LINE_FLOP = 1e11


@dataclass(frozen=True)
class _Job:
    """A call's checked inputs: its layers (both sides, in plan order), its plan and
    what its result holds."""

    layers: tuple
    plan: Plan
    spec: ResultSpec


def _result_dtype(layers):
    dtypes = {np.dtype(array.dtype) for _, array in layers}
    if all(d.kind == "f" and d.itemsize <= 4 for d in dtypes):
        return "float32"
    return "float64"


def _choose_device(device, layers, client):
    """Where the products run: as asked, or (``"auto"``) on the GPU when an input is
    already there as CuPy or the cluster runs on GPUs (:func:`~rv2dist.engine.execute.gpu_workers`)."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    on_gpu = any(backend(array) == "cupy" for _, array in layers) or execute.gpu_workers(client)
    return "gpu" if on_gpu else "cpu"


def _per_side(names):
    """``names=`` for both sides: one list, or a pair of lists (a's, b's)."""
    return tuple(names) if is_pair(names) else (names, names)


def _units(array) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) if len(array.shape) > 1 else 1


def _network_label(source, side):
    """How errors name network ``side``: with its path when it came from a store."""
    return f"network {side} ({os.fspath(source)})" if isinstance(source, (str, os.PathLike)) else f"network {side}"


def _sides(a, b, layers, align_obs, layer_names, obs_dim):
    """Both sides' ``[(name, array)]`` (b None for a against itself) and their ids,
    b's rows put in a's order with ``align_obs``."""
    self_job = b is None
    names_a, names_b = _per_side(layer_names)
    layers_a, ids_a = as_layers(a, "a", names=names_a, obs_dim=obs_dim)
    layers_b, ids_b = (None, None) if self_job else as_layers(b, "b", names=names_b, obs_dim=obs_dim)
    want_a, want_b = split_layer_selection(layers, self_job)
    layers_a = select(layers_a, want_a, "a")
    if self_job:
        return layers_a, None, ids_a
    layers_b = select(layers_b, want_b, "b")
    if align_obs and (ids_a is None or ids_b is None):
        raise ValueError("align_obs=True needs observation ids on both sides: give stores or Datasets "
                         "(arrays in a mapping have none)")
    order = check_ids(ids_a, ids_b, align_obs, labels=(_network_label(a, "a"), _network_label(b, "b")))
    if order is not None:
        layers_b = [(name, array[order]) for name, array in layers_b]
    return layers_a, layers_b, ids_a if ids_a is not None else ids_b


def _check_sizes(names, n, resampling):
    for name in names:
        if n < MEASURES[name].min_obs:
            raise ValueError(f"{name} needs at least {MEASURES[name].min_obs} observations, got {n}")
    if resampling.tests and n < significance.MIN_OBS:
        raise ValueError(f"tests need at least {significance.MIN_OBS} observations (the permutation variance "
                         f"divides by n - 3), got n = {n}")


def _stored_rows(array, row_chunks):
    from rv2dist.io.chunks import stored_rows

    return stored_rows(array, row_chunks)


def _make_plan(everything, widths, n, names, flags, options, client):
    """The plan of a job's shapes and options (see :func:`make_plan`)."""
    device, resampling = options["device"], options["resampling"]
    budget = options["memory_budget"]
    if budget is None:
        budget = execute.gpu_memory_budget() if device == "gpu" else execute.default_memory_budget(client)
    stored = any(_stored_rows(array, (n,)) is not None for _, array in everything)
    return make_plan(
        n, *widths, dtype=_result_dtype(everything), route=options["route"], memory_budget=budget,
        parallelism=execute.default_parallelism(client, device),
        row_chunks=input_row_chunks([InputLayer(name, array) for name, array in everything]),
        precision=options["precision"], device=device, n_stat_sets=len(flags),
        # uncentred 1'Ã1 and row sums: only the tests and measures reading them (rv2_null, rsa) need them
        column_sums=resampling.tests or any(MEASURES[name].reads_column_sums for name in names),
        # the tests' skewness (tr(A^3) of every layer) is of centred statistics only
        skewness=resampling.tests and True in flags, resampling=resampling,
        reads=options["reads"] if stored else "none",
        second_moments=any(MEASURES[name].family == "blocks" for name in names))


def _prepare(a, b, options, client, given_plan=None) -> _Job:
    """Check a call's inputs and options; plan it."""
    names = check_names(options["metric"])
    warn_unread_options(names, options["measure_options"], stacklevel=4)  # at the caller's line
    center = checks.flag("center", options["center"])
    checks.flag("align_obs", options["align_obs"])
    resampling = options["resampling"]
    significance.check_tests(names, resampling.tests)
    layers_a, layers_b, ids = _sides(a, b, options["layers"], options["align_obs"], options["names"],
                                     options["obs_dim"])
    everything = layers_a + (layers_b or [])
    n = check_obs(everything)
    _check_sizes(names, n, resampling)
    flags = tuple(sorted({MEASURES[m].centred(center) for m in names}, reverse=True))
    device = _choose_device(options["device"], everything, client)
    if device == "gpu" and client is None:
        execute.require_cupy()
    widths = ([(name, _units(array)) for name, array in layers_a],
              [(name, _units(array)) for name, array in layers_b] if layers_b else None)
    job_plan = _make_plan(everything, widths, n, names, flags, {**options, "device": device}, client)
    if given_plan is not None:
        job_plan = check_given_plan(given_plan, job_plan)
    in_task = job_plan.reads == "in-task"
    inputs = tuple(InputLayer(name, array, _stored_rows(array, job_plan.row_chunks) if in_task else None)
                   for name, array in everything)
    spec = ResultSpec(
        measures=tuple(names), center=center, flags=flags, names_a=tuple(n for n, _ in layers_a),
        names_b=tuple(n for n, _ in (layers_b or layers_a)), networks=(_network_label(a, "a"), _network_label(b, "b")),
        single=isinstance(options["metric"], str) and not (resampling.tests or resampling.resampled),
        resampling=resampling,
        # kept replicates are paired with another job's by the observations their weights fell on
        digest=ids_digest(ids) if resampling.keep_replicates and ids is not None else None,
        measure_options=options["measure_options"])
    return _Job(inputs, job_plan, spec)


def _options(metric, center, layers, route, memory_budget, precision, device, align_obs, names, obs_dim,
             resampling, reads, measure_options):
    return dict(metric=metric, center=center, layers=layers, route=route, memory_budget=memory_budget,
                precision=precision, device=device, align_obs=align_obs, names=names, obs_dim=obs_dim,
                resampling=resampling, reads=reads, measure_options=measure_options)


def plan(a, b=None, *, metric="rv2", center=True, layers=None, route="auto", client=None,
         memory_budget=None, precision="auto", device="auto", align_obs=False, names=None, obs_dim=None,
         tests=False, correction="holm", permutations=None, bootstrap=None, seed=None, confidence=0.95,
         keep_replicates=False, reads="auto", alpha=1.0, ridge_lambda=0.1, svcca_variance=0.99, rcond=None):
    """The :class:`~rv2dist.planning.plan.Plan` that :func:`similarity` would run (shapes only).

    Takes the same arguments as :func:`similarity`; reads no data.  ``print()`` it to
    see the route and why, the chunking, how stored chunks are read, the work in FLOP
    (with every resampling pass) and the peak bytes per task; hand it to
    ``similarity(..., plan=p)`` to run it as printed.
    """
    resampling = check_resampling(tests, correction, permutations, bootstrap, seed, confidence, keep_replicates)
    measure_options = check_measure_options(alpha, ridge_lambda, svcca_variance, rcond)
    with execute.client_for(client) as client:
        options = _options(metric, center, layers, route, memory_budget, precision, device, align_obs, names,
                           obs_dim, resampling, reads, measure_options)
        return _prepare(a, b, options, client).plan


def _announce_cost(job_plan, enabled):
    """The plan's cost line on stderr before long work (see :data:`COST_LINE_FLOP`),
    unless ``enabled`` is False or dask config ``rv2dist.progress`` is."""
    import dask

    if enabled and dask.config.get("rv2dist.progress", True) and job_plan.total_flops >= COST_LINE_FLOP:
        print(cost_line(job_plan), file=sys.stderr, flush=True)


def similarity(a, b=None, *, metric="rv2", center=True, layers=None, route="auto", client=None,
               memory_budget=None, precision="auto", device="auto", align_obs=False, names=None, obs_dim=None,
               tests=False, correction="holm", permutations=None, bootstrap=None, seed=None, confidence=0.95,
               keep_replicates=False, compute=True, progress=True, plan=None, reads="auto", alpha=1.0,
               ridge_lambda=0.1, svcca_variance=0.99, rcond=None):
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
        itself, computing each product once.  See :mod:`rv2dist.io.inputs`.
    metric : str or list of str
        A measure of :data:`rv2dist.core.measures.MEASURES` (docs/measures.md): the RV
        family ``"rv2"`` (modified RV, Smilde et al. 2009), ``"rv"``, ``"cka"`` (linear
        CKA), ``"cka_debiased"`` (Song et al.'s unbiased HSIC; may be negative),
        ``"rsa"``, ``"rsa_euclidean"`` (representational similarity of linear kernels
        and of squared distances), ``"rv2_null"`` (expected RV2 under permutation of
        the rows of one side); the second-moment measures (feature route only, always
        centred) ``"cca"``, ``"cca_r2"``, ``"svcca"``, ``"pwcca"``, ``"procrustes"``,
        ``"procrustes_distance"``, ``"shape_metric"``, ``"linreg"`` and ``"ridge"``
        (b's layer predicted from a's).  A list returns an xarray.Dataset with one
        variable per measure; with second-moment measures it also holds the layers'
        ranks (``rank_a``, ``rank_b``) and ``forced_ones`` per cell.
    center : bool
        Centre columns first (default).  ``False`` reproduces hoggorm's RV2coeff;
        ``"cka"`` and ``"cka_debiased"`` always centre.
    layers : list of str, or (list, list), optional
        Layers to compare, in the order wanted; a pair gives a's and b's separately.
    route : {"auto", "feature", "gram"}
        The exact route (see :func:`rv2dist.planning.planner.make_plan`); ``"auto"`` lets the
        planner choose from the shapes.
    client : distributed.Client or str, optional
        Run on this cluster, or on the scheduler at this address (``"tcp://host:8786"``;
        connected for the call, and with ``compute=False`` only to plan); default: the
        current dask scheduler (threads, or the active distributed client).
    memory_budget : int or str, optional
        Bytes a task may use (or a size such as ``"4GB"``); default: half of worker
        memory per thread.
    precision : {"auto", "input", "float64"}
        Dtype of the per-chunk products (see :func:`rv2dist.planning.planner.make_plan`):
        ``"auto"`` keeps float32 input in float32 on CPUs and uses float64 on GPUs.
    device : {"auto", "cpu", "gpu"}
        Where the chunk products run.  ``"gpu"`` moves each chunk to the worker's GPU
        as a CuPy array (only the small sums come back); ``"auto"`` runs on the GPU when
        an input is CuPy-backed or any worker of ``client``'s cluster declares a
        ``GPU`` resource (its tasks then go to those workers; see
        :func:`rv2dist.engine.execute.gpu_workers`).  The memory budget then defaults
        to a quarter of the free GPU memory.
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
        the matrix (see :mod:`rv2dist.core.significance` and docs/statistics.md).
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
        once (see :mod:`rv2dist.engine.buffers`).
    progress : bool
        Before computing a job whose work passes 100 GFLOP (products and resampling
        together: seconds or more), print its cost in one line on stderr;
        ``False``, ``compute=False``, dask config ``rv2dist.progress: false`` or the
        command line's ``-q``: no line.
    plan : rv2dist.planning.plan.Plan, optional
        Run this plan (from :func:`plan` with the same arguments): its route, chunking
        and read mode as printed; a plan made for other shapes or options is refused.
    reads : {"auto", "in-task", "read-tasks"}
        How chunks of stores are read: by the one task using each, where each has one
        (``"auto"``), or by read tasks of their own that the graphs of several jobs
        share (``"read-tasks"``: ``rv2dist run`` reads a store shared by several
        comparisons once).
    alpha : float
        ``shape_metric``'s partial whitening, in [0, 1] (default 1: rotations only, the
        Procrustes angle; 0: CCA), as netrep's ``LinearMetric``.
    ridge_lambda : float
        ``ridge``'s penalty >= 0, relative to the predicting layer's mean eigenvalue
        (default 0.1; 0 is ``linreg``).
    svcca_variance : float
        Share of each layer's variance ``svcca`` keeps, in (0, 1] (default 0.99).
    rcond : float, optional
        Relative eigenvalue cut-off of the second-moment measures' whitening, inverses
        and ranks, in [0, 1); default 1e-8 for float64 products, 1e-5 for float32 ones
        (docs/measures.md).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Dims ``("layer_a", "layer_b")`` with layer names as coordinates, ``name`` the
        metric; attrs ``n_obs``, ``metric``, ``center``, ``route`` (the route used),
        ``precision``, ``device``.
        A Dataset for several metrics, or with tests, permutations or bootstrap.

    Raises
    ------
    ValueError, TypeError
        Naming the layer or value at fault: differing observation counts, NaN or Inf,
        non-numeric dtypes, empty layers, unknown metric, route or layer.
    """
    from rv2dist.engine.buffers import keep_seconds
    from rv2dist.engine.build import job_graph

    resampling = check_resampling(tests, correction, permutations, bootstrap, seed, confidence, keep_replicates)
    measure_options = check_measure_options(alpha, ridge_lambda, svcca_variance, rcond)
    seconds = keep_seconds()
    options = _options(metric, center, layers, route, memory_budget, precision, device, align_obs, names, obs_dim,
                       resampling, reads, measure_options)
    with execute.client_for(client) as client:
        job = _prepare(a, b, options, client, given_plan=plan)
        _announce_cost(job.plan, progress and compute)
        lazy = job_graph(job.layers, job.plan, job.spec, annotations=execute.gpu_annotations(client, job.plan.device),
                         finish_seconds=None if compute else seconds)
        if not compute:
            return lazy
        computed = execute.run(lazy, client, seconds)
    warn_undefined(computed)
    return computed


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
