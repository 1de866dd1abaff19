"""How one loader batch reaches a model: ``call=``, mapping batches as keyword
arguments, ``(inputs, targets)`` tuples; where its mask of real positions comes from;
and the refusal of a tuple whose attention mask would be lost."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rv2dist.record.pooling import MASKED_POOLS, require_torch

INPUT_KEYS = ("inputs", "input", "x")
CALL_EXAMPLE = "call=lambda model, batch: model(input_ids=batch[0], attention_mask=batch[1])"


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


def run_model(model, batch, device, call):
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


def check_batch(batch, call, mask, pool):
    """Refuse a ``(input_ids, attention_mask)`` tuple, or a mapping whose ``inputs``/``x``
    entry would run alone beside its ``attention_mask``, that would run, or be pooled,
    without its mask: a silently wrong matrix otherwise."""
    if isinstance(batch, Mapping) and call is None and "attention_mask" in batch:
        key = next((k for k in INPUT_KEYS if k in batch), None)
        if key is not None:
            raise ValueError(
                f"the loader's batches are mappings with an {key!r} entry and an 'attention_mask': rv2dist would run "
                f"model(batch[{key!r}]) without the mask. Say how the model takes a batch:\n"
                f"    call=lambda model, batch: model(batch[{key!r}], attention_mask=batch['attention_mask'])")
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


def describe_batch(batch):
    """A loader batch in a few words: its tensors' shapes."""
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe_batch(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (tuple, list)):
        return "(" + ", ".join(describe_batch(v) for v in batch) + ")"
    shape = getattr(batch, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(batch).__name__


def batch_mask(batch, mask):
    """The (N, positions) mask of a batch: ``mask(batch)`` if given (None: no mask),
    else a mapping batch's ``attention_mask``, else None."""
    if mask is not None:
        return mask(batch)
    if isinstance(batch, Mapping):
        return batch.get("attention_mask")
    return None
