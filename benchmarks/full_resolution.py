"""Benchmark (h2): the seed study's data without its 40x downsampling, generated lazily.

943,280 observations, two networks of the study's 11 layer widths (64 ... 1024), float32,
the 11 x 11 cross RV2 matrix.  Each network is a dask array per layer whose row blocks
(23,582 rows) are computed on demand by a fixed random ReLU network, so nothing of the
32 GB is ever held at once.  Three timings in one run:

- generation alone (every block of both networks made and dropped);
- rv2dist on the lazy arrays (generation included);
- the BLAS floor: the same blocks made again, and for each the concatenated A'B plus each
  layer's X'X with numpy, only the products timed.

The ratio reported is (rv2dist - generation) / floor.

    python benchmarks/full_resolution.py [--n-obs N] [--block ROWS]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from paper_scale import WIDTHS, draw_weights, floor_products, forward  # noqa: E402


def block_layers(weights, start, stop):
    """The layers of rows ``start:stop`` of the network with ``weights``; both networks
    see the same inputs (drawn per block), as two networks shown one stimulus set."""
    rng = np.random.default_rng([0, start])
    return forward(rng.standard_normal((stop - start, 32), dtype=np.float32), weights)


def lazy_network(weights, n, block):
    """``{layer: dask array (n, width)}`` whose row blocks are generated when computed;
    one task per block makes all its layers."""
    import dask
    import dask.array as da

    names = list(block_layers(weights, 0, 1))
    layers = {name: [] for name in names}
    for start in range(0, n, block):
        stop = min(n, start + block)
        made = dask.delayed(block_layers, pure=True)(weights, start, stop)
        for name, width in zip(names, WIDTHS):
            layers[name].append(da.from_delayed(made[name], (stop - start, width), dtype=np.float32))
    return {name: da.concatenate(parts) for name, parts in layers.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-obs", type=int, default=943280)
    parser.add_argument("--block", type=int, default=23582)
    args = parser.parse_args()
    n, block = args.n_obs, args.block
    weights = [draw_weights(np.random.default_rng(seed)) for seed in (1, 2)]
    starts = list(range(0, n, block))

    begin = time.perf_counter()
    for start in starts:
        for w in weights:
            block_layers(w, start, min(n, start + block))
    generation = time.perf_counter() - begin

    a, b = (lazy_network(w, n, block) for w in weights)
    print(rv2dist.plan(a, b))
    begin = time.perf_counter()
    result = rv2dist.similarity(a, b, metric="rv2")
    ours = time.perf_counter() - begin

    floor = 0.0
    for start in starts:
        stop = min(n, start + block)
        products = floor_products(block_layers(weights[0], start, stop), block_layers(weights[1], start, stop))
        begin = time.perf_counter()
        products()
        floor += time.perf_counter() - begin

    print(f"machine: {os.cpu_count()} cores; n_obs {n:,} in blocks of {block:,}")
    print(f"generation alone {generation:.1f} s; rv2dist (generation included) {ours:.1f} s; "
          f"BLAS floor {floor:.1f} s")
    print(f"ratio (rv2dist - generation) / floor: {(ours - generation) / floor:.2f}   target <= 1.3")
    print(f"RV2 diagonal: {np.round(np.diag(result.values), 3)}")


if __name__ == "__main__":
    main()
