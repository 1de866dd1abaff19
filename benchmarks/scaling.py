"""Scaling figure: time against the number of observations and against layer width, for
rv2dist and the BLAS floor of the same products, measured in one run.

    python benchmarks/scaling.py [--max-n N] [--max-width W] [--out benchmarks/scaling.png]

Against n: two networks of the seed study's 11 layer widths (64 ... 1024), float32, in
memory, the 11 x 11 cross RV2 matrix; the floor is the concatenated A'B plus each
layer's X'X with numpy (benchmarks/paper_scale.py).  Against width: n = 4,000, four layers
of equal width, a network against itself; two floors, the feature route's products (the
concatenated X'X, while it fits in memory) and the gram route's n x n Grams, so that the
planner's switch between the routes shows.  Prints a table and writes the figure.
"""

import argparse
import gc
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from paper_scale import floor_products, network  # noqa: E402
from timing import timed  # noqa: E402

STUDY_N = 23582
N_POINTS = (2000, 5896, 23582, 58955, 117910, 235820, 943280)
WIDTHS = (64, 256, 1024, 4096, 16384, 50000)
FEATURE_FLOOR_MAX = 16384  # the concatenated X'X of four wider layers passes 16 GB


def against_n(max_n, repeat):
    rows = []
    for n in [n for n in N_POINTS if n <= max_n]:
        rng = np.random.default_rng(n)
        a, b = network(rng, n), network(rng, n)
        rv2dist.similarity(a, b)  # first call: imports, thread pools
        floor = timed(floor_products(a, b), repeat)[0]
        ours = timed(lambda: rv2dist.similarity(a, b), repeat)[0]
        rows.append((n, ours, floor))
        print(f"  n {n:>9,}  rv2dist {ours:8.2f} s  floor {floor:8.2f} s  ratio {ours / floor:5.2f}", flush=True)
        del a, b
        gc.collect()
    return rows


def against_width(max_width, n, repeat):
    rows = []
    for width in [w for w in WIDTHS if w <= max_width]:
        rng = np.random.default_rng(width)
        layers = {f"w{i}": np.maximum(rng.standard_normal((n, width), dtype=np.float32) + 0.2, 0) for i in range(4)}
        route = rv2dist.plan(layers).route
        ours = timed(lambda: rv2dist.similarity(layers), repeat)[0]

        def gram_floor():
            for x in layers.values():
                x @ x.T

        gram = timed(gram_floor, repeat)[0]
        feature = None
        if 4 * width <= FEATURE_FLOOR_MAX:
            everything = np.hstack(list(layers.values()))
            feature = timed(lambda: everything.T @ everything, repeat)[0]
            del everything
        rows.append((width, route, ours, feature, gram))
        best = min(f for f in (feature, gram) if f is not None)
        print(f"  width {width:>6,}  route {route:7s}  rv2dist {ours:7.2f} s  feature floor "
              f"{'-' if feature is None else f'{feature:.2f} s':>9}  gram floor {gram:7.2f} s  "
              f"ratio to the lower floor {ours / best:5.2f}", flush=True)
        layers.clear()
        gc.collect()
    return rows


def figure(n_rows, width_rows, n_width, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    ns = [r[0] for r in n_rows]
    left.loglog(ns, [r[1] for r in n_rows], "o-", label="rv2dist")
    left.loglog(ns, [r[2] for r in n_rows], "s--", label="BLAS floor (same products)")
    if ns:
        slope = n_rows[-1][1] / ns[-1]
        left.loglog(ns, [slope * n for n in ns], ":", color="grey", label="linear in n")
        left.axvline(STUDY_N, color="grey", lw=0.5)
        left.text(STUDY_N, left.get_ylim()[1], " seed study", va="top", fontsize=8)
    left.set(xlabel="observations n", ylabel="seconds", title="2 x 11 layers (64...1024), 11 x 11 cross RV2")
    left.legend(fontsize=8)
    widths = [r[0] for r in width_rows]
    right.loglog(widths, [r[2] for r in width_rows], "o-", label="rv2dist (planner's route)")
    feature = [(r[0], r[3]) for r in width_rows if r[3] is not None]
    right.loglog([w for w, _ in feature], [t for _, t in feature], "s--", label="feature floor (X'X)")
    right.loglog(widths, [r[4] for r in width_rows], "^--", label="gram floor (n x n Grams)")
    for width, route, seconds, _, _ in width_rows:
        right.annotate(route, (width, seconds), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
    right.set(xlabel="units per layer", ylabel="seconds", title=f"n = {n_width:,}, 4 layers, a network against itself")
    right.legend(fontsize=8)
    fig.savefig(path, dpi=150)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-n", type=int, default=235820, help="largest n (in memory: 2 x 16 GB at 943,280)")
    parser.add_argument("--max-width", type=int, default=50000)
    parser.add_argument("--width-n", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "scaling.png"))
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores\nagainst n:")
    n_rows = against_n(args.max_n, args.repeat)
    print("against width:")
    width_rows = against_width(args.max_width, args.width_n, args.repeat)
    figure(n_rows, width_rows, args.width_n, args.out)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
