"""Two models compared in one pass over a loader (:func:`compare_models`), and what
that matrix will cost, from one batch (:func:`plan_models`)."""

from __future__ import annotations

import inspect
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from rv2dist.core.preprocess import StreamingDownsampler
from rv2dist.io.writer import ActivationWriter
from rv2dist.record.hooks import Recorder, layer_names
from rv2dist.record.recording import loader_batches, row_ids


@dataclass(frozen=True)
class _Pair:
    """The recorders of a comparison of two models: one when a model is compared with
    itself (same object, same layers), else two; and the networks' names."""

    recorders: tuple
    names: tuple
    itself: bool

    @property
    def label(self) -> str:
        """The progress bar's label."""
        return f"recording {self.names[0]}" if self.itself else f"recording {self.names[0]} and {self.names[1]}"


def _pair(model_a, model_b, layers_a, layers_b, names, options):
    layers_a = layer_names(layers_a)
    layers_b = layers_a if layers_b is None else layer_names(layers_b)
    names = names or _default_names(model_a, model_b)
    if isinstance(names, str) or len(names) != 2 or not all(isinstance(name, str) for name in names):
        raise ValueError(f"names must be two network names, got {names!r}")
    # a model against itself is one recording and a symmetric job: each product once,
    # and a diagonal of exactly 1
    itself = model_a is model_b and layers_a == layers_b
    sides = ((model_a, layers_a),) if itself else ((model_a, layers_a), (model_b, layers_b))
    return _Pair(tuple(Recorder(model, layers, **options) for model, layers in sides), tuple(names), itself)


def _record_pair(pair, batch):
    """Both models' :class:`~rv2dist.record.hooks.RecordedBatch` of one batch."""
    recorded = []
    for recorder in pair.recorders:
        # one model at a time in eval mode: the same object may be both models
        with recorder:
            recorded.append(recorder.run(batch))
    if len({r.rows for r in recorded}) > 1:
        raise ValueError(f"the models give different numbers of rows for one batch ({pair.names[0]}: "
                         f"{recorded[0].rows}, {pair.names[1]}: {recorded[1].rows}); with pool='tokens' both "
                         "must give the same positions")
    return recorded


def compare_models(model_a, model_b, loader, layers_a, layers_b=None, *, metric="rv2", names=None, pool=True,
                   channel_axis=None, mask=None, call=None, output=None, downsample_by=1, method="stride",
                   device=None, dtype="float32", memory_budget=None, spill_dir=None, progress=True, **options):
    """Similarity between the layers of two models, from one pass over ``loader``.

    Both models see every batch; their pooled (and downsampled) activations stay in
    memory while they fit ``memory_budget`` and go to temporary stores beyond it (a
    line on stderr says so), which are deleted when the result is computed.  Before a
    long computation a line on stderr says what it costs (see :func:`rv2dist.similarity`'s
    ``progress``); :func:`plan_models` tells it beforehand.

    Parameters
    ----------
    model_a, model_b : torch.nn.Module
        The two models.  The same object twice, with the same layers, compares a
        model with itself: one recording, and a symmetric job with a unit diagonal.
    loader : iterable
        Batches, as :func:`record_activations` takes them.
    layers_a, layers_b : list of str
        Module paths of each model; ``layers_b`` defaults to ``layers_a``.
    metric : str or list of str
        As :func:`rv2dist.similarity`.
    names : (str, str), optional
        Network names for the result; default the models' class names, or ``"a"`` and
        ``"b"`` for two models of one class (with a warning saying how to name them).
    pool, channel_axis, mask, call, output, downsample_by, method, device, dtype
        As :func:`record_activations`, for both models (``call`` runs each of them;
        with ``pool="tokens"`` both give the same tokens of each batch).
    memory_budget : int or str, optional
        Bytes of recorded activations held in memory for both models together (or a
        size such as ``"4GB"``); default :func:`held_activations_budget`, a quarter of
        the free memory.  (Not the ``memory_budget`` of :func:`rv2dist.similarity`
        among ``options``, which bounds what one task of the computation uses.)
    spill_dir : str or Path, optional
        Where temporary stores go beyond the budget; default the system's temporary folder.
    progress : bool
        A progress bar and the cost line on stderr.
    **options
        Passed to :func:`rv2dist.similarity` (``center``, ``route``, ``client``, ...).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        As :func:`rv2dist.similarity`, with attrs ``network_a``/``network_b``.
    """
    import tempfile

    from rv2dist.api import similarity
    from rv2dist.planning.options import budget_bytes

    _check_arguments(similarity, metric, options)  # before the recording, which may take hours
    pair = _pair(model_a, model_b, layers_a, layers_b, names, dict(
        pool=pool, channel_axis=channel_axis, output=output, device=device, dtype=dtype, call=call, mask=mask))
    held = budget_bytes(held_activations_budget() if memory_budget is None else memory_budget)
    names = pair.names
    with tempfile.TemporaryDirectory(prefix="rv2dist-compare-", dir=spill_dir) as folder:
        sinks = [_Sink(f"{folder}/{side}.zarr", held / len(pair.recorders), name)
                 for side, name, _ in zip("ab", names, pair.recorders)]
        _record_both(pair, loader_batches(loader, pair.label, progress), sinks,
                     [StreamingDownsampler(downsample_by, method) for _ in pair.recorders])
        activations = [sink.finish() for sink in sinks]
        result = similarity(*activations, metric=metric, progress=progress, **options)
    result.attrs.update(network_a=str(names[0]), network_b=str(names[1]))
    return result


