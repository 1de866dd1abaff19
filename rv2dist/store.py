"""The activation store (DESIGN.md section 3): the only module that reads or writes files.

One network is one zarr store written through xarray: a dimension ``obs`` with a
coordinate of observation ids, one data variable per layer with dims ``("obs", ...)``,
and dataset attrs ``network``, ``layers`` (depth order) and free-form provenance.
Every layer shares one row chunking.  A store is written into a hidden sibling and
renamed into place when complete, so an interrupted write never looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np

COMPLETE_ATTR = "rv2dist_complete"
DEFAULT_CHUNK_BYTES = 64 * 2**20


class StoreError(ValueError):
    """An activation store is missing, malformed or incomplete."""


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def _leftover_partials(path: Path):
    return sorted(path.parent.glob(f".{path.name}.partial-*"))


def chunk_rows(layers, chunk_bytes=DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that the widest layer's chunk holds about ``chunk_bytes``."""
    widest = max(int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in layers.values())
    return max(1, int(chunk_bytes // max(1, widest)))


def _unit_dims(name, array):
    extra = array.ndim - 1
    if extra == 1:
        return (f"{name}_unit",)
    return tuple(f"{name}_dim{i}" for i in range(1, extra + 1))


def write_activations(path, layers, *, obs=None, attrs=None, network=None,
                      chunk_bytes=DEFAULT_CHUNK_BYTES, zarr_format=3, overwrite=False) -> None:
    """Write one network's activations as an activation store.

    Parameters
    ----------
    path : str or Path
        Directory of the zarr store to create.
    layers : mapping of str to array
        ``{layer name: array (n_obs, ...)}`` in depth order (numpy or dask arrays).
    obs : sequence, optional
        Observation ids, one per row; default ``0 .. n_obs - 1``.
    attrs : mapping, optional
        Free-form provenance stored in the dataset attrs (JSON-serialisable values).
    network : str, optional
        Network name; default: the store's file name without suffix.
    chunk_bytes : int
        Target bytes of the widest layer's row chunk; all layers share its rows.
    zarr_format : {3, 2}
        Zarr format to write.
    overwrite : bool
        Replace an existing store at ``path``.

    Raises
    ------
    StoreError
        When ``path`` exists (without ``overwrite``), layers disagree on n_obs, or
        ``obs`` has the wrong length or repeats an id.
    """
    import xarray as xr

    path = Path(path)
    if not layers:
        raise StoreError(f"{path}: no layers to write")
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True to replace it")
    n = None
    for name, array in layers.items():
        if array.ndim < 1 or (n is not None and array.shape[0] != n):
            raise StoreError(f"{path}: layer {name!r} has shape {tuple(array.shape)}, expected {n} observations")
        n = array.shape[0]
    obs = np.arange(n) if obs is None else np.asarray(obs)
    if obs.shape != (n,):
        raise StoreError(f"{path}: {len(obs)} observation ids for {n} observations")
    if len(np.unique(obs)) != n:
        raise StoreError(f"{path}: observation ids repeat")
    rows = chunk_rows(layers, chunk_bytes)
    variables = {}
    for name, array in layers.items():
        dims = ("obs",) + _unit_dims(name, array)
        variables[name] = xr.Variable(dims, array, encoding={"chunks": (rows,) + tuple(array.shape[1:])})
    meta = dict(attrs or {})
    meta.update(network=network or path.name.split(".")[0], layers=list(layers))
    meta[COMPLETE_ATTR] = 1
    dataset = xr.Dataset(variables, coords={"obs": obs}, attrs=_json_attrs(meta))
    with _written_atomically(path) as partial, warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is an extension of its format
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # string observation ids: zarr 3 stores them in a type its spec has not fixed yet
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        dataset.chunk({"obs": rows}).to_zarr(partial, mode="w-", zarr_format=zarr_format, consolidated=True)


@contextlib.contextmanager
def _written_atomically(path: Path):
    """Yield a hidden sibling path to write into; on success it replaces ``path``, on
    failure it is removed, so no partial output is ever left under ``path``."""
    partial = _partial_path(path)
    try:
        yield partial
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(partial, path)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        elif partial.exists():
            partial.unlink()


def _json_attrs(meta):
    return {k: (v if isinstance(v, (str, int, float, list)) else json.dumps(v)) for k, v in meta.items()}


def open_activations(path):
    """Open an activation store lazily (dask-backed) and validate it.

    Raises
    ------
    StoreError
        Naming the path and the fault: missing, not a zarr store, incomplete, or not in
        the schema (no ``obs``, layers of different length, unknown layers).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        partials = _leftover_partials(path)
        if partials:
            raise StoreError(f"{path}: its write was interrupted ({partials[0].name} is left); write it again")
        raise StoreError(f"{path}: no such activation store")
    if not path.is_dir():
        raise StoreError(f"{path}: not an activation store (a zarr store is a directory)")
    try:
        dataset = xr.open_zarr(path, chunks={}, consolidated=None)
    except Exception as error:  # zarr raises several types for a non-store
        raise StoreError(f"{path}: not a zarr store ({type(error).__name__}: {error})") from None
    return validate_dataset(dataset, source=str(path))


def validate_dataset(dataset, source="dataset"):
    """Check a Dataset against the store schema; return it with layers in depth order."""
    if "obs" not in dataset.dims:
        raise StoreError(f"{source}: has no 'obs' dimension")
    if dataset.attrs.get(COMPLETE_ATTR, 1) != 1:
        raise StoreError(f"{source}: the store is incomplete (its write did not finish)")
    layers = _layer_order(dataset, source)
    if not layers:
        raise StoreError(f"{source}: holds no layers")
    n = dataset.sizes["obs"]
    for name in layers:
        variable = dataset[name]
        if variable.dims[0] != "obs":
            raise StoreError(f"{source}: layer {name!r} has dims {variable.dims}; the first must be 'obs'")
        if variable.shape[0] != n:
            raise StoreError(f"{source}: layer {name!r} has {variable.shape[0]} observations, not {n}")
    return dataset


def _layer_order(dataset, source):
    declared = dataset.attrs.get("layers")
    if isinstance(declared, str):
        declared = json.loads(declared)
    if declared is None:
        return [name for name, v in dataset.data_vars.items() if v.dims and v.dims[0] == "obs"]
    missing = [name for name in declared if name not in dataset.data_vars]
    if missing:
        raise StoreError(f"{source}: attrs list layer {missing[0]!r}, which the store does not hold")
    return list(declared)


def layer_arrays(dataset):
    """``[(layer name, array (n_obs, ...))]`` in depth order, dask-backed when lazy."""
    return [(name, dataset[name].data) for name in _layer_order(dataset, "dataset")]


def observation_ids(dataset):
    """The observation ids of a store's Dataset (numpy)."""
    return np.asarray(dataset["obs"].values)


def network_name(dataset, default="network"):
    return str(dataset.attrs.get("network", default))


def describe(path) -> str:
    """A readable summary of a store: network, layers with units, n_obs, chunks, size."""
    dataset = open_activations(path)
    n = dataset.sizes["obs"]
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    lines = [
        f"store      {path}",
        f"network    {network_name(dataset)}",
        f"n_obs      {n:,}",
        f"size       {size / 2**20:.1f} MiB on disk",
        "layers     name        units     dtype     row chunks",
    ]
    for name, array in layer_arrays(dataset):
        units = int(np.prod(array.shape[1:], dtype=np.int64))
        chunks = array.chunks[0] if hasattr(array, "chunks") else (n,)
        lines.append(f"           {name:<11} {units:<9,} {str(array.dtype):<9} {len(chunks)} x <= {max(chunks):,}")
    return "\n".join(lines)


def write_result(result, path) -> None:
    """Write a result Dataset to ``.nc`` (netCDF) or ``.zarr``, atomically."""
    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise StoreError(f"{path}: a result must end in .nc or .zarr")
    if not path.parent.exists():
        raise StoreError(f"{path}: folder {path.parent} does not exist")
    with _written_atomically(path) as partial:
        if path.suffix == ".nc":
            result.to_netcdf(partial, engine="h5netcdf")
        else:
            result.to_zarr(partial, mode="w-")


def read_result(path):
    """Read a result written by :func:`write_result` (fully loaded)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such result")
    try:
        if path.suffix == ".zarr":
            return xr.open_zarr(path).load()
        return xr.load_dataset(path, engine="h5netcdf")
    except Exception as error:
        raise StoreError(f"{path}: not a result file ({type(error).__name__}: {error})") from None
