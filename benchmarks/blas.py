"""Which host BLAS takes the feature route's products faster here: numpy's or torch's.

Two networks of the seed study's 11 widths (as paper_scale.py), at each ``--n-obs``:
the float32 cross-product of their concatenated layers (what the route computes in one
GEMM) and each layer against itself (numpy takes it as a symmetric rank-k update),
timed with numpy and with torch alternately, best and median of ``--repeat``; then the
linear + debiased CKA job with dask config ``rv2dist.blas`` "numpy" and "torch",
alternately (paired ratios), and what ``"auto"`` (the default) chooses on this machine.

    python benchmarks/blas.py [--n-obs 2000 23582] [--repeat 5]
"""

import argparse
import os
import statistics
import sys
import time

import dask
import numpy as np
import torch

import rv2dist
from rv2dist.core import host_blas

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_scale import network  # noqa: E402


def _alternate(functions, repeat):
    seconds = {name: [] for name in functions}
    for name, function in functions.items():
        function()  # warm
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _products(a, b, repeat):
    cat_a, cat_b = np.hstack(list(a.values())), np.hstack(list(b.values()))
    own = list(a.values()) + list(b.values())
    n = cat_a.shape[0]
    cross_flop = 2 * n * cat_a.shape[1] * cat_b.shape[1]
    own_flop = sum(n * x.shape[1] ** 2 for x in own)  # a symmetric update's operations
    t_a, t_b, t_own = torch.from_numpy(cat_a), torch.from_numpy(cat_b), [torch.from_numpy(x) for x in own]
    seconds = _alternate({
        "cross numpy": lambda: cat_a.T @ cat_b,
        "cross torch": lambda: t_a.T @ t_b,
        "own numpy": lambda: [x.T @ x for x in own],
        "own torch": lambda: [x.T @ x for x in t_own],
    }, repeat)
    for kind, flop in (("cross", cross_flop), ("own", own_flop)):
        rates = {blas: flop / min(seconds[f"{kind} {blas}"]) / 1e9 for blas in ("numpy", "torch")}
        medians = {blas: statistics.median(seconds[f"{kind} {blas}"]) for blas in ("numpy", "torch")}
        print(f"  {kind:5s} products: numpy {rates['numpy']:.0f} GFLOP/s, torch {rates['torch']:.0f} GFLOP/s "
              f"(best); torch / numpy time, medians: {medians['torch'] / medians['numpy']:.2f}")


def _jobs(a, b, repeat):
    def job(blas):
        with dask.config.set({"rv2dist.blas": blas}):
            return rv2dist.similarity(a, b, metric=["cka", "cka_debiased"], progress=False)

    seconds = _alternate({"numpy": lambda: job("numpy"), "torch": lambda: job("torch")}, repeat)
    paired = statistics.median(t / n for t, n in zip(seconds["torch"], seconds["numpy"]))
    print(f"  the job: numpy {min(seconds['numpy']):.3f} s, torch {min(seconds['torch']):.3f} s (best); "
          f"torch / numpy, median of paired ratios {paired:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-obs", type=int, nargs="+", default=[2000, 23582])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    for n_obs in args.n_obs:
        rng = np.random.default_rng(0)
        a, b = network(rng, n_obs), network(rng, n_obs)
        print(f"n_obs {n_obs:,}:")
        _products(a, b, args.repeat)
        _jobs(a, b, args.repeat)
    choice = host_blas._measured_choice()
    print(f'"auto" times both once per process (torch imported, chunks of at least '
          f'{host_blas.CALIBRATE_FLOP / 1e9:.0f} GFLOP of cross-products) and here chooses {choice}')


if __name__ == "__main__":
    main()