def _check_arguments(similarity, metric, options) -> None:
    """What :func:`rv2dist.similarity` will say of its arguments without data: an
    unknown one (a TypeError), an unknown metric, significance or second-moment option
    out of range (a ValueError naming it)."""
    from rv2dist.planning.options import check_job_options
    from rv2dist.service.jobfile import MEASURE_KEYS, RESAMPLING_KEYS

    arguments = inspect.signature(similarity).bind(None, metric=metric, **options)
    arguments.apply_defaults()
    given = arguments.arguments
    with warnings.catch_warnings():  # (too few replicates: similarity itself says so)
        warnings.simplefilter("ignore")
        check_job_options(metric, {key: given[key] for key in RESAMPLING_KEYS},
                          {key: given[key] for key in MEASURE_KEYS})


def held_activations_budget() -> int:
    """Bytes of recorded activations :func:`compare_models` holds in memory (both
    models together) before it spills them to temporary stores: a quarter of the free
    memory.  A budget of its own: :func:`rv2dist.api.default_memory_budget` sizes the
    working memory of one task of the computation that follows."""
    import psutil

    return psutil.virtual_memory().available // 4


def _record_both(pair, batches, sinks, downsamplers):
    """Record ``batches`` with both recorders of ``pair`` into their ``sinks``."""
    seen = 0
    for batch in batches:
        both = _record_pair(pair, batch)
        for recorded, sink, downsampler in zip(both, sinks, downsamplers):
            ids = row_ids(recorded, np.arange(seen, seen + recorded.observations), numbered=True)
            sink.append(*downsampler.feed(recorded.layers, ids))
        seen += both[0].observations


def _default_names(model_a, model_b):
    """The models' class names; ``("a", "b")`` for two models of one class, which
    "BertModel vs BertModel" would not tell apart."""
    names = (type(model_a).__name__, type(model_b).__name__)
    if model_a is model_b or names[0] != names[1]:
        return names
    import warnings

    warnings.warn(f"both models are {names[0]}: the result calls them 'a' and 'b'; name them with "
                  "names=('pretrained', 'random'), say", UserWarning, stacklevel=4)
    return "a", "b"


