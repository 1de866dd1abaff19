"""Array helpers for every namespace rv2dist computes in (numpy, CuPy, the array API),
and the float64 accumulation of partial sums.

Pure: arrays in, arrays of the same namespace (or Python scalars) out.  Nothing here
knows about dask, paths or plans.
"""

from __future__ import annotations

import numpy as np


def namespace(*arrays):
    """Return the array-API namespace of the first array that declares one."""
    for x in arrays:
        get = getattr(x, "__array_namespace__", None)
        if get is not None:
            return get()
        if type(x).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_numpy(x):
    """Copy a (small) array of any namespace to host numpy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):
        return x.get()
    return np.from_dlpack(x)


def numpy_like(xp) -> bool:
    """Whether ``xp`` has numpy's extras beyond the array API: ``out=`` arguments,
    ``einsum`` and views that write through to their base (numpy and CuPy)."""
    return xp.__name__ in ("numpy", "cupy")


def astype(x, dtype):
    xp = namespace(x)
    if x.dtype == dtype:
        return x
    # CuPy's namespace has no ``astype`` function; its arrays have the method
    return xp.astype(x, dtype) if hasattr(xp, "astype") else x.astype(dtype)


def f64(x):
    return astype(x, namespace(x).float64)


def matmul_into(x, y, out):
    """``x @ y``, written into ``out`` where the namespace allows (no fresh pages)."""
    xp = namespace(x, y)
    if out is not None and numpy_like(xp):
        return xp.matmul(x, y, out=out)
    return x @ y


def all_finite(arrays, xp):
    """Whether every value is finite, from one float64 sum per array (no float64 copy)
    and one host sync."""
    with np.errstate(over="ignore", invalid="ignore"):
        sums = xp.stack([xp.sum(a, dtype=xp.float64) for a in arrays])
    return bool(xp.all(xp.isfinite(sums)))


def sums_of_squares(block, axis, xp):
    """Sums of the squares of ``block`` along ``axis`` (1: squared row norms), in its dtype."""
    if xp is np:
        # no squared temporary, and one call instead of one per row (CuPy's einsum
        # costs more on the host than the reduction on the device); along rows numpy 2's
        # vecdot (a BLAS dot per row) takes 0.7x einsum's time, down columns 2.3x
        if axis == 1 and hasattr(np, "vecdot"):
            return np.vecdot(block, block)
        return xp.einsum("ij,ij->i" if axis == 1 else "ij,ij->j", block, block)
    return xp.sum(block * block, axis=axis)


def concat(xp, arrays, axis=0):
    join = getattr(xp, "concat", None) or xp.concatenate  # array API name, or CuPy's older one
    return join(arrays, axis=axis)


def concat_host(pieces):
    return np.concatenate([to_numpy(p) for p in pieces]) if pieces else np.zeros(0)


def to_host_together(arrays):
    """``arrays`` as float64 numpy arrays, copied from a device in one transfer: each
    separate copy waits for the device, and a hundred of them cost more than the
    products they summarise."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return [np.asarray(a, dtype=np.float64) for a in arrays]
    xp = namespace(*arrays)
    flat = to_numpy(concat(xp, [xp.reshape(f64(a), (-1,)) for a in arrays]))
    return split_flat(flat, [a.shape for a in arrays])


def to_device_together(arrays, xp):
    """Host numpy ``arrays`` as arrays of ``xp``, copied in one transfer."""
    if xp is np:
        return arrays
    flat = xp.asarray(np.concatenate([a.reshape(-1) for a in arrays]), dtype=xp.float64)
    return split_flat(flat, [a.shape for a in arrays])


def split_flat(flat, shapes):
    xp = namespace(flat)
    bounds = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])
    return [xp.reshape(flat[int(start):int(stop)], shape) for shape, start, stop in zip(shapes, bounds[:-1], bounds[1:])]


def swap_last(x):
    """``x`` with its last two axes swapped (``.mT`` of the array API, or CuPy's swapaxes)."""
    return x.mT if hasattr(x, "mT") else x.swapaxes(-1, -2)


# sums out of float64's range are reported by layer name once the job ends (see
# rv2dist.core.metrics.scale_faults), not as numpy's warnings along the way
QUIET_RANGE = np.errstate(over="ignore", invalid="ignore")


def combine(parts):
    """Sum partial results of several chunks, leaf by leaf: arrays (alone, or in dicts
    and lists, as :func:`chunk_sums` returns them) in float64, accumulated in place into
    one float64 copy of the first part's; numbers added; None stays None."""
    total = accumulate(None, parts[0])
    for part in parts[1:]:
        total = accumulate(total, part)
    return total


def accumulate(total, part):
    """``total + part`` for one leaf or structure; ``total`` None for the first part."""
    if isinstance(part, dict):
        return {key: accumulate(None if total is None else total[key], value) for key, value in part.items()}
    if isinstance(part, list):
        return [accumulate(None if total is None else total[i], value) for i, value in enumerate(part)]
    if part is None or not hasattr(part, "shape"):
        return part if total is None else total + part
    if total is None:
        owned = f64(part)
        return owned + 0.0 if owned is part else owned  # never the part itself: it may be reused
    total += part
    return total


def _qr_iteration_if_needed(decompose, matrix, compute_uv):
    """``decompose()`` (LAPACK's divide and conquer, gesdd); where that does not
    converge, as it may on a matrix whose singular values cluster (a degenerate cell's
    whitened block, every canonical correlation 1), QR iteration (scipy's gesvd) on a
    host array."""
    try:
        return decompose()
    except np.linalg.LinAlgError:
        if namespace(matrix) is not np:
            raise
        from scipy.linalg import svd

        return svd(matrix, full_matrices=False, compute_uv=compute_uv, lapack_driver="gesvd")


def thin_svd(matrix):
    """``(u, s, vh)``, the thin SVD of ``matrix``."""
    xp = namespace(matrix)
    return _qr_iteration_if_needed(lambda: xp.linalg.svd(matrix, full_matrices=False), matrix, True)


def singular_values(matrix):
    """The singular values of ``matrix`` alone (a third of the work of :func:`thin_svd`)."""
    xp = namespace(matrix)
    svdvals = getattr(xp.linalg, "svdvals", None)
    return _qr_iteration_if_needed(
        lambda: svdvals(matrix) if svdvals is not None else xp.linalg.svd(matrix, compute_uv=False), matrix, False)
