"""Cost of every measure together against the RV2-only job, in one run.

The seed study's shape (2 x 11 ReLU layers of 64 ... 1024 units, float32): the RV2-only
job and the job of every measure rv2dist has (the RV family, RSA, and the second-moment
measures from the same pass) are timed alternately, best of ``--repeat`` each, and their
ratio printed; then the second-moment measures' finalisation alone (the blocks'
decompositions and every cell's measures, from exact blocks), per cell.

    python benchmarks/measures.py                     # paper scale, 23,582 observations in memory
    python benchmarks/measures.py --n-obs 943280 --lazy --repeat 1   # full resolution, generated lazily
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from full_resolution import lazy_network  # noqa: E402
from paper_scale import draw_weights, forward  # noqa: E402

from rv2dist.core import block_measures  # noqa: E402
from rv2dist.core.measures import MEASURES  # noqa: E402

EVERY = [name for name in MEASURES if name != "rv2_null"]
SECOND_MOMENT = [name for name in EVERY if MEASURES[name].family == "blocks"]


def networks(n, lazy, block=8192):
    weights = [draw_weights(np.random.default_rng(seed)) for seed in (1, 2)]
    if lazy:
        return tuple(lazy_network(w, n, block) for w in weights)
    h = np.random.default_rng(0).standard_normal((n, 32), dtype=np.float32)
    return tuple(forward(h, w) for w in weights)


def _job(a, b, metric):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.DegenerateCellWarning)
        begin = time.perf_counter()
        rv2dist.similarity(a, b, metric=metric)
        return time.perf_counter() - begin


def alternate(a, b, repeat):
    """Best seconds of the RV2-only job and of every measure's, timed alternately."""
    rv2, every = [], []
    for _ in range(repeat):
        rv2.append(_job(a, b, "rv2"))
        every.append(_job(a, b, EVERY))
    return min(rv2), min(every)


def finalisation(a, b):
    """Seconds of the second-moment measures' task alone, from exact float64 blocks of
    the same layers (each layer decomposed once, every cell's measures)."""
    layers = [np.asarray(x, np.float64) for x in list(a.values()) + list(b.values())]
    n, la = len(layers[0]), len(a)
    sums = [x.sum(axis=0) for x in layers]
    centred = [x - s / n for x, s in zip(layers, sums)]
    own = tuple(x.T @ x for x in centred)
    cross = {(r, c): centred[r].T @ centred[c] for r in range(la) for c in range(la, len(layers))}
    blocks = block_measures.Blocks(float(n), own, cross)
    measures = [MEASURES[name] for name in SECOND_MOMENT]
    begin = time.perf_counter()
    decomposed = block_measures.decompose(blocks, 1e-8)
    middle = time.perf_counter()
    block_measures.block_values(decomposed, blocks, tuple(range(la)), tuple(range(la, len(layers))), measures,
                                block_measures.MeasureOptions())
    end = time.perf_counter()
    return middle - begin, end - middle, len(cross)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=23582)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lazy", action="store_true", help="generate the layers lazily (full resolution)")
    args = parser.parse_args()
    a, b = networks(args.n_obs, args.lazy)
    print(f"{args.n_obs:,} observations, 2 x {len(a)} layers; every measure: {', '.join(EVERY)}")
    print(rv2dist.plan(a, b, metric=EVERY))
    _job(a, b, "rv2")  # the first call: imports and thread pools
    rv2, every = alternate(a, b, args.repeat)
    print(f"RV2 alone {rv2:.2f} s; every measure {every:.2f} s: ratio {every / rv2:.2f} (target <= 1.15)")
    if not args.lazy:
        decompose, cells, count = finalisation(a, b)
        print(f"second-moment finalisation: {decompose:.2f} s decomposing {2 * len(a)} layers, {cells:.2f} s for "
              f"{count} cells ({1e3 * cells / count:.0f} ms per cell, {len(SECOND_MOMENT)} measures each)")


if __name__ == "__main__":
    main()
