"""The first call and the notebook size: one job in a fresh process, against the BLAS floor.

Two networks of the seed study's 11 widths (64 ... 1024 units, float32) at ``--n-obs``
observations (2,000 by default: a notebook's size), the 11 x 11 cross matrix of
``--metric`` (linear and debiased CKA by default, as benchmarks/peers.py), against the
floor (the same exact products with numpy: the concatenated A'B and each layer's X'X).
Each round starts two fresh Python processes (in alternating order), both importing
rv2dist: one times the job's first call (what a notebook cell meets first), the other
the floor's first call, so that each pays a fresh process's first touch of memory; the
first then times the best of ``--warm`` further calls of each, alternately.

After its timings the job's process also touches 256 MiB it never had and prints the rate: on a
virtual machine whose host backs memory lazily that rate, and with it a first call, varies
from round to round.  Printed per round and as medians over ``--rounds`` rounds: the imports (rv2dist, and
dask.array and xarray, which a job's first call would import; timed apart, as in
benchmarks/peers.py), both first calls and the warm ones, and their ratios.  ``--profile`` prints, for one more fresh process,
where the first call's time goes (cProfile, the entries of most own time).

    python benchmarks/first_call.py [--n-obs 2000] [--rounds 5] [--warm 10] [--profile]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _one_process(n_obs, metrics, warm, profile, floor_first):
    """Runs in the fresh process: its timings as a dict (printed as JSON)."""
    start = time.perf_counter()
    import dask.array  # noqa: F401  (what a job imports on first use, timed apart as benchmarks/peers.py does)
    import xarray  # noqa: F401

    import rv2dist

    imported = time.perf_counter() - start
    import numpy as np

    sys.path.insert(0, HERE)
    from paper_scale import floor_products, network

    rng = np.random.default_rng(0)
    a, b = network(rng, n_obs), network(rng, n_obs)
    floor = floor_products(a, b)

    def job():
        return rv2dist.similarity(a, b, metric=metrics)

    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(job)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(14)
        return {}
    if floor_first:
        return {"first_floor": _seconds(floor)}
    first = _seconds(job)
    warm_job, warm_floor = [], []
    for _ in range(warm):
        warm_floor.append(_seconds(floor))
        warm_job.append(_seconds(job))
    return {"import": imported, "first": first, "warm": min(warm_job), "warm_floor": min(warm_floor),
            "fresh_gib_s": _fresh_memory_rate()}


def _fresh_memory_rate(mib=256):
    """GiB/s at which this process touches memory it never had, after the timings: on a
    virtual machine whose host backs guest memory lazily, a first call's fresh arrays
    can cost far more than the same bytes warm, and the rounds' first calls vary with it."""
    import numpy as np

    start = time.perf_counter()
    np.ones(mib * 2**20 // 4, dtype=np.float32)
    return mib / 1024 / (time.perf_counter() - start)


def _seconds(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _process(args, floor_first=False):
    command = [sys.executable, __file__, "--n-obs", str(args.n_obs), "--warm", str(args.warm),
               "--metric", *args.metric, "--child"] + (["--profile"] if args.profile else [])
    done = subprocess.run(command + (["--floor-first"] if floor_first else []), capture_output=True, text=True,
                          check=True)
    if args.profile:
        print(done.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _round(args, index):
    order = (False, True) if index % 2 == 0 else (True, False)
    got = {}
    for floor_first in order:
        got.update(_process(args, floor_first))
    return got


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-obs", type=int, default=2000)
    parser.add_argument("--metric", nargs="+", default=["cka", "cka_debiased"])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes")
    parser.add_argument("--warm", type=int, default=10, help="warm calls of each side per process")
    parser.add_argument("--profile", action="store_true", help="where one first call's time goes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one_process(args.n_obs, args.metric, args.warm, args.profile, args.floor_first)))
        return
    if args.profile:
        _process(args)
        return
    print(f"machine: {os.cpu_count()} cores; n_obs {args.n_obs:,}; metric {', '.join(args.metric)}; "
          f"{args.rounds} fresh processes")
    rounds = []
    for index in range(args.rounds):
        got = _round(args, index)
        rounds.append(got)
        print(f"round {index + 1}: import {got['import']:.2f} s; first call {got['first']:.3f} s against the "
              f"floor's {got['first_floor']:.3f} s ({got['first'] / got['first_floor']:.2f}x); warm "
              f"{got['warm']:.3f} s against {got['warm_floor']:.3f} s ({got['warm'] / got['warm_floor']:.2f}x); "
              f"fresh memory then touched at {got['fresh_gib_s']:.1f} GiB/s")
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    first_ratio = statistics.median(r["first"] / r["first_floor"] for r in rounds)
    warm_ratio = statistics.median(r["warm"] / r["warm_floor"] for r in rounds)
    print(f"medians: import {median['import']:.2f} s; first call {median['first']:.3f} s, floor "
          f"{median['first_floor']:.3f} s: {first_ratio:.2f}x (goal <= 1.3); warm {median['warm']:.3f} s, floor "
          f"{median['warm_floor']:.3f} s: {warm_ratio:.2f}x (goal <= 1.1)")


if __name__ == "__main__":
    main()
