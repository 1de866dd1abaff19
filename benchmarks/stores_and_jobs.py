"""Benchmarks (c), (e), (f) and (g) of the performance issue, each against a baseline
measured in the same run.

    python benchmarks/stores_and_jobs.py [--only c,e,f,g] [--n-obs N] [--others K] [--wide-units U]

(c) paper scale read from zarr stores by the embedded cluster, against (a) in memory;
(e) wide layers (n = 4,000, four layers of --wide-units units): the planner's route, its
    time against its own GEMM floor (the four n x n Grams done directly with numpy) and
    the feature route's operation count;
(f) one worker against two on this machine's cores (paper scale, in memory);
(g) one reference against K others in one job, against K separate comparisons.
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
from paper_scale import network  # noqa: E402
from timing import timed  # noqa: E402


def cluster(workers, threads=1):
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=workers, threads_per_worker=threads, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0")
    return local, Client(local)


def bench_c(folder, n_obs, repeat):
    rng = np.random.default_rng(0)
    a, b = network(rng, n_obs), network(rng, n_obs)
    in_memory, _, _ = timed(lambda: rv2dist.similarity(a, b), repeat)
    rv2dist.write_activations(folder / "a.zarr", a, overwrite=True)
    rv2dist.write_activations(folder / "b.zarr", b, overwrite=True)
    local, client = cluster(os.cpu_count() or 1)
    with local, client:
        from_store, _, value = timed(lambda: rv2dist.similarity(folder / "a.zarr", folder / "b.zarr", client=client),
                                     repeat)
    diff = np.max(np.abs(value.values - rv2dist.similarity(a, b).values))
    print(f"(c) in memory (a): {in_memory:.2f} s; from zarr on the embedded cluster: {from_store:.2f} s; "
          f"ratio {from_store / in_memory:.2f}; max diff {diff:.1e}")


def bench_e(n_obs, units, repeat):
    rng = np.random.default_rng(1)
    layers = {f"w{i}": np.maximum(rng.standard_normal((n_obs, units), dtype=np.float32) + 0.2, 0) for i in range(4)}
    chosen = rv2dist.plan(layers)
    feature = rv2dist.plan(layers, route="feature")
    print(chosen)

    def floor():
        for x in layers.values():
            x @ x.T

    floor_time, _, _ = timed(floor, repeat)
    ours, _, _ = timed(lambda: rv2dist.similarity(layers), repeat)
    print(f"(e) n {n_obs:,}, 4 x {units:,} units: route {chosen.route}; {ours:.2f} s against its GEMM floor "
          f"{floor_time:.2f} s (ratio {ours / floor_time:.2f}); feature route would need "
          f"{feature.flops / 1e12:.1f} TFLOP against the gram route's {chosen.flops / 1e12:.2f} "
          f"({feature.flops / chosen.flops:.0f}x)")


def bench_f(n_obs, repeat):
    rng = np.random.default_rng(2)
    a, b = network(rng, n_obs), network(rng, n_obs)
    seconds = {}
    for workers in (1, 2):
        local, client = cluster(workers)
        with local, client:
            seconds[workers], _, _ = timed(lambda: rv2dist.similarity(a, b, client=client), repeat)
    print(f"(f) one worker {seconds[1]:.2f} s, two workers {seconds[2]:.2f} s: speed-up "
          f"{seconds[1] / seconds[2]:.2f} on {os.cpu_count()} cores")


def bench_g(folder, n_obs, others):
    from rv2dist import jobs

    rng = np.random.default_rng(3)
    names = ["standard"] + [f"net{i}" for i in range(others)]
    for name in names:
        rv2dist.write_activations(folder / f"{name}.zarr", network(rng, n_obs), network=name, overwrite=True)
    lines = ["plots = false", "[networks]"] + [f'{n} = "{n}.zarr"' for n in names]
    (folder / "job.toml").write_text("\n".join(lines + ["[[compare]]", 'reference = "standard"']) + "\n")
    local, client = cluster(os.cpu_count() or 1)
    with local, client:
        start = time.perf_counter()
        for other in names[1:]:
            rv2dist.similarity(folder / "standard.zarr", folder / f"{other}.zarr", client=client)
        separate = time.perf_counter() - start
        shutil.rmtree(folder / "results", ignore_errors=True)
        start = time.perf_counter()
        jobs.run_job(jobs.load_job(folder / "job.toml"), client, progress=False, stream=open(os.devnull, "w"))
        one_job = time.perf_counter() - start
    print(f"(g) reference against {others} networks at n {n_obs:,}: one job {one_job:.1f} s (results written), "
          f"{others} separate comparisons {separate:.1f} s; ratio {one_job / separate:.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="c,e,f,g")
    parser.add_argument("--n-obs", type=int, default=23582)
    parser.add_argument("--others", type=int, default=12)
    parser.add_argument("--wide-units", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    which = set(args.only.split(","))
    folder = Path(tempfile.mkdtemp(prefix="rv2dist-bench-"))
    print(f"machine: {os.cpu_count()} cores; stores under {folder}")
    try:
        if "c" in which:
            bench_c(folder, args.n_obs, args.repeat)
        if "e" in which:
            bench_e(4000, args.wide_units, args.repeat)
        if "f" in which:
            bench_f(args.n_obs, args.repeat)
        if "g" in which:
            bench_g(folder, args.n_obs, args.others)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
