"""Bring saved activations into the store, with the seed study's preprocessing:
numpy ``.npz``/``.npy`` files, or an existing store (pooled or downsampled anew)."""

from __future__ import annotations

from pathlib import Path

from rv2dist.io import store
from rv2dist.core.preprocess import preprocess


def _is_activation_store(path: Path) -> bool:
    import zarr

    try:
        return "obs" in zarr.open_group(path, mode="r")
    except Exception:
        return True  # not readable as a group: open_activations says why


def _is_store(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zmetadata"))


def convert(source, out, *, layers=None, network=None, pool=False, channel_axis=1, downsample_by=1,
            method="stride", attrs=None, chunk_bytes=store.DEFAULT_CHUNK_BYTES, overwrite=False, obs_dim=None):
    """Write an activation store from saved activations, preprocessing on the way.

    Reads one row chunk at a time: ``.npy`` files are memory-mapped and stores are
    read lazily, so memory does not grow with the number of observations (an ``.npz``
    archive is decompressed one layer at a time).

    Parameters
    ----------
    source : str or Path
        An ``.npz`` file, a folder of ``.npy`` files (see
        :func:`rv2dist.io.store.read_numpy_layers`), an HDF5 file (``.h5``/``.hdf5``: one
        dataset per layer, observations first, ids in a dataset ``obs``), a NetCDF file
        (``.nc``) or zarr store written by xarray with any sample dimension (see
        ``obs_dim``; :func:`rv2dist.io.store.read_labelled_layers`), or an activation store.
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
    import dask.array as da

    source = Path(source)
    provenance = {"converted_from": str(source), "pool": int(bool(pool)),
                  "downsample_by": int(downsample_by), "downsample_method": method}
    labelled = source.suffix in (".h5", ".hdf5", ".nc") or (_is_store(source) and not _is_activation_store(source))
    if labelled:
        arrays, ids = store.read_labelled_layers(source, layers, obs_dim)
        network = network or Path(out).name.split(".")[0]
    elif _is_store(source):
        dataset = store.open_activations(source)
        arrays = dict(store.layer_arrays(dataset))
        if layers is not None:
            missing = [name for name in layers if name not in arrays]
            if missing:
                raise store.StoreError(f"{source}: has no layer {missing[0]!r}; it has {', '.join(arrays)}")
            arrays = {name: arrays[name] for name in layers}
        ids = store.observation_ids(dataset)
        network = network or store.network_name(dataset)
    else:
        arrays, ids = store.read_numpy_layers(source, layers)
        rows = store.chunk_rows(arrays, chunk_bytes)
        arrays = {name: da.from_array(a, chunks=(rows,) + tuple(a.shape[1:])) for name, a in arrays.items()}
    for name, array in arrays.items():
        if array.ndim == 0:
            raise store.StoreError(f"{source}: layer {name!r} is a single number, not an array of "
                                   "observations x units")
    try:
        processed, kept_ids = preprocess(arrays, obs=ids, pool=pool, channel_axis=channel_axis,
                                         downsample_by=downsample_by, method=method)
    except ValueError as error:
        raise store.StoreError(f"{source}: {error}") from None
    store.write_activations(out, processed, obs=kept_ids, network=network,
                            attrs={**provenance, **dict(attrs or {})},
                            chunk_bytes=chunk_bytes, overwrite=overwrite)
