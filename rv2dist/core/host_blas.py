"""Which BLAS computes the feature route's cross-products on the host: numpy's, or
torch's where torch is already imported and measurably faster on this machine.

Only products of two different operands are taken through torch: numpy computes a
layer against itself as a symmetric rank-k update (half the operations), which torch's
``matmul`` does not.
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np

BLAS = ("auto", "numpy", "torch")

# cross-product operations of one chunk from which "auto" times both BLAS (once per
# process, about 0.1 s: a few per cent of such a chunk's products)
CALIBRATE_FLOP = 2e11

# how much faster torch must be, in every timing, to be taken (timings on a shared
# machine vary by some per cent)
MARGIN = 1.1


def check_blas(blas: str) -> str:
    if blas not in BLAS:
        raise ValueError(f"dask config 'rv2dist.blas' is {blas!r}; choose one of {', '.join(BLAS)}")
    return blas


def cross_matmul(blas: str, flop: float):
    """``matmul(x, y, out)`` for host cross-products (``out`` may be None).

    Parameters
    ----------
    blas : {"auto", "numpy", "torch"}
        ``"numpy"`` or ``"torch"`` as named (torch must be installed); ``"auto"``: torch
        where it is already imported (its import takes seconds, never paid for this),
        the products are large (``flop`` at least :data:`CALIBRATE_FLOP`) and timing
        both on one cross-product here found torch :data:`MARGIN` times faster; else numpy.
    flop : float
        The cross-products' operations in the chunk at hand.
    """
    check_blas(blas)
    if blas == "auto":
        blas = _measured_choice() if flop >= CALIBRATE_FLOP and "torch" in sys.modules else "numpy"
    if blas == "torch":
        _torch()
        return _torch_matmul
    return _numpy_matmul


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ValueError(f"dask config 'rv2dist.blas' is 'torch', but torch cannot be imported here: {error}") from None
    return torch


def _numpy_matmul(x, y, out):
    return np.matmul(x, y, out=out)


def _torch_matmul(x, y, out):
    torch = _torch()
    if out is None:
        out = np.empty((x.shape[0], y.shape[1]), dtype=np.result_type(x.dtype, y.dtype))
    torch.matmul(torch.from_numpy(x), torch.from_numpy(y), out=torch.from_numpy(out))
    return out


@functools.lru_cache(maxsize=1)
def _measured_choice() -> str:
    """"torch" if it took a float32 cross-product of the feature route's shape (a
    2,048-row chunk of two 1,024-unit blocks) :data:`MARGIN` times faster than numpy in
    both of two alternating timings, else "numpy"."""
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((2048, 1024), dtype=np.float32) for _ in range(2))
    out = np.empty((1024, 1024), dtype=np.float32)
    seconds = {"numpy": [], "torch": []}
    for _ in range(3):
        for name, matmul in (("numpy", _numpy_matmul), ("torch", _torch_matmul)):
            start = time.perf_counter()
            matmul(x.T, y, out)
            seconds[name].append(time.perf_counter() - start)
    # the first round warms both up
    faster = all(n >= MARGIN * t for n, t in zip(seconds["numpy"][1:], seconds["torch"][1:]))
    return "torch" if faster else "numpy"
