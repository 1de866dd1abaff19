"""One-call GPU check: every figure the GPU issue asks for, in one run of a few minutes.

    python benchmarks/gpu_check.py [--out DIR] [--rehearse] [--full-n N]

1. correctness against numpy float64 on fresh random data: every metric, both routes,
   centred and not, CuPy arrays and dask arrays of CuPy chunks; relative error
   ``max |gpu - ref| / max |ref|`` per matrix against 1e-12 (float64 products) and 1e-6
   (float32 products);
2. the card's float64 and float32 GEMM rates, measured now;
3. paper scale (23,582 obs, 2 x 11 layers): time, share of the GEMM rate, a profile;
4. full resolution (943,280 obs, 2 x 11 layers, float32 generated on the device, ~64 GB):
   share of the GEMM rate with float64 and float32 products, all four metrics in one job;
   then the same from host numpy against the host-to-device copy of the same bytes;
5. two workers sharing the GPU (a stand-in for two GPUs), ``--gpus`` (LocalCUDACluster,
   with RMM where installed) and a mixed CPU/GPU cluster with ``GPU`` resources;
6. significance (tests, permutations, bootstrap) and every measure (CCA, SVCCA, PWCCA,
   Procrustes, shape metrics, regression, RSA ...) on the device against numpy float64,
   with the job of every measure timed against RV2 alone.

``--rehearse`` runs the same flow on the CPU (numpy stands in for CuPy, small sizes) so the
script can be tried before a device session.  Prints a summary table last and writes
``gpu_check.json`` and ``gpu_profile.txt`` under ``--out``.
"""

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

# the clusters' INFO lines would bury the figures
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from paper_scale import WIDTHS, draw_weights, forward  # noqa: E402
from timing import timed as _timed  # noqa: E402

METRICS = ["rv2", "rv", "cka", "cka_debiased"]
TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def timed(func, repeat=3):
    """(median seconds, last value): the median resists one slow start."""
    _, median, value = _timed(func, repeat)
    return median, value


def relu_layers(rng, n, widths, dtype, inputs=None):
    """ReLU layers of a random network; networks given the same ``inputs`` are related,
    as two networks shown the same observations are."""
    out, h = {}, rng.standard_normal((n, 16)) if inputs is None else inputs
    for i, w in enumerate(widths):
        h = np.maximum(h @ rng.standard_normal((h.shape[1], w)) / np.sqrt(h.shape[1]) + 0.5
                       + 0.3 * rng.standard_normal((n, w)), 0)
        out[f"l{i}"] = h.astype(dtype)
    return out


def relative_error(got, ref):
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


class Device:
    """CuPy, or numpy standing in for it in a rehearsal."""

    def __init__(self, rehearse):
        if rehearse:
            self.xp, self.name, self.kind = np, "rehearsal on CPU (numpy stands in for CuPy)", "cpu"
            self.sync = lambda: None
            self.free = lambda: gc.collect()
            return
        import cupy

        self.xp, self.kind = cupy, "gpu"
        self.sync = cupy.cuda.Device().synchronize
        props = cupy.cuda.runtime.getDeviceProperties(0)
        self.name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]

        def free():
            gc.collect()
            cupy.get_default_memory_pool().free_all_blocks()

        self.free = free

    def to_host(self, array):
        return array if self.xp is np else array.get()


