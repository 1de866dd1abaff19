"""The seed study's preprocessing: average pooling of feature maps and downsampling of
observations, on whole arrays (numpy, dask or cupy) and on streams of batches.

Pooling averages each feature map over its spatial/temporal axes, so a layer's units
are its channels.  Downsampling by a factor k keeps every k-th observation
(``"stride"``) or the mean of each block of k consecutive observations (``"mean"``,
an incomplete last block is dropped; its id is the block's first id).
"""

from __future__ import annotations

import numpy as np

DOWNSAMPLE_METHODS = ("stride", "mean")


def _check_downsample(factor, method):
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"downsample factor must be a positive integer, got {factor!r}")
    if method not in DOWNSAMPLE_METHODS:
        raise ValueError(f"unknown downsample method {method!r}; choose one of {', '.join(DOWNSAMPLE_METHODS)}")


def pool_units(array, channel_axis=1):
    """Average over every axis but the observations (0) and ``channel_axis``.

    ``(n, C, H, W)`` or ``(n, C, T)`` become ``(n, C)``; arrays of one or two dims are
    returned unchanged.  ``channel_axis=-1`` suits channels-last layouts.
    """
    if array.ndim <= 2:
        return array
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an integer axis, not {channel_axis!r}")
    if not -array.ndim <= channel_axis < array.ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for shape {tuple(array.shape)}")
    channel = channel_axis % array.ndim
    if channel == 0:
        raise ValueError("channel_axis cannot be the observation axis (0)")
    axes = tuple(i for i in range(1, array.ndim) if i != channel)
    return array.mean(axis=axes)


def pool_layer(name, array, channel_axis=1):
    """:func:`pool_units` of layer ``name``; a bad ``channel_axis`` names the layer."""
    try:
        return pool_units(array, channel_axis)
    except (TypeError, ValueError) as error:
        raise type(error)(f"layer {name!r}: {error}") from None


def downsample(array, factor, method="stride"):
    """Every ``factor``-th row (``"stride"``) or the mean of each block of ``factor``
    rows (``"mean"``, an incomplete last block dropped)."""
    _check_downsample(factor, method)
    if factor == 1:
        return array
    if method == "stride":
        return array[::factor]
    blocks = array.shape[0] // factor
    trimmed = array[: blocks * factor]
    return trimmed.reshape((blocks, factor) + tuple(array.shape[1:])).mean(axis=1)


def downsample_ids(ids, factor, method="stride"):
    """The observation ids that :func:`downsample` keeps: each kept row's, or each
    block's first."""
    _check_downsample(factor, method)
    ids = np.asarray(ids)
    if method == "stride":
        return ids[::factor]
    return ids[: (len(ids) // factor) * factor : factor]


def preprocess(layers, *, obs=None, pool=False, channel_axis=1, downsample_by=1, method="stride"):
    """Apply the seed study's preprocessing to every layer of a network.

    Parameters
    ----------
    layers : mapping of str to array
        ``{layer: array (n_obs, ...)}`` (numpy, dask or cupy; dask stays lazy).
    obs : sequence, optional
        Observation ids; default ``0 .. n_obs - 1``.
    pool : bool
        Average feature maps over their spatial/temporal axes (see :func:`pool_units`).
    channel_axis : int
        Axis of the channels in layers with more than two dims (1 for PyTorch's NCHW).
    downsample_by : int
        Keep one observation in ``downsample_by`` (1: keep all).
    method : {"stride", "mean"}
        Every k-th observation, or the mean of each block of k.

    Returns
    -------
    (dict, numpy.ndarray)
        The transformed layers, in the same order, and their observation ids.
    """
    n = next(iter(layers.values())).shape[0]
    for name, array in layers.items():
        if array.shape[0] != n:
            raise ValueError(f"layer {name!r} has {array.shape[0]} observations but {next(iter(layers))!r} has {n}")
    ids = np.arange(n) if obs is None else np.asarray(obs)
    if ids.shape != (n,):
        raise ValueError(f"{len(ids)} observation ids for {n} observations")
    _check_downsample(downsample_by, method)
    kept = n // downsample_by if method == "mean" else -(-n // downsample_by)
    if kept < 2:
        raise ValueError(f"downsampling {n:,} observations by {downsample_by:,} ({method}) would leave {kept}; "
                         "a comparison needs at least 2")
    out = {}
    for name, array in layers.items():
        if pool:
            array = pool_layer(name, array, channel_axis)
        out[name] = downsample(array, downsample_by, method)
    return out, downsample_ids(ids, downsample_by, method)


class StreamingDownsampler:
    """:func:`downsample` over a stream of batches, as if on their concatenation.

    Each call to :meth:`feed` takes one batch of every layer (and its ids) and returns
    the rows to keep so far; rows of a ``"mean"`` block split across batches wait for
    the next batch.  Memory: at most ``factor - 1`` rows per layer are held.
    """

    def __init__(self, factor=1, method="stride"):
        _check_downsample(factor, method)
        self.factor = factor
        self.method = method
        self._seen = 0
        self._carry = None

    def feed(self, layers, ids):
        """Return ``(layers, ids)`` of the kept rows of this batch (possibly empty)."""
        ids = np.asarray(ids)
        if self.factor == 1:
            return layers, ids
        if self.method == "stride":
            first = (-self._seen) % self.factor
            self._seen += len(ids)
            return {name: a[first::self.factor] for name, a in layers.items()}, ids[first::self.factor]
        if self._carry is not None:
            carried, carried_ids = self._carry
            layers = {name: np.concatenate([carried[name], np.asarray(a)]) for name, a in layers.items()}
            ids = np.concatenate([carried_ids, ids])
        whole = (len(ids) // self.factor) * self.factor
        self._carry = ({name: np.asarray(a)[whole:] for name, a in layers.items()}, ids[whole:])
        kept = {name: downsample(np.asarray(a)[:whole], self.factor, "mean") for name, a in layers.items()}
        return kept, downsample_ids(ids[:whole], self.factor, "mean")
