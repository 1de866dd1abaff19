"""The PyTorch recorder: forward hooks stream layer activations into an activation store.

Needs the optional extra ``torch`` (imported only when recording).
"""

from __future__ import annotations

import numpy as np

from .progress import ProgressBar
from .store import DEFAULT_CHUNK_BYTES, ActivationWriter, StoreError
from .transforms import StreamingDownsampler, pool_layer


def _inputs_of(batch):
    """The model input of a loader batch: the batch itself, or the first element of a
    tuple/list (``(inputs, targets)``) or the ``"inputs"`` / ``"x"`` entry of a dict."""
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("inputs", "input", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(f"a dict batch needs an 'inputs' or 'x' entry; it has {', '.join(batch)}")
    return batch


def _first_tensor(output, name):
    import torch

    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"layer {name!r} returned {type(output).__name__}, not a tensor")
    return output


def _modules(model, names):
    modules = {}
    known = dict(model.named_modules())
    for name in names:
        if name not in known or name == "":
            listed = ", ".join(n for n in known if n and "." not in n)
            raise ValueError(f"the model has no module {name!r}; its top-level modules are: {listed}")
        modules[name] = known[name]
    return modules


def record_activations(path, model, loader, layers, *, network=None, obs=None, pool=True, channel_axis=1,
                       downsample_by=1, method="stride", device=None, dtype="float32", attrs=None,
                       chunk_bytes=DEFAULT_CHUNK_BYTES, progress=True, overwrite=False):
    """Run ``model`` over ``loader`` and stream the named layers' outputs into a store.

    Each batch's activations are pooled and downsampled on the fly, copied to the host
    and appended to an :class:`~rv2dist.store.ActivationWriter`, so memory stays at one
    batch plus one row chunk per layer however many observations there are.  The model
    runs in eval mode without gradients; its previous mode is restored afterwards.

    Parameters
    ----------
    path : str or Path
        The store to write (atomically: an interrupted recording leaves no store).
    model : torch.nn.Module
        The network.
    loader : iterable
        Batches: a tensor, a ``(inputs, targets, ...)`` tuple/list, or a dict with an
        ``"inputs"`` or ``"x"`` entry (a ``torch.utils.data.DataLoader`` works).
    layers : list of str
        Module paths as in ``model.named_modules()`` (``"features.3"``, ``"fc1"``),
        in depth order; each module's output is recorded (the first tensor of a tuple).
    network : str, optional
        Network name; default: the store's file name.
    obs : sequence, optional
        One id per observation of the loader, in order; default ``0, 1, ...``.
    pool : bool
        Average each feature map over its spatial/temporal axes (units = channels).
    channel_axis : int
        The channel axis of conv outputs (1 for PyTorch's NCHW).
    downsample_by : int
        Keep one observation in this many.
    method : {"stride", "mean"}
        Every k-th observation, or the mean of each block of k.
    device : str or torch.device, optional
        Where the inputs go; default: the device of the model's first parameter.
    dtype : str
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
    try:
        import torch
    except ImportError:
        raise ImportError("recording needs PyTorch: pip install 'rv2dist[torch]'") from None

    layers = list(layers)
    if not layers:
        raise ValueError("no layers to record")
    modules = _modules(model, layers)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    captured = {}

    def hook_for(name):
        def hook(module, inputs, output):
            tensor = _first_tensor(output, name).detach()
            captured[name] = pool_layer(name, tensor, channel_axis) if pool else tensor
        return hook

    downsampler = StreamingDownsampler(downsample_by, method)
    provenance = {"recorder": "rv2dist.record_activations (PyTorch forward hooks)", "model": type(model).__name__,
                  "pool": int(bool(pool)), "downsample_by": int(downsample_by), "downsample_method": method,
                  **dict(attrs or {})}
    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    was_training = model.training
    seen = 0
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        model.eval()
        with ActivationWriter(path, network=network, attrs=provenance, chunk_bytes=chunk_bytes,
                              overwrite=overwrite) as writer, torch.inference_mode(), \
                ProgressBar(total, f"recording {network or path}", unit="batch", enabled=progress) as bar:
            for batch in loader:
                captured.clear()
                inputs = _inputs_of(batch)
                model(inputs.to(device) if hasattr(inputs, "to") else inputs)
                missing = [name for name in layers if name not in captured]
                if missing:
                    raise ValueError(f"layer {missing[0]!r} did not run in the model's forward pass")
                rows = captured[layers[0]].shape[0]
                batch_ids = np.arange(seen, seen + rows) if obs is None else _ids_slice(obs, seen, rows)
                seen += rows
                host = {name: _to_host(captured[name], dtype) for name in layers}
                writer.append(*downsampler.feed(host, batch_ids))
                bar.update()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _to_host(tensor, dtype):
    import torch

    tensor = tensor.to("cpu")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # half and bfloat16 have no numpy counterpart
    return tensor.numpy().astype(dtype, copy=False)


def _ids_slice(obs, start, rows):
    ids = np.asarray(obs[start:start + rows])
    if len(ids) != rows:
        raise StoreError(f"obs holds {start + len(ids)} ids, fewer than the loader's observations")
    return ids
