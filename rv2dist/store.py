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
        ``{layer name: array (n_obs, ...)}`` in depth order (numpy, memory-mapped or
        dask arrays; a dask array is computed one row chunk at a time).
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
    path = Path(path)
    if not layers:
        raise StoreError(f"{path}: no layers to write")
    n = None
    for name, array in layers.items():
        if array.ndim < 1 or (n is not None and array.shape[0] != n):
            raise StoreError(f"{path}: layer {name!r} has shape {tuple(array.shape)}, expected {n} observations")
        n = array.shape[0]
    obs = np.arange(n) if obs is None else np.asarray(obs)
    if obs.shape != (n,):
        raise StoreError(f"{path}: {len(obs)} observation ids for {n} observations")
    rows = chunk_rows(layers, chunk_bytes)
    with ActivationWriter(path, network=network, attrs=attrs, rows_per_chunk=rows,
                          zarr_format=zarr_format, overwrite=overwrite) as writer:
        for start in range(0, n, rows):
            block = {name: array[start:start + rows] for name, array in layers.items()}
            if any(_is_lazy(a) for a in block.values()):
                import dask

                block = dict(zip(block, dask.compute(*block.values())))
            writer.append(block, obs=obs[start:start + rows])


def _is_lazy(array):
    return type(array).__module__.startswith("dask.")


class ActivationWriter:
    """Stream batches of observations into a new activation store.

    Batches are copied into one row chunk per layer and written when the chunk is
    full, so memory stays at one chunk per layer whatever the number of observations.
    The store is built in a hidden sibling and renamed into place by :meth:`close`;
    an interrupted write leaves no store at ``path`` (and :func:`open_activations`
    says the write was interrupted).  Use as a context manager: leaving the block by
    an exception discards the partial store.

    Parameters
    ----------
    path : str or Path
        Directory of the zarr store to create.
    network : str, optional
        Network name; default: the store's file name without suffix.
    attrs : mapping, optional
        Free-form provenance stored in the dataset attrs (JSON-serialisable values).
    chunk_bytes : int
        Target bytes of the widest layer's row chunk (used when ``rows_per_chunk`` is None).
    rows_per_chunk : int, optional
        Rows per chunk for every layer; default from ``chunk_bytes`` and the first batch.
    zarr_format : {3, 2}
        Zarr format to write.
    overwrite : bool
        Replace an existing store at ``path`` when the new one is complete.

    Examples
    --------
    >>> with ActivationWriter("net.zarr", network="net") as writer:  # doctest: +SKIP
    ...     for batch in batches:
    ...         writer.append({"c1": batch_c1, "fc1": batch_fc1})
    """

    def __init__(self, path, *, network=None, attrs=None, chunk_bytes=DEFAULT_CHUNK_BYTES,
                 rows_per_chunk=None, zarr_format=3, overwrite=False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path} already exists; pass overwrite=True to replace it")
        if not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        if zarr_format not in (2, 3):
            raise StoreError(f"{self.path}: zarr_format must be 2 or 3, not {zarr_format!r}")
        self.network = network or self.path.name.split(".")[0]
        self.attrs = dict(attrs or {})
        self.chunk_bytes = chunk_bytes
        self.rows = rows_per_chunk
        self.zarr_format = zarr_format
        self.n_obs = 0
        self._partial = _partial_path(self.path)
        self._layout = None
        self._buffers = None
        self._ids = None
        self._ids_given = None
        self._filled = 0
        self._written = 0

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()

    def append(self, layers, obs=None) -> None:
        """Add a batch: ``{layer: array (batch, ...)}`` with the same layers, order and
        unit shapes every time; ``obs`` the batch's ids (given for every batch or none)."""
        layers = {name: np.asarray(array) for name, array in layers.items()}
        rows = self._check_batch(layers, obs)
        if rows == 0:
            return
        ids = np.arange(self.n_obs, self.n_obs + rows) if obs is None else np.asarray(obs)
        offset = 0
        while offset < rows:
            take = min(self.rows - self._filled, rows - offset)
            for name, array in layers.items():
                self._buffers[name][self._filled:self._filled + take] = array[offset:offset + take]
            self._ids[self._filled:self._filled + take] = ids[offset:offset + take]
            self._filled += take
            offset += take
            if self._filled == self.rows:
                self._flush()
        self.n_obs += rows

    def _check_batch(self, layers, obs):
        if not layers:
            raise StoreError(f"{self.path}: a batch holds no layers")
        sizes = {name: array.shape[0] if array.ndim else None for name, array in layers.items()}
        rows = next(iter(sizes.values()))
        for name, size in sizes.items():
            if size != rows:
                raise StoreError(f"{self.path}: layer {name!r} has {size} rows in a batch of {rows}")
        layout = {name: (array.shape[1:], array.dtype) for name, array in layers.items()}
        if self._layout is None:
            self._start(layers, layout, obs)
        elif layout != self._layout:
            changed = next((name for name in set(layout) | set(self._layout)
                            if layout.get(name) != self._layout.get(name)), None)
            raise StoreError(
                f"{self.path}: layer {changed!r} changed between batches: "
                f"{self._layout.get(changed)} then {layout.get(changed)} (unit shape, dtype)"
            )
        elif list(layout) != list(self._layout):
            raise StoreError(f"{self.path}: layers came in another order: {list(layout)}")
        if (obs is not None) != self._ids_given:
            raise StoreError(f"{self.path}: give observation ids with every batch or with none")
        if obs is not None and len(obs) != rows:
            raise StoreError(f"{self.path}: {len(obs)} observation ids for a batch of {rows}")
        return rows

    def _start(self, layers, layout, obs):
        for name, array in layers.items():
            if array.ndim < 1:
                raise StoreError(f"{self.path}: layer {name!r} is a scalar, not (observations, ...)")
            if array.dtype.kind not in "fiub":
                raise StoreError(f"{self.path}: layer {name!r} has dtype {array.dtype}, not a number type")
        self._layout = layout
        self._ids_given = obs is not None
        if self.rows is None:
            self.rows = chunk_rows(layers, self.chunk_bytes)
        self._buffers = {name: np.empty((self.rows,) + shape, dtype) for name, (shape, dtype) in layout.items()}
        id_dtype = np.asarray(obs).dtype if obs is not None else np.dtype(np.int64)
        self._ids = np.empty(self.rows, object if id_dtype.kind in "OSU" else id_dtype)

    def _flush(self):
        import xarray as xr

        count = self._filled
        variables = {
            name: xr.Variable(("obs",) + _unit_dims(name, buffer), buffer[:count],
                              encoding={"chunks": (self.rows,) + buffer.shape[1:]} if not self._written else {})
            for name, buffer in self._buffers.items()
        }
        # string ids stay objects (variable-length strings): fixed-width ones could not append longer ids
        ids = self._ids[:count]
        meta = dict(self.attrs)
        meta.update(network=self.network, layers=list(self._buffers))
        meta[COMPLETE_ATTR] = 0
        # every write sets the attrs: xarray's append replaces them
        dataset = xr.Dataset(variables, coords={"obs": ids}, attrs=_json_attrs(meta))
        with _quiet_zarr():
            if self._written:
                dataset.to_zarr(self._partial, append_dim="obs", consolidated=False)
            else:
                dataset.to_zarr(self._partial, mode="w-", zarr_format=self.zarr_format, consolidated=False)
        self._written += count
        self._filled = 0

    def close(self) -> None:
        """Write what is buffered, check the ids, mark the store complete and move it
        into place."""
        import zarr

        try:
            if self._filled:
                self._flush()
            if not self._written:
                raise StoreError(f"{self.path}: no observations were written")
            group = zarr.open_group(self._partial, mode="r+")
            ids = np.asarray(group["obs"][:])
            if len(np.unique(ids)) != len(ids):
                values, counts = np.unique(ids, return_counts=True)
                raise StoreError(f"{self.path}: observation id {values[counts > 1].tolist()[0]!r} repeats")
            group.attrs[COMPLETE_ATTR] = 1
            with _quiet_zarr():
                zarr.consolidate_metadata(self._partial)
            _commit(self._partial, self.path)
        finally:
            _discard(self._partial)

    def abort(self) -> None:
        """Discard everything written so far."""
        _discard(self._partial)


