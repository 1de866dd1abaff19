"""Benchmark (h): the seed study's data without its 40x downsampling.

943,280 observations, two networks of the study's 11 layer widths (64 ... 1024), float32,
the 11 x 11 cross matrices of RV2, RV, CKA and debiased CKA in one job, in two ways:

(h1) from two activation stores written by rv2dist's own writer (about 16 GB of float32
per network), compared on a local cluster laid out as the embedded one (one worker per
core, one thread each) with --worker-memory per worker: wall time, the BLAS floor of the
same products, peak resident memory per worker and whether any worker was replaced
(stores_and_jobs.py's (d) at this size); the stores go under --folder (default: a
temporary folder), which needs about 40 GB free, and are removed afterwards.

(h2) from lazily generated dask arrays.  Each network is a dask array per layer whose row
blocks (23,582 rows) are computed on demand by a fixed random ReLU network, so nothing of
the 32 GB is ever held at once.  Three timings in one run:

- generation alone (every block of both networks made and dropped);
- rv2dist on the lazy arrays (generation included);
- the BLAS floor: the same blocks made again, and for each the concatenated A'B plus each
  layer's X'X with numpy, only the products timed.

The ratio reported is (rv2dist - generation) / floor.

Each part ends with a projection to a cluster of 4 nodes like this machine: the row
chunks' products spread over 4 times the workers, plus the partial sums of every row
chunk (its products in the compute dtype, or float64 sums for a chunk longer than one
sub-block) sent once over a 10 Gb/s link per node (an upper bound: the tree sums mostly
combine partials where they were made).  A model, printed as such, not a measurement.

    python benchmarks/full_resolution.py [--part h1,h2] [--n-obs N] [--block ROWS]
        [--folder DIR] [--worker-memory BYTES]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from paper_scale import WIDTHS, draw_weights, floor_products, forward  # noqa: E402
from stores_and_jobs import bench_d  # noqa: E402

NODES = 4
# all four metrics come from the same centred sums: one job, the cost of RV2 alone
METRICS = ("rv2", "rv", "cka", "cka_debiased")
LINK_BYTES_PER_S = 10e9 / 8


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


def projection(seconds, job_plan):
    """Projected wall time on NODES nodes like this one (see the module's docstring)."""
    entries = sum((p.row_range[1] - p.row_range[0]) * (p.col_range[1] - p.col_range[0]) for p in job_plan.products)
    # a chunk of one sub-block sends its products in the compute dtype, a longer one float64 sums
    compute_bytes = np.dtype(job_plan.compute_dtype).itemsize
    sent = sum(entries * (compute_bytes if rows <= job_plan.sub_rows else 8) for rows in job_plan.row_chunks)
    moved = sent / (NODES * LINK_BYTES_PER_S)
    print(f"projection (a model, not measured) to {NODES} nodes like this machine: {seconds:.0f} s / {NODES} "
          f"+ at most {moved:.1f} s moving {len(job_plan.row_chunks)} partial sums, {sent / 2**30:.1f} GiB in all "
          f"= {seconds / NODES + moved:.0f} s")


def h1(n, block, folder, worker_memory):
    made = folder is None
    folder = Path(tempfile.mkdtemp(prefix="rv2dist-h1-") if made else folder)
    try:
        seconds, floor, job_plan = bench_d(folder, n, worker_memory, block, metric=list(METRICS))
    finally:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"(h1) ratio rv2dist / floor: {seconds / floor:.2f} ({floor / seconds:.0%} of the floor's speed; "
          f"target >= 60 %)")
    projection(seconds, job_plan)


def h2(n, block):
    weights = [draw_weights(np.random.default_rng(seed)) for seed in (1, 2)]
    starts = list(range(0, n, block))

    begin = time.perf_counter()
    for start in starts:
        for w in weights:
            block_layers(w, start, min(n, start + block))
    generation = time.perf_counter() - begin

    a, b = (lazy_network(w, n, block) for w in weights)
    job_plan = rv2dist.plan(a, b)
    print(job_plan)
    begin = time.perf_counter()
    result = rv2dist.similarity(a, b, metric=list(METRICS))["rv2"]
    ours = time.perf_counter() - begin

    floor = 0.0
    for start in starts:
        stop = min(n, start + block)
        products = floor_products(block_layers(weights[0], start, stop), block_layers(weights[1], start, stop))
        begin = time.perf_counter()
        products()
        floor += time.perf_counter() - begin

    print(f"n_obs {n:,} in blocks of {block:,}")
    print(f"generation alone {generation:.1f} s; rv2dist (generation included) {ours:.1f} s; "
          f"BLAS floor {floor:.1f} s")
    print(f"(h2) ratio (rv2dist - generation) / floor: {(ours - generation) / floor:.2f}   target <= 1.3")
    print(f"RV2 diagonal: {np.round(np.diag(result.values), 3)}")
    projection(ours - generation, job_plan)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="h1,h2")
    parser.add_argument("--n-obs", type=int, default=943280)
    parser.add_argument("--block", type=int, default=23582)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--worker-memory", type=int, default=2 * 10**9)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    if "h1" in args.part.split(","):
        h1(args.n_obs, args.block, args.folder, args.worker_memory)
    if "h2" in args.part.split(","):
        h2(args.n_obs, args.block)


if __name__ == "__main__":
    main()
