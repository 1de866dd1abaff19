"""Results in every form they come in, made one: a single result (a DataArray of one
metric, or a Dataset), a 2-D numpy array, a list of any of these, a job's combined
result (a ``comparison`` dimension), a result file, or a job's results folder.

:func:`open_results` gives them as one combined Dataset; :func:`panels` as the list of
single comparisons the figures draw.  A result file is written atomically
(:mod:`rv2dist.io.atomic`): netCDF (``.nc``) or zarr (``.zarr``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rv2dist.io.atomic import naming, written_atomically
from rv2dist.io.errors import StoreError
from rv2dist.io.schema import is_zarr

RESULT_FORMATS = ("nc", "zarr")
COMBINED = "combined"  # a job's combined result: combined.nc or combined.zarr
ACCEPTED = ("a result (xarray DataArray or Dataset, or a 2-D array), a list of results, a job's combined result, "
            "a result file (.nc or .zarr) or a job's results folder")


def read(path):
    """A result file (a single or a combined result), or a results folder's combined
    result, as written (fully loaded)."""
    path = Path(path)
    if path.is_dir() and path.suffix != ".zarr":
        for suffix in RESULT_FORMATS:
            combined = path / f"{COMBINED}.{suffix}"
            if combined.exists():
                return read_result(combined)
        raise StoreError(f"{path}: holds no combined result ({COMBINED}.nc or {COMBINED}.zarr, written by "
                         "'rv2dist run'); give a result file instead")
    return read_result(path)


def check_result_path(path) -> None:
    """Refuse a result path that would replace something not a result (a folder, an
    activation store), before any work is done."""
    path = Path(path)
    if path.suffix not in tuple(f".{suffix}" for suffix in RESULT_FORMATS):
        raise StoreError(f"{path}: a result must end in .nc or .zarr")
    if not path.parent.exists():
        raise StoreError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir() and not (path.suffix == ".zarr" and is_zarr(path)):
        raise StoreError(f"{path}: is a folder, not a result; choose another name")
    if path.is_dir() and (path / "obs").exists():
        raise StoreError(f"{path}: is an activation store; a result never replaces one, choose another name")


def write_result(result, path) -> None:
    """Write a result Dataset to ``.nc`` (netCDF) or ``.zarr``, atomically."""
    path = Path(path)
    check_result_path(path)
    with written_atomically(path) as partial, naming(path, "cannot write the result"):
        if path.suffix == ".nc":
            # netCDF is built in memory (a result is small) and written with plain file
            # I/O: h5py writing straight to a full disk can crash the process
            import dask

            # a small in-memory result: no distributed lock (xarray would ask the client
            # for one keyed by the in-memory file, which it cannot serve)
            with dask.config.set(scheduler="synchronous"):
                data = result.to_netcdf(engine="h5netcdf")
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
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
            result = xr.open_zarr(path).load()
        else:
            result = xr.load_dataset(path, engine="h5netcdf")
    except Exception as error:
        raise StoreError(f"{path}: not a result file ({type(error).__name__}: {error})") from None
    matrices = [name for name, v in result.data_vars.items() if v.dims[-2:] == ("layer_a", "layer_b")]
    if not matrices:
        raise StoreError(f"{path}: not an rv2dist result (no layer_a x layer_b matrix in it)")
    return result


def network_names(result):
    """``(network a, network b)`` of a single result, from its attrs or scalar
    coordinates; ``(None, None)`` when it names none."""
    names = []
    for side in ("network_a", "network_b"):
        name = result.attrs.get(side)
        if name is None and side in result.coords and result[side].ndim == 0:
            name = str(result[side].values)
        names.append(None if name is None else str(name))
    return names[0], names[1] if names[1] is not None else names[0]


def panels(source, comparisons=None):
    """``[(label, single result)]``: every comparison in ``source`` (see the module
    docstring), in order, each with ``network_a``/``network_b`` attrs where known.

    Parameters
    ----------
    source : result, list of results, combined result, path
        What to take apart.
    comparisons : list of str, optional
        Which comparisons, in this order, by label: a combined result's ``comparison``
        names, else ``"<a>__<b>"`` from the network names (``"result"`` without them;
        repeated labels get `` (2)``, `` (3)``, ...).

    Raises
    ------
    ValueError
        For a label ``source`` does not hold, naming those it does.
    TypeError
        For anything not listed in the module docstring.
    """
    found = _taken_apart(source)
    labels = {}
    for index, (label, _) in enumerate(found):
        unique, count = label, 1
        while unique in labels:
            count += 1
            unique = f"{label} ({count})"
        labels[unique] = index
    if comparisons is None:
        return [(label, found[index][1]) for label, index in labels.items()]
    if isinstance(comparisons, str):
        comparisons = [comparisons]
    unknown = [name for name in comparisons if name not in labels]
    if unknown:
        raise ValueError(f"no comparison {unknown[0]!r} among the results; they hold {', '.join(labels)}")
    return [(name, found[labels[name]][1]) for name in comparisons]


def _taken_apart(source):
    if isinstance(source, (str, os.PathLike)):
        return _taken_apart(read(source))
    kind = type(source).__name__ if type(source).__module__.startswith("xarray") else None
    if kind in ("Dataset", "DataArray"):
        if "comparison" in source.dims:
            return [_selected(source, name) for name in source["comparison"].values]
        network_a, network_b = network_names(source)
        return [(f"{network_a}__{network_b}" if network_a else "result", source)]
    if isinstance(source, np.ndarray):
        return _taken_apart(_as_matrix(source))
    if isinstance(source, (list, tuple)):
        return [part for item in source for part in _taken_apart(item)]
    raise TypeError(f"expected {ACCEPTED}; got {type(source).__module__}.{type(source).__name__}")


def _selected(combined, name):
    one = combined.sel(comparison=name)
    # a new attrs dict: a selection shares the caller's
    one.attrs = {**one.attrs, "network_a": str(one["network_a"].values), "network_b": str(one["network_b"].values)}
    return str(name), one.drop_vars(["comparison", "network_a", "network_b"])


def _as_matrix(array):
    import xarray as xr

    if array.ndim != 2:
        raise ValueError(f"a result array is one (layers of a, layers of b) matrix; this one has shape {array.shape}")
    rows, cols = array.shape
    return xr.DataArray(np.asarray(array, dtype=float), dims=("layer_a", "layer_b"),
                        coords={"layer_a": [str(i) for i in range(rows)], "layer_b": [str(j) for j in range(cols)]})


def combine(parts):
    """One Dataset of single results along a ``comparison`` dimension, with
    ``network_a``/``network_b`` coordinates along it.

    Parameters
    ----------
    parts : list of (str, str, str, xarray.Dataset or DataArray)
        ``(comparison label, network a, network b, result)``; a DataArray becomes a
        Dataset of its one metric.  Variables keep the attrs on which every result
        holding them agrees (results of another ``alpha`` or ``center`` say neither);
        the Dataset's own attrs are left to the caller.
    """
    import xarray as xr

    labelled = []
    for label, network_a, network_b, result in parts:
        own = {key: ("comparison", [_own(result, key, unknown)]) for key, (unknown, _, _) in PER_COMPARISON.items()}
        if not hasattr(result, "data_vars"):
            result = result.to_dataset(name=result.name if result.name is not None else "value")
        result = result.drop_vars(["network_a", "network_b", *PER_COMPARISON], errors="ignore")
        labelled.append(result.expand_dims(comparison=[label]).assign_coords(
            network_a=("comparison", [network_a or ""]), network_b=("comparison", [network_b or ""]), **own))
    combined = xr.concat(labelled, dim="comparison", join="outer", combine_attrs="drop")
    for name in combined.data_vars:
        combined[name].attrs = _shared_attrs([part[name].attrs for part in labelled if name in part.data_vars])
    combined["comparison"].attrs.update(long_name="comparison", description="network a against network b")
    for key, (_, long_name, description) in PER_COMPARISON.items():
        combined[key].attrs.update(long_name=long_name, description=description)
    return combined


def _shared_attrs(attrs) -> dict:
    """The entries of the first of ``attrs`` (dicts) that every other one holds too."""
    return {key: value for key, value in attrs[0].items()
            if all(key in other and np.array_equal(other[key], value) for other in attrs[1:])}


def _own(result, key, unknown):
    """A single result's ``key``: its scalar coordinate (a comparison taken out of a
    combined result), else its attr, else ``unknown``."""
    if key in result.coords and result[key].ndim == 0:
        return result[key].values.item()
    return result.attrs.get(key, unknown)


# what a combined result keeps of each comparison's own attrs, as a coordinate along
# ``comparison``: (its value when a result has none, long_name, description)
PER_COMPARISON = {
    "route": ("", "route", "the route that computed the comparison's statistics (see rv2dist.plan)"),
    "n_obs": (-1, "observations", "number of observations compared"),
    "obs_digest": ("", "observation ids digest", "digest of the observation ids in the order their bootstrap "
                   "weights were drawn (kept replicates only; empty otherwise): equal digests pair replicates"),
}


def open_results(source):
    """Results as one labelled Dataset: dims ``(comparison, layer_a, layer_b)``,
    coordinates ``network_a``/``network_b`` along ``comparison``, provenance in attrs.

    Parameters
    ----------
    source : str, Path, result or list of results
        A job's results folder (its ``combined.nc`` or ``combined.zarr``), a result
        file (single or combined), or results in memory: a single result (from
        :func:`rv2dist.similarity` or :func:`rv2dist.compare_models`), a list of them,
        or a combined result (returned as it is).
    """
    if isinstance(source, (str, os.PathLike)):
        source = read(source)
        if "comparison" in source.dims:
            return source
    elif hasattr(source, "dims") and "comparison" in source.dims:
        return source
    found = panels(source)
    if not found:
        raise ValueError("no results to open (an empty list)")
    combined = combine([(label, *network_names(result), result) for label, result in found])
    if len(found) == 1:
        combined.attrs.update({k: v for k, v in found[0][1].attrs.items() if k not in ("network_a", "network_b")})
    return combined
