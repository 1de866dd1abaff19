"""Benchmarks (c) to (g) of the performance issue, each against a baseline measured in
the same run.

    python benchmarks/stores_and_jobs.py [--only c,d,e,f,g] [--n-obs N] [--others K]
        [--wide-units U] [--feature-units U] [--out-of-core-obs N] [--worker-memory BYTES]

(c) paper scale read from zarr stores by the embedded cluster, against (a) in memory;
(d) out of core: --out-of-core-obs observations (10x the paper) written to two stores in
    batches, compared by workers limited to --worker-memory each: peak memory per worker
    (sampled) and the BLAS floor of the same products (numpy, in memory, one paper-scale
    block at a time) as a fraction of rv2dist's time;
(e) wide layers (n = 4,000, four layers of --wide-units units): the planner's route, its
    time against its own GEMM floor (the four n x n Grams done directly with numpy) and
    the feature route's operation count; both routes timed at --feature-units, a width
    where the feature route's p x p products fit in memory;
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
from paper_scale import draw_weights, floor_products, forward, network  # noqa: E402
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


def network_batches(seed, n_obs, batch):
    """One network of the paper's widths (weights drawn from ``seed``) on a shared input
    stream, generated ``batch`` rows at a time so that 10x the paper never sits in memory."""
    weights, inputs = draw_weights(np.random.default_rng(seed)), np.random.default_rng(0)
    for start in range(0, n_obs, batch):
        yield forward(inputs.standard_normal((min(batch, n_obs - start), 32)).astype(np.float32), weights)


def worker_peaks(client, stop, peaks, interval=0.25):
    """Sample every worker's resident memory until ``stop`` is set; keep the maxima."""
    import psutil

    def rss():
        return psutil.Process().memory_info().rss

    while not stop.wait(interval):
        for worker, value in client.run(rss).items():
            peaks[worker] = max(peaks.get(worker, 0), value)


def bench_d(folder, n_obs, worker_memory, block=23582, metric="rv2"):
    import threading

    from distributed import Client, LocalCluster

    start = time.perf_counter()
    for seed, name in ((10, "a"), (11, "b")):
        with rv2dist.ActivationWriter(folder / f"{name}.zarr", network=name) as writer:
            for layers in network_batches(seed, n_obs, block):
                writer.append(layers)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"(d) wrote two stores of {n_obs:,} obs ({size / 2**30:.1f} GiB on disk) in {time.perf_counter() - start:.0f} s")
    floor = 0.0
    for part_a, part_b in zip(network_batches(10, n_obs, block), network_batches(11, n_obs, block)):
        floor += timed(floor_products(part_a, part_b), 1)[0]
    workers = os.cpu_count() or 1
    local = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=worker_memory, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0")
    with local, Client(local) as client:
        job_plan = rv2dist.plan(folder / "a.zarr", folder / "b.zarr", client=client)
        print(job_plan)
        before = set(client.scheduler_info()["workers"])
        peaks, stop = {}, threading.Event()
        sampler = threading.Thread(target=worker_peaks, args=(client, stop, peaks))
        sampler.start()
        begin = time.perf_counter()
        try:
            result = rv2dist.similarity(folder / "a.zarr", folder / "b.zarr", client=client, metric=metric)
        finally:
            seconds = time.perf_counter() - begin
            stop.set()
            sampler.join()
        after = set(client.scheduler_info()["workers"])
    rv2 = result if isinstance(metric, str) else result["rv2"]
    peak_text = ", ".join(f"{value / 2**30:.2f} GiB" for value in peaks.values())
    print(f"(d) {n_obs:,} obs from zarr, {workers} workers limited to {worker_memory / 2**30:.2f} GiB each: "
          f"{seconds:.1f} s; peak resident memory per worker {peak_text}; workers replaced: "
          f"{len(before - after)}; BLAS floor (numpy in memory, {block:,}-row blocks) {floor:.1f} s: "
          f"{floor / seconds:.0%} of the floor's speed; RV2 diagonal {np.round(np.diag(rv2.values), 3)}")
    return seconds, floor, job_plan


def bench_e(n_obs, units, feature_units, repeat):
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
    layers.clear()  # frees the wide arrays before the narrow ones are made
    narrow = {f"w{i}": np.maximum(rng.standard_normal((n_obs, feature_units), dtype=np.float32) + 0.2, 0)
              for i in range(4)}
    seconds = {route: timed(lambda: rv2dist.similarity(narrow, route=route), repeat)[0] for route in ("gram", "feature")}
    print(f"(e) at {feature_units:,} units: gram route {seconds['gram']:.2f} s, feature route "
          f"{seconds['feature']:.2f} s (feature / gram {seconds['feature'] / seconds['gram']:.1f}; planner: "
          f"{rv2dist.plan(narrow).route})")


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
    from rv2dist.service import jobfile, runner

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
        runner.run_job(jobfile.load_job(folder / "job.toml"), client, progress=False, stream=open(os.devnull, "w"))
        one_job = time.perf_counter() - start
    print(f"(g) reference against {others} networks at n {n_obs:,}: one job {one_job:.1f} s (results written), "
          f"{others} separate comparisons {separate:.1f} s; ratio {one_job / separate:.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="c,d,e,f,g")
    parser.add_argument("--n-obs", type=int, default=23582)
    parser.add_argument("--others", type=int, default=12)
    parser.add_argument("--wide-units", type=int, default=50_000)
    parser.add_argument("--feature-units", type=int, default=6_250)
    parser.add_argument("--out-of-core-obs", type=int, default=235_820)
    parser.add_argument("--worker-memory", type=int, default=2 * 10**9)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    which = set(args.only.split(","))
    folder = Path(tempfile.mkdtemp(prefix="rv2dist-bench-"))
    print(f"machine: {os.cpu_count()} cores; stores under {folder}")
    try:
        if "c" in which:
            bench_c(folder, args.n_obs, args.repeat)
        if "d" in which:
            bench_d(folder, args.out_of_core_obs, args.worker_memory)
        if "e" in which:
            bench_e(4000, args.wide_units, args.feature_units, args.repeat)
        if "f" in which:
            bench_f(args.n_obs, args.repeat)
        if "g" in which:
            bench_g(folder, args.n_obs, args.others)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
