"""Pooling a layer's output over its positions (tokens, time steps, pixels), under the
batch's mask of real positions, or taking each real position as an observation.

Pure functions of one output tensor (torch is imported when they run).
"""

from __future__ import annotations

from dataclasses import dataclass

POOLS = ("mean", "cls", "first", "last", "max", "tokens")
# the pools that must know which positions are padding
MASKED_POOLS = ("mean", "max", "last", "tokens")
# module types whose 3-D output has a known layout: channels first (N, C, L) or last (N, L, C)
CHANNELS_FIRST = ("Conv1d", "ConvTranspose1d", "BatchNorm1d", "InstanceNorm1d", "MaxPool1d", "AvgPool1d",
                  "AdaptiveAvgPool1d", "AdaptiveMaxPool1d")
CHANNELS_LAST = ("Linear", "LayerNorm", "Embedding", "TransformerEncoderLayer", "TransformerDecoderLayer",
                 "TransformerEncoder", "TransformerDecoder", "MultiheadAttention", "RNN", "LSTM", "GRU")


def require_torch():
    """PyTorch, or an ImportError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImportError("recording needs PyTorch: pip install 'rv2dist[torch]'") from None
    return torch


@dataclass(frozen=True)
class Pooled:
    """One layer's output for one batch of ``observations``: ``values`` (rows, ...);
    with ``pool="tokens"`` ``index`` (rows, 2) holds each row's observation in the batch
    and its rank among that observation's real positions, else None (a row per
    observation)."""

    values: object
    observations: int
    index: object = None


def choose_pool(pool):
    """``True`` is ``"mean"``; ``False``/``None`` keep outputs whole."""
    if pool is True:
        return "mean"
    if pool is False or pool is None:
        return None
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose True, False or one of {', '.join(POOLS)}")
    return pool


def channel_axis_of(name, module, tensor, channel_axis, mask):
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
    # the advice must not make a padded batch run without its mask: say where the mask goes
    raise ValueError(f"layer {name!r} ({kind}) returned {tuple(tensor.shape)}: is that (N, C, L) channels first "
                     "or (N, L, C) tokens/time first? Pass channel_axis=1 or channel_axis=-1; if the sequences "
                     "are padded, also give their mask (mask=lambda batch: ..., or a mapping batch's "
                     "attention_mask), which then tells the layout")


def _valid_positions(name, flat, mask, torch):
    """The (N, positions) boolean mask of real positions of a 3-D output, or None."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(flat.shape[:2]):
        raise ValueError(f"layer {name!r}: the mask has shape {tuple(mask.shape)} but the output has "
                         f"{flat.shape[1]} positions for {flat.shape[0]} observations")
    valid = torch.as_tensor(mask).to(device=flat.device, dtype=torch.bool)  # a numpy mask too
    if not bool(valid.any(dim=1).all()):
        raise ValueError(f"layer {name!r}: an observation of this batch has no unmasked position")
    return valid


def pool_output(name, module, tensor, how, channel_axis, mask):
    """Pool an output over its positions: (N, C) from (N, ..., C) after moving channels
    last; with ``how="tokens"``, the real positions' rows (see :class:`Pooled`)."""
    torch = require_torch()

    if how == "tokens" and tensor.ndim <= 2:
        raise ValueError(f"layer {name!r} returned {tuple(tensor.shape)}, one vector per observation: no "
                         "positions to take as observations with pool='tokens' (record it with another pool, "
                         "into a store of its own)")
    if how is None or tensor.ndim <= 2:
        return Pooled(tensor, tensor.shape[0])
    axis = channel_axis_of(name, module, tensor, channel_axis, mask)
    flat = torch.movedim(tensor, axis, -1).reshape(tensor.shape[0], -1, tensor.shape[axis])
    valid = _valid_positions(name, flat, mask, torch) if tensor.ndim == 3 else None
    if how == "tokens":
        return _tokens(flat, valid, torch)
    return Pooled(_pool(flat, valid, how, torch), tensor.shape[0])


def _pool(flat, valid, how, torch):
    """(N, C) from (N, positions, C), over the real positions where ``valid`` says."""
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


def _tokens(flat, valid, torch):
    """Every real position of every observation as a row, in order, with its
    (observation, rank among the observation's real positions)."""
    if valid is None:
        valid = torch.ones(flat.shape[:2], dtype=torch.bool, device=flat.device)
    observation, position = torch.nonzero(valid, as_tuple=True)
    # the rank, not the position: left and right padding give a token the same id
    rank = (valid.cumsum(dim=1) - 1)[observation, position]
    return Pooled(flat[observation, position], flat.shape[0], torch.stack([observation, rank], dim=1))
