"""Bring saved activations into the store, with the seed study's preprocessing:
numpy, HDF5 or xarray files (:mod:`rv2dist.io.foreign`), or an existing store (pooled
or downsampled anew)."""

from __future__ import annotations

from pathlib import Path

from rv2dist.core.preprocess import preprocess
from rv2dist.io.errors import StoreError
from rv2dist.io.foreign import (
    ForeignLayers,
    read_labelled_layers,
    read_numpy_layers,
    selected_layers,
)
from rv2dist.io.reader import open_activations
from rv2dist.io.schema import is_zarr, layer_arrays, network_name, observation_ids
from rv2dist.io.writer import DEFAULT_CHUNK_BYTES, chunk_rows, write_activations


def convert(source, out, *, layers=None, network=None, pool=False, channel_axis=1, downsample_by=1,
            method="stride", attrs=None, chunk_bytes=DEFAULT_CHUNK_BYTES, overwrite=False, obs_dim=None):
    """Write an activation store from saved activations, preprocessing on the way.

    Reads one row chunk at a time: ``.npy`` files are memory-mapped and stores are
    read lazily, so memory does not grow with the number of observations (an ``.npz``
    archive is decompressed one layer at a time).

    Parameters
    ----------
    source : str or Path
        An ``.npz`` file, a folder of ``.npy`` files (see
        :func:`rv2dist.io.foreign.read_numpy_layers`), an HDF5 file (``.h5``/``.hdf5``: one
        dataset per layer, observations first, ids in a dataset ``obs``), a NetCDF file
        (``.nc``) or zarr store written by xarray with any sample dimension (see
        ``obs_dim``; :func:`rv2dist.io.foreign.read_labelled_layers`), or an activation store.
    out : str or Path
        The store to write.
    layers : list of str, optional
        Layers to take, in depth order (default: all).
    network : str, optional
        Network name; default: the source store's, else ``out``'s file name.
    pool : bool
        Average feature maps over their spatial/temporal axes (units = channels).
    channel_axis : int
        Channel axis of layers with more than two dims (1 for NCHW, -1 for channels-last).
    downsample_by : int
        Keep one observation in this many.
    method : {"stride", "mean"}
        Every k-th observation, or the mean of each block of k.
    attrs : mapping, optional
        Extra provenance for the new store's attrs.
    chunk_bytes : int
        Target bytes of the widest layer's row chunk.
    overwrite : bool
        Replace an existing store at ``out``.
    obs_dim : str, optional
        The sample dimension of a NetCDF file or xarray zarr store (default ``obs``).
    """
    source = Path(source)
    provenance = {"converted_from": str(source), "pool": int(bool(pool)),
                  "downsample_by": int(downsample_by), "downsample_method": method}
    found, stored_network = _read_source(source, layers, obs_dim, chunk_bytes)
    for name, array in found.arrays.items():
        if array.ndim == 0:
            raise StoreError(f"{source}: layer {name!r} is a single number, not an array of observations x units")
    try:
        processed, kept_ids = preprocess(found.arrays, obs=found.ids, pool=pool, channel_axis=channel_axis,
                                         downsample_by=downsample_by, method=method)
    except ValueError as error:
        raise StoreError(f"{source}: {error}") from None
    write_activations(out, processed, obs=kept_ids, network=network or stored_network,
                      attrs={**provenance, **dict(attrs or {})}, chunk_bytes=chunk_bytes, overwrite=overwrite)


def _read_source(source, layers, obs_dim, chunk_bytes):
    """The ``layers`` of ``source`` as lazy arrays, and its network's name when it is an
    activation store (else None)."""
    import dask.array as da

    if source.suffix in (".h5", ".hdf5", ".nc") or (is_zarr(source) and not _is_activation_store(source)):
        return read_labelled_layers(source, layers, obs_dim), None
    if is_zarr(source):
        dataset = open_activations(source)
        arrays = dict(layer_arrays(dataset))
        found = ForeignLayers(selected_layers(source, arrays, list(arrays), layers), observation_ids(dataset))
        return found, network_name(dataset)
    found = read_numpy_layers(source, layers)
    rows = chunk_rows(found.arrays, chunk_bytes)
    return ForeignLayers({name: da.from_array(a, chunks=(rows,) + tuple(a.shape[1:])) for name, a in
                          found.arrays.items()}, found.ids), None


def _is_activation_store(path: Path) -> bool:
    import zarr

    try:
        return "obs" in zarr.open_group(path, mode="r")
    except Exception:
        return True  # not readable as a group: open_activations says why
