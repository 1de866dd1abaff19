"""Every kind of input, turned into layers: ``[(name, array (n_obs, ...))]`` plus the
observation ids when the input has them.

One home for input coercion, so that accepting a new kind touches this module only.
Accepted: a mapping ``{layer name: array}``, a sequence of arrays (named by position or
``names=``), an xarray Dataset (its sample dimension ``obs``, or any named by
``obs_dim=``), an xarray DataArray (one layer), or the path of an activation store.
Arrays may be numpy, dask, CuPy, PyTorch tensors (CPU: shared memory; CUDA: handed to
CuPy through DLPack, never copied to the host) or DataArrays (first dimension =
observations, whatever its name).  Further dimensions are flattened into units later.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

ACCEPTED = ("a mapping {layer name: array}, a sequence of arrays, an xarray Dataset or DataArray, "
            "or a store path; arrays may be numpy, dask, CuPy, PyTorch tensors or DataArrays")


def is_dask(x) -> bool:
    return type(x).__module__.startswith("dask.") and hasattr(x, "chunks")


def backend(array):
    """Top-level module of the array's chunk type ("numpy", "cupy", ...)."""
    return type(getattr(array, "_meta", array)).__module__.split(".")[0]


def as_layers(obj, side, *, names=None, obs_dim=None):
    """``obj`` as ``([(name, array)], ids or None)``; see the module docstring.

    Parameters
    ----------
    obj : mapping, sequence, xarray.Dataset, xarray.DataArray or path
        One network's activations.
    side : str
        ``"a"`` or ``"b"``, for messages.
    names : list of str, optional
        Layer names of a sequence of arrays (default ``"0"``, ``"1"``, ...).
    obs_dim : str, optional
        The sample dimension of a Dataset not in the store schema.

    Raises
    ------
    TypeError
        For a kind that is not accepted, naming the side or layer and what is accepted.
    """
    from rv2dist.io import store

    if isinstance(obj, (str, os.PathLike)):
        dataset = store.open_activations(obj)
        return store.layer_arrays(dataset), check_id_values(store.observation_ids(dataset), f"{side} ({obj})")
    if _is_xarray(obj, "Dataset"):
        if obs_dim is not None and obs_dim != "obs":
            if obs_dim not in obj.dims:
                raise ValueError(f"{side}: the Dataset has no dimension {obs_dim!r}; it has {', '.join(map(str, obj.dims))}")
            obj = obj.rename({obs_dim: "obs"})
        elif "obs" not in obj.dims:
            raise ValueError(f"{side}: the Dataset has no 'obs' dimension; name its sample dimension with "
                             f"obs_dim= (it has {', '.join(map(str, obj.dims))})")
        dataset = store.validate_dataset(_observations_first(obj, side), source=f"{side} (Dataset)")
        return store.layer_arrays(dataset), check_id_values(store.observation_ids(dataset), f"{side} (Dataset)")
    if _is_xarray(obj, "DataArray"):
        obj = {str(obj.name) if obj.name is not None else "0": obj}
    elif isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)) and not hasattr(obj, "shape"):
        names = [str(i) for i in range(len(obj))] if names is None else name_list(names, "names")
        if len(names) != len(obj):
            raise ValueError(f"{side}: {len(names)} names for {len(obj)} arrays")
        repeated = first_repeated(names)
        if repeated is not None:
            # a mapping would keep only the last array of that name
            raise ValueError(f"{side}: layer name {repeated!r} is given to more than one array")
        obj = dict(zip(names, obj))
    if not isinstance(obj, Mapping):
        raise TypeError(f"{side} must be {ACCEPTED}; got {type(obj).__name__}")
    if not obj:
        raise ValueError(f"{side} has no layers")
    layers = []
    for name, array in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"{side}: layer names must be strings, got {name!r}")
        array = as_array(name, array)
        if len(array.shape) == 0:
            raise ValueError(f"layer {name!r} is a scalar; expected (observations, units...)")
        units = int(np.prod(array.shape[1:], dtype=np.int64)) if len(array.shape) > 1 else 1
        if units == 0:
            raise ValueError(f"layer {name!r} has no units (shape {tuple(array.shape)})")
        layers.append((name, array))
    return layers, None


