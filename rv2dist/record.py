"""Recording PyTorch models: forward hooks turn layer outputs into activations.

:func:`record_activations` streams one model's layers into a store;
:func:`compare_models` runs two models over one loader in a single pass and returns
their similarity matrix.  Both understand the batches and outputs of real models:
``(inputs, targets)`` tuples, mapping batches passed as keyword arguments
(HuggingFace's ``BatchEncoding`` with its ``attention_mask``), tuples and
``ModelOutput`` objects, and sequence outputs pooled over tokens under their mask.

Needs the optional extra ``torch`` (imported only when recording).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from .inputs import first_repeated
from .progress import ProgressBar
from .store import DEFAULT_CHUNK_BYTES, ActivationWriter, StoreError
from .transforms import StreamingDownsampler

POOLS = ("mean", "cls", "first", "last", "max")
INPUT_KEYS = ("inputs", "input", "x")
STORED_DTYPES = ("float16", "float32", "float64")
# module types whose 3-D output has a known layout: channels first (N, C, L) or last (N, L, C)
CHANNELS_FIRST = ("Conv1d", "ConvTranspose1d", "BatchNorm1d", "InstanceNorm1d", "MaxPool1d", "AvgPool1d",
                  "AdaptiveAvgPool1d", "AdaptiveMaxPool1d")
CHANNELS_LAST = ("Linear", "LayerNorm", "Embedding", "TransformerEncoderLayer", "TransformerDecoderLayer",
                 "TransformerEncoder", "TransformerDecoder", "MultiheadAttention", "RNN", "LSTM", "GRU")


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("recording needs PyTorch: pip install 'rv2dist[torch]'") from None
    return torch


def _choose_pool(pool):
    """``True`` is ``"mean"``; ``False``/``None`` keep outputs whole."""
    if pool is True:
        return "mean"
    if pool is False or pool is None:
        return None
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose True, False or one of {', '.join(POOLS)}")
    return pool


def _modules(model, names):
    modules = {}
    known = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in known or name == "":
            import difflib

            close = difflib.get_close_matches(str(name), [n for n in known if n], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else (
                f"; its top-level modules are: {', '.join(n for n in known if n and '.' not in n)}")
            raise ValueError(f"the model ({type(model).__name__}) has no module {name!r}{hint}")
        modules[name] = known[name]
    return modules


def _output_tensor(output, name, field):
    """The tensor a module returned: ``field`` of a ModelOutput/mapping/tuple if given,
    else the output itself, the first tensor of a tuple, or a ModelOutput's first field."""
    torch = _torch()
    if field is not None:
        try:
            output = output[field] if isinstance(field, int) or isinstance(output, Mapping) else getattr(output, field)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise ValueError(f"layer {name!r} returned {type(output).__name__}, which has no {field!r}") from None
    while not isinstance(output, torch.Tensor):
        if isinstance(output, Mapping) and output:
            output = next(iter(output.values()))
        elif isinstance(output, (tuple, list)) and output:
            output = output[0]
        else:
            raise ValueError(f"layer {name!r} returned {type(output).__name__}, not a tensor; "
                             "pick one of its fields with output=")
    return output


def _channel_axis(name, module, tensor, channel_axis, mask):
    """The channel axis of an output of 3 or more dims: as given; 1 for feature maps of
    4+ dims (PyTorch's NCHW); for 3-D outputs, from the module type or the mask's length;
    otherwise an error (NCL convolutions and NLC sequences look alike)."""
    if channel_axis is not None:
        if not -tensor.ndim <= channel_axis < tensor.ndim or channel_axis % tensor.ndim == 0:
            raise ValueError(f"layer {name!r}: channel_axis {channel_axis} does not fit its output "
                             f"of shape {tuple(tensor.shape)}")
        return channel_axis % tensor.ndim
    if tensor.ndim > 3:
        return 1
    kind = type(module).__name__
    if kind in CHANNELS_FIRST:
        return 1
    if kind in CHANNELS_LAST:
        return 2
    if mask is not None and tensor.shape[1] != tensor.shape[2]:
        if tensor.shape[1] == mask.shape[1]:
            return 2
        if tensor.shape[2] == mask.shape[1]:
            return 1
    raise ValueError(f"layer {name!r} ({kind}) returned {tuple(tensor.shape)}: is that (N, C, L) channels first "
                     "or (N, L, C) tokens/time first? Pass channel_axis=1 or channel_axis=-1")