def correctness(dev, rng):
    """Worst relative error per (input dtype, product dtype) over every metric, route and centring."""
    import dask.array as da

    cases = [(3000, (8, 64, 512), (32, 300)), (400, (2000, 50), (1500,))]
    worst = {}
    for n, wa, wb in cases:
        for dtype in (np.float32, np.float64):
            inputs = rng.standard_normal((n, 16))
            a, b = relu_layers(rng, n, wa, dtype, inputs), relu_layers(rng, n, wb, dtype, inputs)
            ga = {k: dev.xp.asarray(v) for k, v in a.items()}
            gb = {k: dev.xp.asarray(v) for k, v in b.items()}
            # dask arrays of device chunks, as a lazily loaded job would hold them
            dask_a = {k: da.from_array(v, chunks=(n // 3, -1), asarray=False) for k, v in ga.items()}
            for center in (True, False):
                for route in ("feature", "gram"):
                    ref = rv2dist.similarity(a, b, metric=METRICS, center=center, route=route,
                                             precision="float64", device="cpu")
                    for inputs, precision in ((ga, "auto"), (ga, "input"), (dask_a, "float64")):
                        got = rv2dist.similarity(inputs, gb, metric=METRICS, center=center, route=route,
                                                 precision=precision, device=dev.kind)
                        err = max(relative_error(got[m].values, ref[m].values) for m in METRICS)
                        key = f"{np.dtype(dtype).name} input, {got.attrs['precision']} products"
                        worst[key] = max(worst.get(key, 0.0), err)
    return {key: {"relative_error": err, "tolerance": TOLERANCE[key.split(", ")[1].split()[0]],
                  "ok": err <= TOLERANCE[key.split(", ")[1].split()[0]]} for key, err in worst.items()}


def significance(dev, rng, n):
    """Tests, permutations and bootstrap on the device against numpy float64 (worst
    relative difference per added variable), and the cost of tests=True and of 20
    bootstrap replicates against the plain job, at ``n`` observations."""
    a, b = relu_layers(rng, n, (64, 256, 1024), np.float32), relu_layers(rng, n, (128, 512), np.float32)
    options = dict(metric=["rv2", "cka"], tests=True, permutations=5, bootstrap=5, seed=3)
    ref = rv2dist.similarity(a, b, device="cpu", precision="float64", **options)
    ga = {k: dev.xp.asarray(v) for k, v in a.items()}
    gb = {k: dev.xp.asarray(v) for k, v in b.items()}
    got = rv2dist.similarity(ga, gb, device=dev.kind, **options)
    errors = {name: relative_error(got[name].values, ref[name].values) for name in ref.data_vars}
    plain = timed(lambda: rv2dist.similarity(ga, gb, device=dev.kind), 3)[0]
    tested = timed(lambda: rv2dist.similarity(ga, gb, device=dev.kind, tests=True), 3)[0]
    boot = timed(lambda: rv2dist.similarity(ga, gb, device=dev.kind, bootstrap=20), 1)[0]
    return {"worst_relative_difference": max(errors.values()), "by_variable": errors, "plain_s": plain,
            "tests_over_plain": tested / plain, "bootstrap20_over_plain": boot / plain}


def measures(dev, rng, n):
    """Every measure on the device against numpy float64 on the host (the worst relative
    difference per measure), and the job of every measure against RV2 alone, at ``n``."""
    from rv2dist.core.measures import MEASURES

    names = list(MEASURES)
    a, b = relu_layers(rng, n, (64, 256, 1024), np.float32), relu_layers(rng, n, (128, 512), np.float32)
    ref = rv2dist.similarity(a, b, metric=names, device="cpu", precision="float64")
    ga = {k: dev.xp.asarray(v) for k, v in a.items()}
    gb = {k: dev.xp.asarray(v) for k, v in b.items()}
    got = rv2dist.similarity(ga, gb, metric=names, device=dev.kind)
    errors = {name: relative_error(got[name].values, ref[name].values) for name in names}
    every = timed(lambda: rv2dist.similarity(ga, gb, metric=names, device=dev.kind), 3)[0]
    alone = timed(lambda: rv2dist.similarity(ga, gb, metric="rv2", device=dev.kind), 3)[0]
    return {"worst_relative_difference": max(errors.values()), "by_measure": errors, "every_s": every,
            "rv2_s": alone, "every_over_rv2": every / alone}


def gemm_rates(dev, rng, n):
    rates = {}
    for name in ("float64", "float32"):
        x = dev.xp.asarray(rng.standard_normal((n, n)), dtype=name)
        x @ x
        dev.sync()
        seconds, _ = timed(lambda: (x @ x, dev.sync()), repeat=5)
        rates[name] = 2 * n**3 / seconds
    return rates


def network_on_device(dev, rng, n, rows_per_step=2**17):
    """Two ReLU networks of the study's widths, float32, generated on the device in row
    steps (the generation's temporaries stay small)."""
    out = []
    for _ in range(2):
        weights = [dev.xp.asarray(w) for w in draw_weights(rng)]
        layers = {name: dev.xp.empty((n, w), dtype=np.float32) for name, w in zip(_names(), WIDTHS)}
        gen = dev.xp.random.default_rng(int(rng.integers(2**31))) if dev.xp is not np else rng
        for start in range(0, n, rows_per_step):
            stop = min(n, start + rows_per_step)
            h = gen.standard_normal((stop - start, 32), dtype=np.float32)
            for name, value in forward(h, weights).items():
                layers[name][start:stop] = value
        out.append(layers)
    dev.sync()
    return out


def _names():
    return [f"c{i + 1}" if i < 9 else f"fc{i - 8}" for i in range(len(WIDTHS))]


def run_at_scale(dev, a, b, rates, repeat):
    """Time the 11 x 11 RV2 with float64 and float32 products; the share of the GEMM rate."""
    runs, results = {}, {}
    for precision in ("float64", "input"):
        plan = rv2dist.plan(a, b, metric="rv2", precision=precision, device=dev.kind)
        rv2dist.similarity(a, b, metric="rv2", precision=precision, device=dev.kind)
        seconds, result = timed(lambda: rv2dist.similarity(a, b, metric="rv2", precision=precision,
                                                            device=dev.kind), repeat=repeat)
        dtype = plan.compute_dtype
        results[dtype] = result.values
        runs[dtype] = {"seconds": seconds, "flops": plan.flops,
                       "fraction_of_gemm_rate": plan.flops / seconds / rates[dtype], "plan": repr(plan)}
    runs["float32 against float64 products, max abs diff"] = float(np.max(np.abs(results["float32"] - results["float64"])))
    return runs


def paper_scale(dev, rng, n, rates, out):
    a, b = relu_layers(rng, n, WIDTHS, np.float32), relu_layers(rng, n, WIDTHS, np.float32)
    import dask

    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        cpu_seconds, cpu_result = timed(lambda: rv2dist.similarity(a, b, metric="rv2", device="cpu"), repeat=1)
    ga = {k: dev.xp.asarray(v) for k, v in a.items()}
    gb = {k: dev.xp.asarray(v) for k, v in b.items()}
    dev.sync()
    runs = run_at_scale(dev, ga, gb, rates, repeat=10)
    for dtype in ("float64", "float32"):
        runs[dtype]["speedup_vs_device_cpu"] = cpu_seconds / runs[dtype]["seconds"]
    got = rv2dist.similarity(ga, gb, metric="rv2", device=dev.kind)
    runs["max_abs_diff_vs_cpu"] = float(np.max(np.abs(got.values - cpu_result.values)))
    runs["cpu_seconds"], runs["cpu_cores"] = cpu_seconds, os.cpu_count()
    runs["from_host_numpy_seconds"], _ = timed(lambda: rv2dist.similarity(a, b, metric="rv2", device=dev.kind), 3)
    runs["breakdown"] = breakdown(ga, gb, dev, out)
    return runs


def breakdown(a, b, dev, out):
    """Where a paper-scale job's time goes: planning and graph building, the compute,
    and the top functions by own time (single-threaded profile)."""
    import cProfile
    import io
    import pstats

    build, lazy = timed(lambda: rv2dist.similarity(a, b, metric="rv2", device=dev.kind, compute=False), 10)
    compute, _ = timed(lambda: lazy.compute(scheduler="sync"), 10)
    profiler = cProfile.Profile()
    profiler.enable()
    lazy.compute(scheduler="sync")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    with open(os.path.join(out, "gpu_profile.txt"), "w") as f:
        f.write(text.getvalue())
    print(text.getvalue()[-3500:], flush=True)
    return {"plan_and_graph_seconds": build, "compute_seconds_sync_scheduler": compute}


def full_resolution(dev, rng, n, rates):
    report = {"n_obs": n}
    start = time.perf_counter()
    a, b = network_on_device(dev, rng, n)
    report["generation_on_device_seconds"] = time.perf_counter() - start
    report["bytes"] = sum(x.nbytes for x in list(a.values()) + list(b.values()))
    print(f"full resolution: {report['bytes'] / 1e9:.1f} GB generated in {report['generation_on_device_seconds']:.1f} s",
          flush=True)
    report["device_arrays"] = run_at_scale(dev, a, b, rates, repeat=2)
    print(json.dumps(report, indent=1, default=str), flush=True)
    four, job = timed(lambda: rv2dist.similarity(a, b, metric=METRICS, device=dev.kind), repeat=1)
    report["all_four_metrics_seconds"] = four
    report["all_four_metrics_rv2_equals_single"] = bool(np.allclose(job["rv2"].values, rv2dist.similarity(
        a, b, metric="rv2", device=dev.kind).values, rtol=0, atol=1e-12))
    # from host numpy: the same bytes copied in by the job, against a plain copy of them
    host_a = {k: dev.to_host(v) for k, v in a.items()}
    host_b = {k: dev.to_host(v) for k, v in b.items()}
    device_result = rv2dist.similarity(a, b, metric="rv2", device=dev.kind).values
    a = b = None  # frees the device copies before the host run
    dev.free()

    def copy_in():
        for layer in list(host_a.values()) + list(host_b.values()):
            dev.xp.array(layer)
            dev.sync()

    report["host_to_device_copy_seconds"], _ = timed(copy_in, repeat=1)
    dev.free()
    host_seconds, host_result = timed(lambda: rv2dist.similarity(host_a, host_b, metric="rv2", device=dev.kind), 1)
    report["from_host_numpy_seconds"] = host_seconds
    report["from_host_over_copy"] = host_seconds / report["host_to_device_copy_seconds"]
    report["from_host_equals_device_arrays"] = float(np.max(np.abs(host_result.values - device_result)))
    report["plan_from_host"] = repr(rv2dist.plan(host_a, host_b, metric="rv2", device=dev.kind))
    host_a = host_b = None
    dev.free()
    return report


def generated_layers(n):
    import dask.array as da

    return {f"l{i}": da.random.default_rng(i).standard_normal((n, w), chunks=(n // 8, -1)).astype("float32")
            for i, w in enumerate((256, 512, 1024))}


def chunk_tasks_per_worker(stream):
    counts = {}
    for task in stream.data:
        if "rv2dist-chunk" in str(task["key"]):
            counts[task["worker"]] = counts.get(task["worker"], 0) + 1
    return counts


def two_workers(dev, n):
    """Two worker processes sharing the one GPU: both get chunk tasks, and the result is
    the one-worker result."""
    from distributed import Client, LocalCluster, get_task_stream

    layers = generated_layers(n)
    results = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            with get_task_stream(client) as stream:
                results[workers] = rv2dist.similarity(layers, metric="rv2", client=client, device=dev.kind,
                                                      memory_budget=2**30).values
            counts = chunk_tasks_per_worker(stream)
    return {"chunk_tasks_per_worker": list(counts.values()),
            "max_abs_diff_two_vs_one_worker": float(np.max(np.abs(results[2] - results[1])))}


def cuda_cluster(dev, n):
    """``rv2dist --gpus``: dask-cuda's LocalCUDACluster, with an RMM pool where RMM is installed."""
    if dev.kind == "cpu":
        return "skipped in a rehearsal"
    from rv2dist.service.cluster import connect_gpus

    layers = generated_layers(n)
    try:
        with connect_gpus() as client:
            allocator = client.run(_allocator)
            start = time.perf_counter()
            result = rv2dist.similarity(layers, metric="rv2", client=client, device=dev.kind)
            seconds = time.perf_counter() - start
        reference = rv2dist.similarity(layers, metric="rv2", device="cpu", precision="float64")
        return {"seconds": round(seconds, 3), "device": result.attrs["device"], "cupy_allocator": allocator,
                "max_abs_diff_vs_cpu": float(np.max(np.abs(result.values - reference.values)))}
    except Exception as error:
        return f"failed: {type(error).__name__}: {error}"


def _allocator():
    import cupy

    return repr(cupy.cuda.get_allocator())


def mixed_cluster(dev, n):
    """One CPU worker and one worker declaring ``GPU=1``: every rv2dist chunk task runs on
    the GPU worker, and the result equals numpy's."""
    from distributed import Client, Nanny, Scheduler, SpecCluster, get_task_stream

    workers = {"cpu": {"cls": Nanny, "options": {"nthreads": 1}},
               "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}}}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}}
    layers = generated_layers(n)
    try:
        with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
            names = {w["id"]: address for address, w in client.scheduler_info()["workers"].items()}
            with get_task_stream(client) as stream:
                result = rv2dist.similarity(layers, metric="rv2", client=client, device=dev.kind,
                                            memory_budget=2**30)
            counts = chunk_tasks_per_worker(stream)
        reference = rv2dist.similarity(layers, metric="rv2", device="cpu", precision="float64")
        return {"chunk_tasks_on_gpu_worker": counts.get(names["gpu"], 0),
                "chunk_tasks_on_cpu_worker": counts.get(names["cpu"], 0),
                "max_abs_diff_vs_cpu": float(np.max(np.abs(result.values - reference.values)))}
    except Exception as error:
        return f"failed: {type(error).__name__}: {error}"


def step(report, name, check):
    """Run one check; a failure is recorded and the next check still runs."""
    start = time.perf_counter()
    try:
        report[name] = check()
    except Exception as error:
        import traceback

        traceback.print_exc()
        report[name] = f"failed: {type(error).__name__}: {error}"
    print(f"[{time.perf_counter() - start:6.1f} s] {name}: {json.dumps(report[name], default=str)[:2000]}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--full-n", type=int, default=None, help="observations of the full-resolution run")
    parser.add_argument("--skip", default="", help="comma-separated checks to skip")
    args = parser.parse_args()
    dev = Device(args.rehearse)
    n_paper, gemm_n = (2000, 1024) if args.rehearse else (23582, 8192)
    full_n = args.full_n or (20000 if args.rehearse else 943280)
    report = {"card": dev.name, "tf32": os.environ.get("CUPY_TF32", "0"), "date": time.strftime("%Y-%m-%d")}
    print("card:", dev.name, flush=True)
    rng = np.random.default_rng(int(time.time()))
    skip = set(args.skip.split(","))
    step(report, "correctness", lambda: correctness(dev, rng))
    step(report, "gemm_flops_per_s", lambda: gemm_rates(dev, rng, gemm_n))
    rates = report["gemm_flops_per_s"]
    checks = {
        "paper_scale": lambda: paper_scale(dev, rng, n_paper, rates, args.out),
        "full_resolution": lambda: full_resolution(dev, rng, full_n, rates),
        "two_workers": lambda: two_workers(dev, n_paper),
        "mixed_cluster": lambda: mixed_cluster(dev, n_paper),
        "local_cuda_cluster": lambda: cuda_cluster(dev, n_paper),
        "significance": lambda: significance(dev, rng, n_paper),
        "measures": lambda: measures(dev, rng, n_paper),
    }
    for name, check in checks.items():
        if name not in skip:
            step(report, name, check)
            # written after every check: one that hangs loses nothing before it
            with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
                json.dump(report, f, indent=1, default=str)
    summary(report)


def summary(report):
    print("\n| check | value |\n|---|---|")
    print(f"| card | {report['card']} |")
    for key, value in (report["correctness"] if isinstance(report["correctness"], dict) else {}).items():
        print(f"| relative error vs numpy float64, {key} | {value['relative_error']:.1e} "
              f"(tolerance {value['tolerance']:.0e}: {'ok' if value['ok'] else 'FAILED'}) |")
    rates = report["gemm_flops_per_s"]
    for name, rate in rates.items():
        print(f"| measured {name} GEMM | {rate / 1e12:.1f} TFLOP/s |")
    for scale in ("paper_scale", "full_resolution"):
        part = report.get(scale, "skipped")
        if not isinstance(part, dict):
            print(f"| {scale} | {part} |")
            continue
        runs = part if scale == "paper_scale" else part["device_arrays"]
        for dtype in ("float64", "float32"):
            run = runs[dtype]
            print(f"| {scale}, device arrays, {dtype} products | {run['seconds']:.3f} s, "
                  f"{100 * run['fraction_of_gemm_rate']:.0f}% of the {dtype} GEMM rate |")
        if scale == "paper_scale":
            print(f"| paper scale on the device's {part['cpu_cores']} CPU cores | {part['cpu_seconds']:.2f} s |")
            print(f"| paper scale from host numpy | {part['from_host_numpy_seconds']:.3f} s |")
            print(f"| paper scale breakdown | {part['breakdown']} |")
        else:
            print(f"| full resolution generation on the device | {part['generation_on_device_seconds']:.1f} s "
                  f"for {part['bytes'] / 1e9:.1f} GB |")
            print(f"| full resolution, all four metrics in one job | {part['all_four_metrics_seconds']:.2f} s |")
            print(f"| full resolution from host numpy | {part['from_host_numpy_seconds']:.2f} s against a plain "
                  f"copy of {part['host_to_device_copy_seconds']:.2f} s: {part['from_host_over_copy']:.2f}x |")
    for key in ("two_workers", "mixed_cluster", "local_cuda_cluster"):
        print(f"| {key} | {report.get(key, 'skipped')} |")
    part = report.get("measures", "skipped")
    if isinstance(part, dict):
        worst = max(part["by_measure"], key=part["by_measure"].get)
        print(f"| every measure on the device vs numpy float64 | worst {part['worst_relative_difference']:.1e} "
              f"({worst}); every measure {part['every_s']:.3f} s against RV2 alone {part['rv2_s']:.3f} s: "
              f"{part['every_over_rv2']:.2f}x |")
    else:
        print(f"| measures | {part} |")


if __name__ == "__main__":
    main()
