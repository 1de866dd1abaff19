"""Forward hooks that turn one loader batch into pooled activations on the host.

How a batch reaches the model (``call=``, mapping batches as keyword arguments,
``(inputs, targets)`` tuples), where its mask comes from, and which tensor of a
module's output is recorded; the pooling itself is :mod:`rv2dist.pooling`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rv2dist.io.names import first_repeated
from rv2dist.record.pooling import MASKED_POOLS, choose_pool, pool_output

INPUT_KEYS = ("inputs", "input", "x")
STORED_DTYPES = ("float16", "float32", "float64")
CALL_EXAMPLE = "call=lambda model, batch: model(input_ids=batch[0], attention_mask=batch[1])"


def require_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("recording needs PyTorch: pip install 'rv2dist[torch]'") from None
    return torch


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
    """The tensor a module returned: ``field`` of a ModelOutput/mapping/tuple if given
    (a tensor output is taken whole: indexing it would take its first observation),
    else the output itself, the first tensor of a tuple, or a ModelOutput's first field."""
    torch = require_torch()
    if field is not None and not isinstance(output, torch.Tensor):
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


def _to_device(value, device):
    """A batch, or any tensor inside its mappings, tuples and lists, on ``device``."""
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        items = [_to_device(item, device) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # named tuples too
    return value


def _run_model(model, batch, device, call):
    """Run ``model`` on a loader batch: ``call(model, batch)`` if given; else a mapping
    as keyword arguments (or its ``inputs``/``x`` entry), a tuple's first element
    (``(inputs, targets)``), or the batch."""
    if call is not None:
        return call(model, _to_device(batch, device))
    if isinstance(batch, Mapping):
        key = next((k for k in INPUT_KEYS if k in batch), None)
        if key is not None:
            return model(_to_device(batch[key], device))
        return model(**{k: _to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return model(_to_device(batch[0], device))
    return model(_to_device(batch, device))


def _looks_like_mask(value, first):
    """Whether a tuple batch's second element is an attention mask: integers or
    booleans, all 0 or 1, in the shape of the first element (token ids)."""
    torch = require_torch()
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(getattr(first, "shape", ())):
        return False
    if value.dtype.is_floating_point or value.dtype.is_complex or value.ndim < 2:
        return False
    return bool(((value == 0) | (value == 1)).all())


def _check_batch(batch, call, mask, pool):
    """Refuse a ``(input_ids, attention_mask)`` tuple that would run, or be pooled,
    without its mask: a silently wrong matrix otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not _looks_like_mask(batch[1], batch[0]):
        return
    shape = tuple(batch[1].shape)
    if call is None:
        raise ValueError(
            f"the loader's batches are tuples whose second element looks like an attention mask (0/1 values in "
            f"the first element's shape, {shape}): rv2dist would run model(batch[0]) without it. Say how the "
            f"model takes a batch and where its mask is:\n    {CALL_EXAMPLE},\n    mask=lambda batch: batch[1]\n"
            "(if batch[1] is not a mask: call=lambda model, batch: model(batch[0]), mask=lambda batch: None)")
    if mask is None and pool in MASKED_POOLS:
        raise ValueError(
            f"the loader's batches are tuples whose second element looks like an attention mask ({shape}), "
            f"and pool={pool!r} needs to know the padding: pass mask=lambda batch: batch[1] "
            "(or mask=lambda batch: None if it is not a mask)")


def layer_names(layers):
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


def check_device(device):
    """``device`` as a torch.device that exists here."""
    torch = require_torch()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _batch_mask(batch, mask):
    """The (N, positions) mask of a batch: ``mask(batch)`` if given (None: no mask),
    else a mapping batch's ``attention_mask``, else None."""
    if mask is not None:
        return mask(batch)
    if isinstance(batch, Mapping):
        return batch.get("attention_mask")
    return None


class _LayerError(ValueError):
    """A layer's output that cannot be recorded as asked (raised in a forward hook)."""


@dataclass(frozen=True)
class RecordedBatch:
    """One batch's activations on the host: ``layers`` ``{name: array (rows, ...)}``
    of ``observations`` observations; with ``pool="tokens"``, ``index`` (rows, 2) holds
    each row's observation in the batch and its token's rank, else None (a row per
    observation)."""

    layers: dict
    observations: int
    index: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.layers.values())))