def plan_models(model_a, model_b, loader, layers_a, layers_b=None, *, metric="rv2", names=None, pool=True,
                channel_axis=None, mask=None, call=None, output=None, downsample_by=1, method="stride",
                device=None, dtype="float32", **options):
    """The :class:`~rv2dist.planning.plan.Plan` of the matrix :func:`compare_models` would compute
    with these arguments, from one batch: ``print()`` it to see the route, the work in
    FLOP (bootstrap and permutations included) and the memory per task.

    Runs both models on the loader's first batch only, to learn each layer's width and
    how many rows a batch gives (its real tokens with ``pool="tokens"``), then
    extrapolates the number of observations: ``len(loader.dataset)`` for a loader with
    a sized dataset (a DataLoader; at most ``len(loader)`` times the first batch's
    size), else ``len(loader)`` times the first batch's size; with ``pool="tokens"``,
    times the first batch's tokens per observation.  An estimate, then, where batches
    differ; the forward passes' own cost is not in it.

    Takes the arguments of :func:`compare_models`; ``memory_budget``, ``spill_dir`` and
    ``progress``, which shape the recording, are accepted and ignored.

    Raises
    ------
    ValueError
        For a loader without ``len()`` (a generator: its first batch would be lost,
        and its length is unknown), or an empty one.
    """
    from rv2dist.api import plan

    for ignored in ("memory_budget", "spill_dir", "progress"):
        options.pop(ignored, None)
    if not hasattr(loader, "__len__"):
        raise ValueError(f"plan_models needs a loader with len() (a DataLoader or a list of batches), not "
                         f"{type(loader).__name__}: it extrapolates from one batch to len(loader)")
    batch = next(iter(loader), None)
    if batch is None:
        raise ValueError("the loader yielded no batches")
    pair = _pair(model_a, model_b, layers_a, layers_b, names, dict(
        pool=pool, channel_axis=channel_axis, output=output, device=device, dtype=dtype, call=call, mask=mask))
    recorded = _record_pair(pair, batch)
    first = recorded[0].observations
    observations = first * len(loader)
    try:
        observations = min(observations, len(loader.dataset))
    except (AttributeError, TypeError):
        pass  # no sized dataset: len(loader) batches like the first
    rows = round(observations * recorded[0].rows / first)
    rows = -(-rows // downsample_by) if method == "stride" else rows // downsample_by
    # zero-stride stand-ins: the planner reads shapes and dtypes only
    stand_ins = [{name: np.broadcast_to(np.zeros((), array.dtype), (rows,) + array.shape[1:])
                  for name, array in r.layers.items()} for r in recorded]
    return plan(*stand_ins, metric=metric, **options)


class _Sink:
    """Activations of one model: in memory up to ``budget`` bytes, then in a store."""

    def __init__(self, path, budget, network):
        self.path, self.budget, self.network = path, budget, network
        self.parts, self.ids, self.bytes, self.writer = [], [], 0, None

    def append(self, layers, ids):
        if not len(ids):
            return
        if self.writer is None and self.bytes + sum(a.nbytes for a in layers.values()) > self.budget:
            print(f"rv2dist: {self.network}'s activations pass the memory budget "
                  f"({self.budget / 2**20:,.0f} MiB); spilling to the temporary store {self.path}",
                  file=sys.stderr, flush=True)
            self.writer = ActivationWriter(self.path, network=self.network)
            for part, part_ids in zip(self.parts, self.ids):
                self.writer.append(part, obs=part_ids)
            self.parts, self.ids = [], []
        if self.writer is not None:
            self.writer.append(layers, obs=ids)
            return
        self.parts.append({name: np.array(a, copy=True) for name, a in layers.items()})
        self.ids.append(ids)
        self.bytes += sum(a.nbytes for a in layers.values())

    def finish(self):
        """A mapping of arrays, or the path of the store they went to."""
        if self.writer is not None:
            self.writer.close()
            return self.path
        if not self.parts:
            raise ValueError("no observations were recorded")
        return {name: np.concatenate([part[name] for part in self.parts]) for name in self.parts[0]}