def _observations_first(dataset, side):
    """A Dataset's variables over ``obs`` with ``obs`` first (a layer stored units by
    observations is still a layer); variables without ``obs`` are left out with a
    warning naming them, unless the Dataset's ``layers`` attr lists its layers."""
    if "layers" in dataset.attrs:
        return dataset
    skipped = [str(name) for name, variable in dataset.data_vars.items() if "obs" not in variable.dims]
    if skipped:
        warnings.warn(f"{side}: the Dataset's variable(s) {', '.join(map(repr, skipped))} have no 'obs' dimension "
                      "and are not layers; they are left out", UserWarning, stacklevel=4)
    return dataset.drop_vars(skipped).transpose("obs", ...)


def check_id_values(ids, where, first=0):
    """``ids`` when every one can identify an observation: NaN equals nothing, not
    even itself, so no NaN (or NaT) id is taken.  ``first``: the position of ``ids[0]``
    among all observations, for the message."""
    values = np.asarray(ids) if ids is not None else None
    if values is not None and values.dtype.kind in "fcmM":
        missing = np.flatnonzero(np.isnan(values))
        if missing.size:
            raise ValueError(f"{where}: the observation id at position {first + missing[0]:,} is "
                             f"{'NaT' if values.dtype.kind in 'mM' else 'NaN'}, which identifies nothing; "
                             "give every observation its own id")
    return ids