def _pool(name, module, tensor, how, channel_axis, mask):
    """Pool an output over its positions: (N, C) from (N, ..., C) after moving channels last."""
    torch = _torch()
    if how is None or tensor.ndim <= 2:
        return tensor
    axis = _channel_axis(name, module, tensor, channel_axis, mask)
    flat = torch.movedim(tensor, axis, -1).reshape(tensor.shape[0], -1, tensor.shape[axis])
    if mask is not None and tensor.ndim == 3:
        if tuple(mask.shape) != tuple(flat.shape[:2]):
            raise ValueError(f"layer {name!r}: the mask has shape {tuple(mask.shape)} but the output has "
                             f"{flat.shape[1]} positions for {flat.shape[0]} observations")
        valid = mask.to(device=flat.device, dtype=torch.bool)
        if not bool(valid.any(dim=1).all()):
            raise ValueError(f"layer {name!r}: an observation of this batch has no unmasked position")
    else:
        valid = None
    if how in ("cls", "first"):
        return flat[:, 0]
    if how == "last":
        if valid is None:
            return flat[:, -1]
        last = valid.shape[1] - 1 - torch.argmax(valid.flip(1).to(torch.int8), dim=1)
        return flat[torch.arange(flat.shape[0], device=flat.device), last]
    if how == "max":
        if valid is None:
            return flat.amax(dim=1)
        return flat.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
    if valid is None:
        return flat.mean(dim=1)
    weights = valid[..., None].to(flat.dtype)
    return (flat * weights).sum(dim=1) / weights.sum(dim=1)


def _to_device(value, device):
    return value.to(device) if hasattr(value, "to") else value


