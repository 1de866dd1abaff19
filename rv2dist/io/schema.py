"""The activation store's schema: what a store holds and how it is checked.

One network is one zarr store written through xarray: a dimension ``obs`` with a
coordinate of observation ids, one data variable per layer with dims ``("obs", ...)``
(a layer ``name`` of one unit axis has the dim ``name_unit``, of several ``name_dim1``,
``name_dim2``, ...), and dataset attrs ``network``, ``layers`` (depth order),
``rv2dist_complete`` (0 while written, 1 when done), ``rv2dist_checksums`` (see
:mod:`rv2dist.io.checksums`) and free-form provenance.  Every layer shares one row
chunking.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np

from rv2dist.core.checks import first_repeated
from rv2dist.io.errors import StoreError
from rv2dist.io.ids import first_repeated_id

COMPLETE_ATTR = "rv2dist_complete"
# per array (layers and "obs"), the CRC-32C of each row chunk as written: what the store
# holds, checked on every read, and its content fingerprint
CHECKSUMS_ATTR = "rv2dist_checksums"
RESERVED_NAMES = frozenset({"obs"})
# the longest file name (in UTF-8 bytes) of the file systems stores live on
NAME_BYTES = 255
# numpy dtype kinds of the real numbers a layer may hold: float, signed, unsigned, boolean
REAL_KINDS = "fiub"


def is_zarr(path) -> bool:
    """Whether ``path`` (a Path) is a zarr store or group: a folder with zarr metadata."""
    return path.is_dir() and any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray", ".zmetadata"))


def unit_dims(name, array) -> tuple:
    """The dims of layer ``name``'s unit axes in a store."""
    extra = array.ndim - 1
    if extra == 1:
        return (f"{name}_unit",)
    return tuple(f"{name}_dim{i}" for i in range(1, extra + 1))


def check_layer_names(path, layers):
    """Refuse layer names a store could not give back: empty, with a path separator,
    hidden, longer than a file name may be, reserved, or equal to a dimension another
    layer creates."""
    dims = {dim for name, array in layers.items() for dim in unit_dims(name, array)}
    for name in layers:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith((".", "__")):
            raise StoreError(f"{path}: layer name {name!r} cannot be stored (empty, a path separator, "
                             "or a leading '.' or '__'); rename the layer")
        size = len(name.encode("utf-8", "surrogatepass"))
        if size > NAME_BYTES:
            # each layer is a folder of its name in the store
            raise StoreError(f"{path}: layer name {name[:40]!r}... is {size} bytes long, more than a file name "
                             f"may be ({NAME_BYTES}); shorten the layer's name")
        if name in RESERVED_NAMES or name in dims:
            raise StoreError(f"{path}: layer name {name!r} is taken by the store's own dimensions; rename the layer")


def check_layer_dtype(source, name, dtype):
    """Refuse a layer of anything but real numbers, naming ``source`` and the layer."""
    if dtype.kind not in REAL_KINDS:
        kind = "complex" if dtype.kind == "c" else "not a real number type"
        raise StoreError(f"{source}: layer {name!r} has dtype {dtype} ({kind}); "
                         "activations must be real numbers (float, integer or boolean)")


def check_finite(path, name, array, ids, first=0):
    """Refuse NaN or Inf in a layer, naming it and the first observation holding one
    (``ids``: the array's; ``first``: the position of its first row in the store): no
    comparison could use the store."""
    if array.dtype.kind != "f" or not array.size:
        return
    # one float64 sum (no temporary) decides for finite data; the exact check runs
    # only when it is not finite, which huge finite float64 values can also make it
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array, dtype=np.float64)):
            return
        finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if finite.all():
        return
    row = int(np.argmin(finite))
    values = array[row].ravel()
    ident = ids[row].item() if hasattr(ids[row], "item") else ids[row]
    raise StoreError(f"{path}: layer {name!r} holds {values[~np.isfinite(values)][0]} at observation "
                     f"{first + row:,} (id {ident!r}); activations must be finite")


def json_attrs(meta):
    """``meta`` as store attrs: values zarr keeps as they are, others as JSON text."""
    return {k: (v if isinstance(v, (str, int, float, list)) else json.dumps(v)) for k, v in meta.items()}


def validate_dataset(dataset, source="dataset"):
    """Check a Dataset against the store schema and return it.

    Raises
    ------
    StoreError
        Naming ``source`` and the fault: no ``obs``, an incomplete write, no layers, a
        layer not over ``obs`` first, of another length or not of real numbers, or a
        repeated observation id.
    """
    if "obs" not in dataset.dims:
        raise StoreError(f"{source}: has no 'obs' dimension")
    if dataset.attrs.get(COMPLETE_ATTR, 1) != 1:
        raise StoreError(f"{source}: the store is incomplete (its write did not finish)")
    layers = layer_order(dataset, source)
    if not layers:
        raise StoreError(f"{source}: holds no layers")
    n = dataset.sizes["obs"]
    for name in layers:
        variable = dataset[name]
        if variable.dims[0] != "obs":
            raise StoreError(f"{source}: layer {name!r} has dims {variable.dims}; the first must be 'obs'")
        if variable.shape[0] != n:
            raise StoreError(f"{source}: layer {name!r} has {variable.shape[0]} observations, not {n}")
        check_layer_dtype(source, name, variable.dtype)
    if "obs" in dataset.indexes:
        first_repeated_id(source, dataset.indexes["obs"])
    return dataset


def layer_order(dataset, source="dataset") -> list:
    """The layer names of a store's Dataset in depth order: its attr ``layers``, else
    every variable over ``obs`` first."""
    declared = dataset.attrs.get("layers")
    if declared is None:
        return [name for name, v in dataset.data_vars.items() if v.dims and v.dims[0] == "obs"]
    if isinstance(declared, str):
        with contextlib.suppress(ValueError):
            declared = json.loads(declared)
    if not isinstance(declared, (list, tuple)) or not all(isinstance(name, str) for name in declared):
        raise StoreError(f"{source}: attribute 'layers' must list the layer names in depth order, "
                         f"not {declared!r:.60}")
    repeated = first_repeated(declared)
    if repeated is not None:
        raise StoreError(f"{source}: attribute 'layers' names layer {repeated!r} twice")
    missing = [name for name in declared if name not in dataset.data_vars]
    if missing:
        raise StoreError(f"{source}: attrs list layer {missing[0]!r}, which the store does not hold")
    return list(declared)


def layer_arrays(dataset):
    """``[(layer name, array (n_obs, ...))]`` in depth order, dask-backed when lazy."""
    return [(name, dataset[name].data) for name in layer_order(dataset)]


def observation_ids(dataset):
    """The observation ids of a store's Dataset (numpy; strings as a unicode array)."""
    ids = np.asarray(dataset["obs"].values)
    return np.array(ids.tolist(), dtype=str) if ids.dtype.kind in "OT" else ids  # object or numpy 2 StringDType


def network_name(dataset, default="network") -> str:
    """The network a store's Dataset holds, by its attr ``network``."""
    return str(dataset.attrs.get("network", default))
