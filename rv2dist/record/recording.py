"""Recording a PyTorch model: :func:`record_activations` streams its layers' outputs
into a store, one batch at a time (two models compared in one pass are
:mod:`rv2dist.record.two_models`).

Recording understands the batches and outputs of real models
(:mod:`rv2dist.record.batches`, :mod:`rv2dist.record.hooks`): ``(inputs, targets)``
tuples, mapping batches passed as keyword arguments (HuggingFace's ``BatchEncoding``
with its ``attention_mask``), any other batch through ``call=``, tuples and
``ModelOutput`` objects, and sequence outputs pooled over tokens under their mask, or
each real token taken as an observation (:mod:`rv2dist.record.pooling`).

Needs the optional extra ``torch`` (imported only when recording).
"""

from __future__ import annotations

import numpy as np

from rv2dist.core.preprocess import StreamingDownsampler
from rv2dist.io.errors import StoreError
from rv2dist.io.writer import DEFAULT_CHUNK_BYTES, ActivationWriter
from rv2dist.record.hooks import Recorder
from rv2dist.service.progress import ProgressBar


def loader_batches(loader, label, progress):
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


def row_ids(recorded, ids, numbered):
    """The ids of a recorded batch's rows: its observations' ``ids``; with
    ``pool="tokens"``, ``"<id>:t<k>"`` for the k-th real token of each (``"s<i>:t<k>"``
    when the observations are ``numbered``)."""
    if recorded.index is None:
        return ids
    observations = np.asarray(ids)[recorded.index[:, 0]].tolist()
    prefix = "s" if numbered else ""
    return np.array([f"{prefix}{o}:t{k}" for o, k in zip(observations, recorded.index[:, 1].tolist())],
                    dtype=object)


def record_activations(path, model, loader, layers, *, network=None, obs=None, pool=True, channel_axis=None,
                       mask=None, call=None, output=None, downsample_by=1, method="stride", device=None,
                       dtype="float32", attrs=None, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=True, overwrite=False):
    """Run ``model`` over ``loader`` and stream the named layers' outputs into a store.

    Each batch's activations are pooled and downsampled on the fly, copied to the host
    and appended to an :class:`~rv2dist.io.writer.ActivationWriter`, so memory stays at one
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
        mapping (a HuggingFace ``BatchEncoding``), passed as ``model(**batch)``.  A
        tuple whose second element looks like an attention mask (0/1 integers or
        booleans in the first element's shape) is refused unless ``call`` says how the
        model takes it (and ``mask`` where its mask is): run without it, the model and
        the pooling would see the padding.
    layers : list of str
        Module paths as in ``model.named_modules()`` (``"features.3"``,
        ``"encoder.layer.2"``), in depth order.
    network : str, optional
        Network name; default: the store's file name.
    obs : sequence, optional
        One id per observation of the loader, in order; default ``0, 1, ...``.
    pool : bool or {"mean", "cls", "first", "last", "max", "tokens"}
        Pool each output of 3+ dims over its positions (spatial or token/time), so
        units are channels.  ``True`` is ``"mean"``.  Over tokens, ``"mean"`` and
        ``"max"`` skip masked positions and ``"last"`` takes the last unmasked one;
        ``"cls"``/``"first"`` take position 0.  ``"tokens"`` makes each real
        (unmasked) position of each observation an observation of its own, padding
        skipped, with id ``"s<i>:t<k>"`` (``"<obs id>:t<k>"`` with ``obs``) for the
        k-th real token of observation i, so two models' tokens align; every layer
        must give the same positions.  ``False`` keeps outputs whole (their positions
        must not vary between batches).
    channel_axis : int, optional
        The channel axis of outputs of 3+ dims.  Default: 1 for feature maps of 4+
        dims (NCHW); for 3-D outputs, from the module type (``Conv1d``: 1; ``Linear``,
        transformer layers, RNNs: -1) or the mask's length, else an error asking.
    mask : callable, optional
        ``mask(batch)`` gives the ``(N, tokens)`` mask of valid positions (``None``:
        no mask); default: a mapping batch's ``attention_mask``.
    call : callable, optional
        ``call(model, batch)`` runs the model on a batch (moved to ``device``), e.g.
        ``lambda model, batch: model(input_ids=batch[0], attention_mask=batch[1])``;
        its return value is not used.  Default: as ``loader`` describes.
    output : str or int, optional
        Field of the modules' outputs to record (``"last_hidden_state"``, ``0``), for
        modules that return tuples, mappings or ModelOutputs (a tensor output is taken
        whole); default: a tuple's first tensor or a ModelOutput's first field.
    downsample_by : int
        Keep one observation (one token, with ``pool="tokens"``) in this many.
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
    recorder = Recorder(model, layers, pool=pool, channel_axis=channel_axis, output=output, device=device,
                        dtype=dtype, call=call, mask=mask)
    downsampler = StreamingDownsampler(downsample_by, method)
    provenance = {"recorder": "rv2dist.record_activations (PyTorch forward hooks)", "model": type(model).__name__,
                  "pool": str(recorder.pool), "downsample_by": int(downsample_by), "downsample_method": method,
                  **dict(attrs or {})}
    seen = 0
    with recorder, ActivationWriter(path, network=network, attrs=provenance, chunk_bytes=chunk_bytes,
                                    overwrite=overwrite) as writer:
        for batch in loader_batches(loader, f"recording {network or path}", progress):
            recorded = recorder.run(batch)
            count = recorded.observations
            ids = np.arange(seen, seen + count) if obs is None else _ids_slice(obs, seen, count)
            seen += count
            writer.append(*downsampler.feed(recorded.layers, row_ids(recorded, ids, obs is None)))


def _ids_slice(obs, start, rows):
    ids = np.asarray(obs[start:start + rows])
    if len(ids) != rows:
        raise StoreError(f"obs holds {start + len(ids)} ids, fewer than the loader's observations")
    return ids
