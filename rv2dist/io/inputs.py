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
from typing import NamedTuple

import numpy as np

from rv2dist.core.checks import first_repeated
from rv2dist.io.ids import check_id_values
from rv2dist.io.names import name_list
from rv2dist.io.reader import open_activations
from rv2dist.io.schema import (
    REAL_KINDS,
    layer_arrays,
    observation_ids,
    validate_dataset,
)

ACCEPTED = ("a mapping {layer name: array}, a sequence of arrays, an xarray Dataset or DataArray, "
            "or a store path; arrays may be numpy, dask, CuPy, PyTorch tensors or DataArrays")


def is_dask(x) -> bool:
    return type(x).__module__.startswith("dask.") and hasattr(x, "chunks")


def backend(array):
    """Top-level module of the array's chunk type ("numpy", "cupy", ...)."""
    return type(getattr(array, "_meta", array)).__module__.split(".")[0]


class InputLayers(NamedTuple):
    """One network's input: ``[(name, array)]`` in depth order, and its observation ids
    when the input has them (else None)."""

    layers: list
    ids: np.ndarray | None


def as_layers(obj, side, *, names=None, obs_dim=None) -> InputLayers:
    """``obj`` as its layers and ids; see the module docstring.

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
    if isinstance(obj, (str, os.PathLike)):
        return _stored(open_activations(obj), f"{side} ({obj})")
    if _is_xarray(obj, "Dataset"):
        return _stored(_as_store_dataset(obj, side, obs_dim), f"{side} (Dataset)")
    if _is_xarray(obj, "DataArray"):
        obj = {str(obj.name) if obj.name is not None else "0": obj}
    elif isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)) and not hasattr(obj, "shape"):
        obj = _named(obj, side, names)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{side} must be {ACCEPTED}; got {type(obj).__name__}")
    if not obj:
        raise ValueError(f"{side} has no layers")
    layers = []
    for name, array in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"{side}: layer names must be strings, got {name!r}")
        array = as_array(name, array)
        _row_count(name, array)
        if len(array.shape) > 1 and 0 in array.shape[1:]:
            raise ValueError(f"layer {name!r} has no units (shape {tuple(array.shape)})")
        layers.append((name, array))
    return InputLayers(layers, None)


def _stored(dataset, where):
    """The layers and ids of a Dataset in the store schema."""
    return InputLayers(layer_arrays(dataset), check_id_values(observation_ids(dataset), where))


def _as_store_dataset(dataset, side, obs_dim):
    """A Dataset of one network's layers, checked against the store schema, its sample
    dimension named ``obs``."""
    if obs_dim is not None and obs_dim != "obs":
        if obs_dim not in dataset.dims:
            raise ValueError(f"{side}: the Dataset has no dimension {obs_dim!r}; it has "
                             f"{', '.join(map(str, dataset.dims))}")
        dataset = dataset.rename({obs_dim: "obs"})
    elif "obs" not in dataset.dims:
        raise ValueError(f"{side}: the Dataset has no 'obs' dimension; name its sample dimension with "
                         f"obs_dim= (it has {', '.join(map(str, dataset.dims))})")
    return validate_dataset(_observations_first(dataset, side), source=f"{side} (Dataset)")


def _named(arrays, side, names):
    """A sequence of arrays as ``{name: array}``, named by ``names`` or by position."""
    names = [str(i) for i in range(len(arrays))] if names is None else name_list(names, "names")
    if len(names) != len(arrays):
        raise ValueError(f"{side}: {len(names)} names for {len(arrays)} arrays")
    repeated = first_repeated(names)
    if repeated is not None:
        # a mapping would keep only the last array of that name
        raise ValueError(f"{side}: layer name {repeated!r} is given to more than one array")
    return dict(zip(names, arrays))


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


def real_number(value) -> bool:
    """Whether ``value`` is a real number: Python's or a numpy scalar, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


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
    if getattr(dtype, "kind", None) not in tuple(REAL_KINDS):
        raise TypeError(
            f"layer {name!r} has dtype {dtype}, not a real number type; "
            "activations must be float, integer or boolean arrays"
        )


def check_obs(layers):
    """The number of observations every layer of ``[(name, array)]`` holds; a ValueError
    naming a scalar or a layer of another number."""
    n = first = None
    for name, array in layers:
        rows = _row_count(name, array)
        if n is None:
            n, first = rows, name
        elif rows != n:
            raise ValueError(
                f"layer {name!r} has {rows} observations but layer {first!r} has {n}; "
                "all layers must hold the same observations in the same order"
            )
    return n


def _row_count(name, array) -> int:
    """The number of observations of layer ``name``; a ValueError for a scalar."""
    if len(array.shape) == 0:
        raise ValueError(f"layer {name!r} is a scalar; expected (observations, units...)")
    return int(array.shape[0])