def _call(model, batch, device):
    """Run ``model`` on a loader batch: a mapping as keyword arguments (or its
    ``inputs``/``x`` entry), a tuple's first element (``(inputs, targets)``), or the batch."""
    if isinstance(batch, Mapping):
        key = next((k for k in INPUT_KEYS if k in batch), None)
        if key is not None:
            return model(_to_device(batch[key], device))
        return model(**{k: _to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return model(_to_device(batch[0], device))
    return model(_to_device(batch, device))


def _layer_names(layers):
    """Module paths as a list; one path given as a string is one layer (not its letters)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    repeated = first_repeated(names)
    if repeated is not None:
        raise ValueError(f"layer {repeated!r} is named twice")
    return names


def _describe(batch):
    """A loader batch in a few words: its tensors' shapes."""
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in batch) + ")"
    shape = getattr(batch, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(batch).__name__


def _choose_dtype(dtype):
    if dtype not in STORED_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(STORED_DTYPES)}, not {dtype!r}")
    return dtype


def _check_device(device):
    """``device`` as a torch.device that exists here."""
    torch = _torch()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _batch_mask(batch, mask):
    """The (N, positions) mask of a batch: ``mask(batch)`` if given, else a mapping
    batch's ``attention_mask``, else None."""
    if mask is not None:
        return mask(batch)
    if isinstance(batch, Mapping):
        return batch.get("attention_mask")
    return None


class _Recorder:
    """Forward hooks on the named modules of one model.  Inside ``with``: the model is in
    eval mode without gradients, and :meth:`run` returns one batch's pooled activations
    on the host; leaving restores every module's own mode and removes the hooks."""

    def __init__(self, model, layers, *, pool=True, channel_axis=None, output=None, device=None, dtype="float32"):
        torch = _torch()
        self.model, self.layers = model, _layer_names(layers)
        if not self.layers:
            raise ValueError("no layers to record")
        self.modules = _modules(model, self.layers)
        self.pool, self.channel_axis, self.output = _choose_pool(pool), channel_axis, output
        self.dtype = _choose_dtype(dtype)
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = _check_device(device)
        self._captured, self._mask, self._handles, self._modes = {}, None, [], {}

    def __enter__(self):
        # each module's own mode: a frozen eval-mode part of a training model stays so
        self._modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        self._handles = [module.register_forward_hook(self._hook(name, module))
                         for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for module, training in self._modes.items():
            module.training = training

    def _hook(self, name, module):
        def hook(_, inputs, output):
            tensor = _output_tensor(output, name, self.output).detach()
            self._captured[name] = _pool(name, module, tensor, self.pool, self.channel_axis, self._mask)
        return hook

    def run(self, batch, mask):
        """``{layer: numpy array (N, ...)}`` of one batch (``mask`` as from :func:`_batch_mask`)."""
        torch = _torch()
        self._captured.clear()
        self._mask = mask
        with torch.inference_mode():
            try:
                _call(self.model, batch, self.device)
            except Exception as error:
                raise ValueError(f"the model ({type(self.model).__name__}) failed on a batch of "
                                 f"{_describe(batch)}: {type(error).__name__}: {error}") from error
        missing = [name for name in self.layers if name not in self._captured]
        if missing:
            raise ValueError(f"layer {missing[0]!r} did not run in the model's forward pass")
        rows = {self._captured[name].shape[0] for name in self.layers}
        if len(rows) > 1:
            raise ValueError(f"the recorded layers disagree on the batch size: {sorted(rows)}")
        return {name: _to_host(self._captured[name], self.dtype) for name in self.layers}


def _to_host(tensor, dtype):
    torch = _torch()
    tensor = tensor.to("cpu")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # half and bfloat16 have no numpy counterpart
    return tensor.numpy().astype(dtype, copy=False)


def _batches(loader, label, progress):
    """The loader's batches with a progress bar; an empty loader is an error."""
    total = len(loader) if hasattr(loader, "__len__") else None
    seen = 0
    with ProgressBar(total, label, unit="batch", enabled=progress) as bar:
        for batch in loader:
            seen += 1
            yield batch
            bar.update()
    if not seen:
        raise ValueError("the loader yielded no batches")


def record_activations(path, model, loader, layers, *, network=None, obs=None, pool=True, channel_axis=None,
                       mask=None, output=None, downsample_by=1, method="stride", device=None, dtype="float32",
                       attrs=None, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=True, overwrite=False):
    """Run ``model`` over ``loader`` and stream the named layers' outputs into a store.

    Each batch's activations are pooled and downsampled on the fly, copied to the host
    and appended to an :class:`~rv2dist.store.ActivationWriter`, so memory stays at one
    batch plus one row chunk per layer however many observations there are.  The model
    runs in eval mode without gradients; every module's own mode is restored afterwards.

    Parameters
    ----------
    path : str or Path
        The store to write (atomically: an interrupted recording leaves no store).
    model : torch.nn.Module
        The network.
    loader : iterable
        Batches: a tensor; a ``(inputs, targets, ...)`` tuple/list (the first element
        is the input); a mapping with an ``"inputs"`` or ``"x"`` entry; or any other
        mapping (a HuggingFace ``BatchEncoding``), passed as ``model(**batch)``.
    layers : list of str
        Module paths as in ``model.named_modules()`` (``"features.3"``,
        ``"encoder.layer.2"``), in depth order.
    network : str, optional
        Network name; default: the store's file name.
    obs : sequence, optional
        One id per observation of the loader, in order; default ``0, 1, ...``.
    pool : bool or {"mean", "cls", "first", "last", "max"}
        Pool each output of 3+ dims over its positions (spatial or token/time), so
        units are channels.  ``True`` is ``"mean"``.  Over tokens, ``"mean"`` and
        ``"max"`` skip masked positions and ``"last"`` takes the last unmasked one;
        ``"cls"``/``"first"`` take position 0.  ``False`` keeps outputs whole.
    channel_axis : int, optional
        The channel axis of outputs of 3+ dims.  Default: 1 for feature maps of 4+
        dims (NCHW); for 3-D outputs, from the module type (``Conv1d``: 1; ``Linear``,
        transformer layers, RNNs: -1) or the mask's length, else an error asking.
    mask : callable, optional
        ``mask(batch)`` gives the ``(N, tokens)`` mask of valid positions; default:
        a mapping batch's ``attention_mask``.
    output : str or int, optional
        Field of the modules' outputs to record (``"last_hidden_state"``, ``0``);
        default: the output, a tuple's first tensor or a ModelOutput's first field.
    downsample_by : int
        Keep one observation in this many.
    method : {"stride", "mean"}
        Every k-th observation, or the mean of each block of k.
    device : str or torch.device, optional
        Where the inputs go; default: the device of the model's first parameter.
    dtype : {"float32", "float16", "float64"}
        Dtype of the stored activations (default float32).
    attrs : mapping, optional
        Extra provenance for the store's attrs.
    chunk_bytes : int
        Target bytes of the widest layer's row chunk.
    progress : bool
        Show a progress bar on stderr.
    overwrite : bool
        Replace an existing store at ``path``.
    """
    recorder = _Recorder(model, layers, pool=pool, channel_axis=channel_axis, output=output, device=device,
                         dtype=dtype)
    downsampler = StreamingDownsampler(downsample_by, method)
    provenance = {"recorder": "rv2dist.record_activations (PyTorch forward hooks)", "model": type(model).__name__,
                  "pool": str(recorder.pool), "downsample_by": int(downsample_by), "downsample_method": method,
                  **dict(attrs or {})}
    seen = 0
    with recorder, ActivationWriter(path, network=network, attrs=provenance, chunk_bytes=chunk_bytes,
                                    overwrite=overwrite) as writer:
        for batch in _batches(loader, f"recording {network or path}", progress):
            host = recorder.run(batch, _batch_mask(batch, mask))
            rows = len(next(iter(host.values())))
            batch_ids = np.arange(seen, seen + rows) if obs is None else _ids_slice(obs, seen, rows)
            seen += rows
            writer.append(*downsampler.feed(host, batch_ids))


def compare_models(model_a, model_b, loader, layers_a, layers_b=None, *, metric="rv2", names=None, pool=True,
                   channel_axis=None, mask=None, output=None, downsample_by=1, method="stride", device=None,
                   dtype="float32", memory_budget=None, spill_dir=None, progress=True, **options):
    """Similarity between the layers of two models, from one pass over ``loader``.

    Both models see every batch; their pooled (and downsampled) activations stay in
    memory while they fit ``memory_budget`` and go to temporary stores beyond it (a
    line on stderr says so), which are deleted when the result is computed.

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
    pool, channel_axis, mask, output, downsample_by, method, device, dtype
        As :func:`record_activations`, for both models.
    memory_budget : int or str, optional
        Bytes of activations held in memory for both models together (or a size such
        as ``"4GB"``); default a quarter of the free memory.
    spill_dir : str or Path, optional
        Where temporary stores go beyond the budget; default the system's temporary folder.
    progress : bool
        A progress bar on stderr.
    **options
        Passed to :func:`rv2dist.similarity` (``center``, ``route``, ``client``, ...).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        As :func:`rv2dist.similarity`, with attrs ``network_a``/``network_b``.
    """
    import tempfile

    from .api import similarity
    from .plan import budget_bytes

    layers_a = _layer_names(layers_a)
    layers_b = layers_a if layers_b is None else _layer_names(layers_b)
    names = names or _default_names(model_a, model_b)
    if isinstance(names, str) or len(names) != 2 or not all(isinstance(name, str) for name in names):
        raise ValueError(f"names must be two network names, got {names!r}")
    if memory_budget is None:
        import psutil

        memory_budget = psutil.virtual_memory().available // 4
    memory_budget = budget_bytes(memory_budget)
    # a model against itself is one recording and a symmetric job: each product once,
    # and a diagonal of exactly 1
    itself = model_a is model_b and layers_a == layers_b
    sides = ((model_a, layers_a),) if itself else ((model_a, layers_a), (model_b, layers_b))
    recorders = [_Recorder(model, layers, pool=pool, channel_axis=channel_axis, output=output, device=device,
                           dtype=dtype) for model, layers in sides]
    with tempfile.TemporaryDirectory(prefix="rv2dist-compare-", dir=spill_dir) as folder:
        sinks = [_Sink(f"{folder}/{side}.zarr", memory_budget / len(sides), name)
                 for side, name, _ in zip("ab", names, sides)]
        downsamplers = [StreamingDownsampler(downsample_by, method) for _ in recorders]
        seen = 0
        label = f"recording {names[0]}" if itself else f"recording {names[0]} and {names[1]}"
        for batch in _batches(loader, label, progress):
            batch_mask = _batch_mask(batch, mask)
            for recorder, sink, downsampler in zip(recorders, sinks, downsamplers):
                # one model at a time in eval mode: the same object may be both models
                with recorder:
                    host = recorder.run(batch, batch_mask)
                rows = len(next(iter(host.values())))
                sink.append(*downsampler.feed(host, np.arange(seen, seen + rows)))
            seen += rows
        recorded = [sink.finish() for sink in sinks]
        result = similarity(*recorded, metric=metric, **options)
    result.attrs.update(network_a=str(names[0]), network_b=str(names[1]))
    return result


def _default_names(model_a, model_b):
    """The models' class names; ``("a", "b")`` for two models of one class, which
    "BertModel vs BertModel" would not tell apart."""
    names = (type(model_a).__name__, type(model_b).__name__)
    if model_a is model_b or names[0] != names[1]:
        return names
    import warnings

    warnings.warn(f"both models are {names[0]}: the result calls them 'a' and 'b'; name them with "
                  "names=('pretrained', 'random'), say", UserWarning, stacklevel=3)
    return "a", "b"


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


def _ids_slice(obs, start, rows):
    ids = np.asarray(obs[start:start + rows])
    if len(ids) != rows:
        raise StoreError(f"obs holds {start + len(ids)} ids, fewer than the loader's observations")
    return ids