def real_number(value) -> bool:
    """Whether ``value`` is a real number: Python's or a numpy scalar, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def name_list(names, option):
    """``names`` (one name, or a list, tuple or other iterable of names) as a list of
    strings; a TypeError naming ``option`` otherwise."""
    if isinstance(names, str):
        return [names]
    try:
        listed = list(names)
    except TypeError:
        listed = None
    if listed is None or not all(isinstance(name, str) for name in listed):
        raise TypeError(f"{option} must be a name or a list of names (strings), not {names!r}")
    return listed


def as_array(name, value):
    """One layer as an array rv2dist computes with: numpy, dask or CuPy, never copied
    where sharing is possible."""
    if _is_xarray(value, "DataArray"):
        value = value.data
    if type(value).__module__.split(".")[0] == "torch":
        value = _from_torch(name, value)
    elif not hasattr(value, "shape") or not hasattr(value, "dtype"):
        try:
            value = np.asarray(value)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"layer {name!r} is not an array of one shape: {error}") from None
    elif not (isinstance(value, np.ndarray) or is_dask(value) or backend(value) == "cupy"):
        raise TypeError(f"layer {name!r} is a {type(value).__module__}.{type(value).__name__}; "
                        f"accepted: {ACCEPTED}")
    check_dtype(name, value.dtype)
    if any(math.isnan(size) for size in value.shape):
        raise ValueError(f"layer {name!r} is a dask array of unknown size {value.shape} (after boolean "
                         "indexing?); call its .compute_chunk_sizes() first")
    return value


def _from_torch(name, tensor):
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"layer {name!r} is a {type(tensor).__name__}, not a tensor; accepted: {ACCEPTED}")
    tensor = tensor.detach()  # shares memory: no copy, no gradient tracking
    if tensor.is_nested:
        raise TypeError(f"layer {name!r} is a nested tensor (sequences of different lengths), not one array "
                        "of observations x units; pool each sequence to one vector, e.g. "
                        "torch.stack([s.mean(0) for s in tensor.unbind()])")
    if tensor.is_quantized:
        tensor = tensor.dequantize()  # the real values it stands for, as float32
    if tensor.layout != torch.strided:
        raise TypeError(f"layer {name!r} is a tensor of layout {tensor.layout}; pass it dense (.to_dense())")
    if tensor.is_complex():
        raise TypeError(f"layer {name!r} has dtype {tensor.dtype}, not a real number type")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()  # numpy and CuPy have no bfloat16
    if tensor.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(tensor)  # stays on the device
    if tensor.device.type != "cpu":
        raise TypeError(f"layer {name!r} is a tensor on {tensor.device}; move it to the CPU or a CUDA device")
    return tensor.numpy()


def _is_xarray(obj, kind) -> bool:
    return type(obj).__name__ == kind and type(obj).__module__.startswith("xarray")


def check_dtype(name, dtype):
    kind = getattr(dtype, "kind", None)
    if kind not in ("f", "i", "u", "b"):
        raise TypeError(
            f"layer {name!r} has dtype {dtype}, not a real number type; "
            "activations must be float, integer or boolean arrays"
        )


def select(layers, wanted, side):
    if wanted is None:
        return layers
    by_name = dict(layers)
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise ValueError(f"{side} has no layer {missing[0]!r}; it has {', '.join(by_name)}")
    return [(w, by_name[w]) for w in wanted]


def is_pair(value) -> bool:
    """Whether an option's value is a pair ``(a's, b's)`` of name lists (or a name
    and a list) rather than one list of names."""
    def names(side):
        return isinstance(side, str) or (hasattr(side, "__iter__") and not isinstance(side, (bytes, Mapping)))

    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(names(side) for side in value)
            and not all(isinstance(side, str) for side in value))


def split_layer_selection(layers, self_job):
    if layers is None:
        return None, None
    if is_pair(layers):
        if self_job:
            raise ValueError("layers=(a, b) needs b; for a against itself give one list")
        return _layer_list(layers[0]), _layer_list(layers[1])
    return _layer_list(layers), _layer_list(layers)


def _layer_list(names):
    try:
        names = name_list(names, "layers")  # "fc1" is one layer, not three
    except TypeError:
        raise TypeError(f"layers must be a layer name, a list of names, or a pair (a's, b's) of lists, "
                        f"not {names!r}") from None
    if not names:
        raise ValueError("layers is empty; name the layers to compare, or leave it out for all")
    repeated = first_repeated(names)
    if repeated is not None:
        raise ValueError(f"layers names {repeated!r} twice")
    return names


def check_obs(layers):
    n = None
    first = None
    for name, array in layers:
        rows = int(array.shape[0])
        if n is None:
            n, first = rows, name
        elif rows != n:
            raise ValueError(
                f"layer {name!r} has {rows} observations but layer {first!r} has {n}; "
                "all layers must hold the same observations in the same order"
            )
    return n


def first_repeated(items):
    """The first item equal to one before it, or None."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def check_ids(ids_a, ids_b, align_obs=False, labels=("a", "b")):
    """None when the ids match in order; with ``align_obs``, the permutation that puts
    b's rows in a's order when both hold the same ids; otherwise a ValueError naming
    the first mismatch, and the networks by ``labels``."""
    if ids_a is None or ids_b is None:
        return None
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    label_a, label_b = labels
    if len(ids_a) != len(ids_b):
        raise ValueError(f"{label_a} holds {len(ids_a)} observations and {label_b} {len(ids_b)}; "
                         "the two must hold the same observations")
    mismatch = np.flatnonzero(ids_a != ids_b)
    if not mismatch.size:
        return None
    if align_obs:
        order_b = np.argsort(ids_b, kind="stable")
        position = np.searchsorted(ids_b, ids_a, sorter=order_b)
        position = np.minimum(position, len(ids_b) - 1)
        found = ids_b[order_b[position]] == ids_a
        if found.all():
            return order_b[position]
        i = int(np.flatnonzero(~found)[0])
        raise ValueError(f"cannot align by id: observation {ids_a[i].item()!r} of {label_a} is not in {label_b}")
    i = int(mismatch[0])
    raise ValueError(
        f"observation ids differ first at position {i}: {ids_a[i].item()!r} against {ids_b[i].item()!r}"
        f" ({label_a} against {label_b}; pass align_obs=True to reorder b when both hold the same ids)"
    )