@contextlib.contextmanager
def _quiet_zarr():
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is an extension of its format
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # string observation ids: zarr 3 stores them in a type its spec has not fixed yet
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


def _commit(partial: Path, path: Path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(partial, path)


def _discard(partial: Path):
    if partial.is_dir():
        shutil.rmtree(partial)
    elif partial.exists():
        partial.unlink()


@contextlib.contextmanager
def _written_atomically(path: Path):
    """Yield a hidden sibling path to write into; on success it replaces ``path``, on
    failure it is removed, so no partial output is ever left under ``path``."""
    partial = _partial_path(path)
    try:
        yield partial
        _commit(partial, path)
    finally:
        _discard(partial)


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
    """The observation ids of a store's Dataset (numpy; strings as a unicode array)."""
    ids = np.asarray(dataset["obs"].values)
    return np.array(ids.tolist(), dtype=str) if ids.dtype.kind in "OT" else ids  # object or numpy 2 StringDType


def read_numpy_layers(source, layers=None):
    """Layers saved with numpy: an ``.npz`` file (one array per layer) or a folder of
    ``.npy`` files (one per layer, named by the layer), read without loading ``.npy``
    files into memory.

    Parameters
    ----------
    source : str or Path
        The ``.npz`` file or the folder.
    layers : list of str, optional
        Layers to take, in depth order; default: all, in the ``.npz`` file's order or,
        for a folder, by natural sort of the file names (``c2`` before ``c10``).
        An array named ``obs`` holds observation ids, not a layer.

    Returns
    -------
    (dict, numpy.ndarray or None)
        ``{layer: array}`` (memory-mapped for ``.npy``) and the ids if saved.
    """
    source = Path(source)
    if not source.exists():
        raise StoreError(f"{source}: no such file or folder")
    if source.is_dir():
        files = {f.stem: f for f in source.glob("*.npy")}
        if not files:
            raise StoreError(f"{source}: holds no .npy files")
        arrays = {}
        for name, file in files.items():
            try:
                arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
            except Exception as error:
                raise StoreError(f"{file}: not a .npy array ({type(error).__name__}: {error})") from None
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
    if layers is not None:
        missing = [name for name in layers if name not in arrays]
        if missing:
            raise StoreError(f"{source}: has no layer {missing[0]!r}; it has {', '.join(names)}")
        names = list(layers)
    if not names:
        raise StoreError(f"{source}: holds no layers")
    return {name: arrays[name] for name in names}, arrays.get("obs")


def _natural_key(name):
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


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


def store_fingerprint(path) -> str:
    """A digest of a store's files (names, sizes, modification times): changes whenever
    the store is written again, without reading its data."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


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
