"""Forward hooks that turn one loader batch into pooled activations on the host.

Which modules are hooked, which tensor of a module's output is recorded, and how it
reaches the host; how a batch reaches the model is :mod:`rv2dist.record.batches`, the
pooling :mod:`rv2dist.record.pooling`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rv2dist.core.checks import first_repeated
from rv2dist.record.batches import batch_mask, check_batch, describe_batch, run_model
from rv2dist.record.pooling import choose_pool, pool_output, require_torch

STORED_DTYPES = ("float16", "float32", "float64")


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


def layer_names(layers):
    """Module paths as a list; one path given as a string is one layer (not its letters)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    repeated = first_repeated(names)
    if repeated is not None:
        raise ValueError(f"layer {repeated!r} is named twice")
    return names


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
        check_batch(batch, self.call, self.mask, self.pool)
        self._captured.clear()
        self._mask = batch_mask(batch, self.mask)
        with torch.inference_mode():
            try:
                run_model(self.model, batch, self.device, self.call)
            except _LayerError:
                raise  # names its layer already
            except Exception as error:
                raise ValueError(f"the model ({type(self.model).__name__}) failed on a batch of "
                                 f"{describe_batch(batch)}: {type(error).__name__}: {error}") from error
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
