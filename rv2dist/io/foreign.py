"""Layers saved by other tools: numpy (``.npz``, a folder of ``.npy``), HDF5 and xarray
files (NetCDF, zarr not in the activation-store schema), read lazily where the format
allows, for :func:`rv2dist.io.convert.convert`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rv2dist.io.errors import StoreError
from rv2dist.io.names import select
from rv2dist.io.writer import chunk_rows


@dataclass(frozen=True)
class ForeignLayers:
    """What a file holds: ``{layer: array}`` in depth order, and the observation ids if saved."""

    arrays: dict
    ids: np.ndarray | None


def read_numpy_layers(source, layers=None) -> ForeignLayers:
    """Layers saved with numpy: an ``.npz`` file (one array per layer) or a folder of
    ``.npy`` files (one per layer, named by the layer), read without loading ``.npy``
    files into memory (memory-mapped).

    Parameters
    ----------
    source : str or Path
        The ``.npz`` file or the folder.
    layers : list of str, optional
        Layers to take, in depth order; default: all, in the ``.npz`` file's order or,
        for a folder, by natural sort of the file names (``c2`` before ``c10``).
        An array named ``obs`` holds observation ids, not a layer.
    """
    source = Path(source)
    if not source.exists():
        raise StoreError(f"{source}: no such file or folder")
    if source.is_dir():
        arrays = _npy_folder(source)
        names = sorted((n for n in arrays if n != "obs"), key=_natural_key)
    elif source.suffix == ".npz":
        try:
            archive = np.load(source, allow_pickle=False)
            arrays = {name: archive[name] for name in archive.files}
        except Exception as error:
            raise StoreError(f"{source}: not an .npz archive ({type(error).__name__}: {error})") from None
        names = [n for n in arrays if n != "obs"]
    else:
        raise StoreError(f"{source}: expected an .npz file or a folder of .npy files")
    return ForeignLayers(selected_layers(source, arrays, names, layers), arrays.get("obs"))


def _npy_folder(source):
    files = {f.stem: f for f in source.glob("*.npy")}
    if not files:
        raise StoreError(f"{source}: holds no .npy files")
    arrays = {}
    for name, file in files.items():
        try:
            arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            raise StoreError(f"{file}: not a .npy array ({type(error).__name__}: {error})") from None
    return arrays


def selected_layers(source, arrays, names, wanted):
    """``{name: array}`` of the ``wanted`` layers of ``arrays`` (default ``names``, its
    layers), in that order; a StoreError naming ``source`` and a layer it lacks."""
    try:
        chosen = dict(select([(name, arrays[name]) for name in names], wanted, f"{source}:"))
    except ValueError as error:
        raise StoreError(str(error)) from None
    if not chosen:
        raise StoreError(f"{source}: holds no layers")
    return chosen


def read_labelled_layers(source, layers=None, obs_dim=None) -> ForeignLayers:
    """Layers from an HDF5 file (one dataset per layer, the first axis observations; a
    dataset ``obs`` holds ids) or an xarray file (NetCDF, or a zarr store not in the
    activation-store schema) whose sample dimension is ``obs`` or ``obs_dim``, as lazy
    arrays in the file's order (or ``layers``'s)."""
    source = Path(source)
    found = _read_hdf5(source) if source.suffix in (".h5", ".hdf5") else _read_xarray(source, obs_dim)
    names = [n for n in found.arrays if n != "obs"]
    return ForeignLayers(selected_layers(source, found.arrays, names, layers), found.ids)


def _read_hdf5(source):
    import dask.array as da
    import h5py

    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise StoreError(f"{source}: not an HDF5 file ({error})") from None
    found = {}

    def collect(name, item):  # visititems stops at the first value returned: return None
        if isinstance(item, h5py.Dataset):
            found[name] = item

    handle.visititems(collect)
    arrays, ids = {}, None
    for path, dataset in found.items():
        if path == "obs":
            ids = dataset[()]
            ids = ids.astype(str) if ids.dtype.kind in "OS" else ids
            continue
        if dataset.ndim == 0:
            raise StoreError(f"{source}: dataset {path!r} is a scalar, not (observations, ...)")
        rows = chunk_rows({path: dataset})
        # nested datasets become "group.name": a layer name holds no '/'
        arrays[path.replace("/", ".")] = da.from_array(dataset, chunks=(rows,) + dataset.shape[1:], lock=True)
    return ForeignLayers(arrays, ids)


def _read_xarray(source, obs_dim):
    import xarray as xr

    try:
        if source.suffix == ".zarr" or source.is_dir():
            dataset = xr.open_zarr(source, chunks={})
        else:
            dataset = xr.open_dataset(source, engine="h5netcdf", chunks={})
    except Exception as error:
        raise StoreError(f"{source}: not a NetCDF file or zarr store ({type(error).__name__}: {error})") from None
    dim = obs_dim or "obs"
    if dim not in dataset.dims:
        raise StoreError(f"{source}: has no dimension {dim!r}; name its sample dimension with --obs-dim "
                         f"(obs_dim=); it has {', '.join(map(str, dataset.dims))}")
    arrays = {str(name): variable.transpose(dim, ...).data for name, variable in dataset.data_vars.items()
              if dim in variable.dims}
    ids = np.asarray(dataset[dim].values) if dim in dataset.coords else None
    return ForeignLayers(arrays, ids)


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