class Recorder:
    """Forward hooks on the named modules of one model.  Inside ``with``: the model is in
    eval mode without gradients, and :meth:`run` returns one batch's pooled activations
    on the host; leaving restores every module's own mode and removes the hooks.
    Options as :func:`rv2dist.record_activations` takes them."""

    def __init__(self, model, layers, *, pool=True, channel_axis=None, output=None, device=None, dtype="float32",
                 call=None, mask=None):
        torch = require_torch()
        self.model, self.layers = model, layer_names(layers)
        if not self.layers:
            raise ValueError("no layers to record")
        for option, value in (("call", call), ("mask", mask)):
            if value is not None and not callable(value):
                raise TypeError(f"{option} must be a function, not {value!r}")
        self.modules = _modules(model, self.layers)
        self.pool, self.channel_axis, self.output = choose_pool(pool), channel_axis, output
        self.dtype = _choose_dtype(dtype)
        self.call, self.mask = call, mask
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = check_device(device)
        self._captured, self._mask, self._handles, self._modes, self._shapes = {}, None, [], {}, {}

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
            try:
                tensor = _output_tensor(output, name, self.output).detach()
                self._captured[name] = pool_output(name, module, tensor, self.pool, self.channel_axis, self._mask)
            except ValueError as error:
                raise _LayerError(*error.args) from None
        return hook

    def run(self, batch):
        """One batch's :class:`RecordedBatch`."""
        torch = require_torch()
        _check_batch(batch, self.call, self.mask, self.pool)
        self._captured.clear()
        self._mask = _batch_mask(batch, self.mask)
        with torch.inference_mode():
            try:
                _run_model(self.model, batch, self.device, self.call)
            except _LayerError:
                raise  # names its layer already
            except Exception as error:
                raise ValueError(f"the model ({type(self.model).__name__}) failed on a batch of "
                                 f"{_describe(batch)}: {type(error).__name__}: {error}") from error
        missing = [name for name in self.layers if name not in self._captured]
        if missing:
            raise ValueError(f"layer {missing[0]!r} did not run in the model's forward pass")
        pooled = [self._captured[name] for name in self.layers]
        self._check_rows(pooled)
        layers = {name: _to_host(p.values, self.dtype) for name, p in zip(self.layers, pooled)}
        self._check_shapes(layers)
        index = None if pooled[0].index is None else pooled[0].index.to("cpu").numpy()
        return RecordedBatch(layers, pooled[0].observations, index)

    def _check_rows(self, pooled):
        rows = {p.values.shape[0] for p in pooled}
        if len(rows) > 1 and self.pool == "tokens":
            raise ValueError(f"with pool='tokens' every layer must give the same tokens, but the layers give "
                             f"{', '.join(f'{n!r}: {p.values.shape[0]}' for n, p in zip(self.layers, pooled))} rows "
                             "for this batch (record layers of other lengths into a store of their own)")
        if len(rows) > 1:
            raise ValueError(f"the recorded layers disagree on the batch size: {sorted(rows)}")

    def _check_shapes(self, layers):
        """Each layer's unit shape stays that of the first batch: outputs whose positions
        vary (sequences padded per batch) cannot be stacked without pooling."""
        for name, array in layers.items():
            known = self._shapes.setdefault(name, array.shape[1:])
            if array.shape[1:] != known:
                raise ValueError(
                    f"layer {name!r} gave {array.shape[1:]} per observation in this batch but {known} before: its "
                    "positions vary between batches (sequences padded per batch?). Pool them (pool='mean', "
                    "'cls', 'last' or 'max') or take each real token as an observation (pool='tokens')")


def _to_host(tensor, dtype):
    torch = require_torch()
    tensor = tensor.to("cpu")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # half and bfloat16 have no numpy counterpart
    return tensor.numpy().astype(dtype, copy=False)
