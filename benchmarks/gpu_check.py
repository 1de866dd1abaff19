"""One-call GPU check: correctness against numpy float64, paper-scale timing against the
device machine's own CPUs and against the card's measured GEMM rate, and whether two
workers sharing the GPU both get work.

    python benchmarks/gpu_check.py [--out DIR] [--rehearse]

``--rehearse`` runs the same flow on the CPU (numpy in place of CuPy, small sizes) so the
script can be tried before a device session.  Prints a summary table last and writes
``gpu_check.json`` under ``--out``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from timing import timed as _timed  # noqa: E402

PAPER_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 1024, 1024)
METRICS = ["rv2", "rv", "cka", "cka_debiased"]


def timed(func, repeat=3):
    """(median seconds, last value): the median resists one slow start."""
    _, median, value = _timed(func, repeat)
    return median, value


def relu_layers(rng, n, widths, dtype):
    out, h = {}, rng.standard_normal((n, 16))
    for i, w in enumerate(widths):
        h = np.maximum(h @ rng.standard_normal((h.shape[1], w)) / np.sqrt(h.shape[1]) + 0.5
                       + 0.3 * rng.standard_normal((n, w)), 0)
        out[f"l{i}"] = h.astype(dtype)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--rehearse", action="store_true")
    args = parser.parse_args()
    report = {}
    if args.rehearse:
        xp, sync = np, (lambda: None)
        report["card"] = "rehearsal on CPU (numpy stands in for CuPy)"
        n_paper, gemm_n = 2000, 1024
    else:
        import cupy as xp

        sync = xp.cuda.Device().synchronize
        props = xp.cuda.runtime.getDeviceProperties(0)
        report["card"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        report["tf32"] = os.environ.get("CUPY_TF32", "0")
        n_paper, gemm_n = 23582, 8192
    device = "cpu" if args.rehearse else "gpu"
    print("card:", report["card"], flush=True)

    # 1. correctness on fresh random data, every metric, both routes, both dtypes
    rng = np.random.default_rng(int(time.time()))
    cases = [(3000, (8, 64, 512), (32, 300)), (400, (2000, 50), (1500,))]
    worst = {}
    for n, wa, wb in cases:
        for dtype in (np.float32, np.float64):
            a, b = relu_layers(rng, n, wa, dtype), relu_layers(rng, n, wb, dtype)
            for center in (True, False):
                for route in ("feature", "gram"):
                    ref = rv2dist.similarity(a, b, metric=METRICS, center=center, route=route,
                                             precision="float64", device="cpu")
                    ga = {k: xp.asarray(v) for k, v in a.items()}
                    gb = {k: xp.asarray(v) for k, v in b.items()}
                    for precision in ("auto", "input"):
                        got = rv2dist.similarity(ga, gb, metric=METRICS, center=center, route=route,
                                                 precision=precision, device=device)
                        err = max(float(np.max(np.abs(got[m].values - ref[m].values))) for m in METRICS)
                        key = f"{np.dtype(dtype).name} input, {got.attrs['precision']} products"
                        worst[key] = max(worst.get(key, 0.0), err)
    report["max_abs_error_vs_numpy_float64"] = worst
    print("max |gpu - numpy float64|:", worst, flush=True)

    # 2. the card's GEMM rates, measured now
    rates = {}
    for name in ("float64", "float32"):
        x = xp.asarray(rng.standard_normal((gemm_n, gemm_n)), dtype=name)
        x @ x
        sync()
        seconds, _ = timed(lambda: (x @ x, sync()), repeat=5)
        rates[name] = 2 * gemm_n**3 / seconds
    report["gemm_flops_per_s"] = rates
    print("GEMM TFLOP/s:", {k: round(v / 1e12, 1) for k, v in rates.items()}, flush=True)

    # 3. paper scale: 11 x 11 cross RV2, float32 activations
    a = relu_layers(rng, n_paper, PAPER_WIDTHS, np.float32)
    b = relu_layers(rng, n_paper, PAPER_WIDTHS, np.float32)
    import dask

    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        cpu_seconds, cpu_result = timed(lambda: rv2dist.similarity(a, b, metric="rv2", device="cpu"), repeat=1)
        cat_a, cat_b = np.hstack(list(a.values())), np.hstack(list(b.values()))
        floor_seconds, _ = timed(lambda: (cat_a.T @ cat_b, [x.T @ x for x in list(a.values()) + list(b.values())]), repeat=1)
        ga = {k: xp.asarray(v) for k, v in a.items()}
        gb = {k: xp.asarray(v) for k, v in b.items()}
        sync()
        runs = {}
        for precision in ("float64", "input"):
            plan = rv2dist.plan(ga, gb, metric="rv2", precision=precision, device=device)
            rv2dist.similarity(ga, gb, metric="rv2", precision=precision, device=device)
            seconds, result = timed(lambda: rv2dist.similarity(ga, gb, metric="rv2", precision=precision,
                                                                device=device))
            build_seconds, lazy = timed(lambda: rv2dist.similarity(ga, gb, metric="rv2", precision=precision,
                                                                   device=device, compute=False))
            compute_seconds, _ = timed(lambda: lazy.compute(scheduler="threads"))
            if precision == "float64":
                profile_compute(lazy, args.out)
            rate = rates[plan.compute_dtype]
            runs[plan.compute_dtype] = {
                "seconds": seconds,
                "graph_build_seconds": build_seconds,
                "compute_seconds": compute_seconds,
                "flops": plan.flops,
                "fraction_of_gemm_rate": plan.flops / seconds / rate,
                "speedup_vs_device_cpu": cpu_seconds / seconds,
                "max_abs_diff_vs_cpu": float(np.max(np.abs(result.values - cpu_result.values))),
                "plan": repr(plan),
            }
        host_seconds, _ = timed(lambda: rv2dist.similarity(a, b, metric="rv2", device=device), repeat=2)
    report["paper_scale"] = {
        "n_obs": n_paper, "cpu_cores": os.cpu_count(), "cpu_seconds": cpu_seconds,
        "cpu_blas_floor_seconds": floor_seconds, "gpu": runs,
        "gpu_from_host_arrays_seconds": host_seconds,
    }
    print(json.dumps(report["paper_scale"], indent=1, default=str), flush=True)

    # 4. two workers sharing the one GPU: do both get product tasks?
    report["two_workers"] = two_workers(device, n_paper)
    print("two workers:", report["two_workers"], flush=True)

    # 5. the --gpus path: dask-cuda's LocalCUDACluster, one worker per GPU
    report["local_cuda_cluster"] = cuda_cluster_check(device, n_paper) if not args.rehearse else "skipped"
    print("LocalCUDACluster:", report["local_cuda_cluster"], flush=True)

    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print("\n| check | value |\n|---|---|")
    print(f"| card | {report['card']} |")
    for key, err in worst.items():
        print(f"| max abs error vs numpy float64, {key} | {err:.2e} |")
    for name, rate in rates.items():
        print(f"| measured {name} GEMM | {rate / 1e12:.1f} TFLOP/s |")
    ps = report["paper_scale"]
    print(f"| paper scale on {ps['cpu_cores']} CPU cores | {ps['cpu_seconds']:.2f} s (BLAS floor {ps['cpu_blas_floor_seconds']:.2f} s) |")
    for dtype, run in runs.items():
        print(f"| paper scale GPU, {dtype} products | {run['seconds']:.3f} s, {run['speedup_vs_device_cpu']:.1f}x CPU,"
              f" {100 * run['fraction_of_gemm_rate']:.0f}% of {dtype} GEMM rate |")
    print(f"| paper scale GPU from host numpy (transfers included) | {ps['gpu_from_host_arrays_seconds']:.3f} s |")
    print(f"| two workers on one GPU: chunk tasks per worker | {report['two_workers']} |")
    print(f"| rv2dist --gpus (LocalCUDACluster) | {report['local_cuda_cluster']} |")


def cuda_cluster_check(device, n):
    from rv2dist.cluster import connect

    layers = generated_layers(n)
    try:
        with connect(gpus=True) as client:
            start = time.perf_counter()
            result = rv2dist.similarity(layers, metric="rv2", client=client, device=device)
            seconds = time.perf_counter() - start
        reference = rv2dist.similarity(layers, metric="rv2", device="cpu", precision="float64")
        return {"seconds": round(seconds, 3),
                "max_abs_diff_vs_cpu": float(np.max(np.abs(result.values - reference.values)))}
    except Exception as error:
        return f"failed: {type(error).__name__}: {error}"


def profile_compute(lazy, out):
    """Where the compute time goes: the top functions by own time, single-threaded."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    lazy.compute(scheduler="sync")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    with open(os.path.join(out, "gpu_profile.txt"), "w") as f:
        f.write(text.getvalue())
    print(text.getvalue()[-3000:], flush=True)


def generated_layers(n):
    import dask.array as da

    return {f"l{i}": da.random.default_rng(i).standard_normal((n, w), chunks=(n // 8, -1)).astype("float32")
            for i, w in enumerate((256, 512, 1024))}


def two_workers(device, n):
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        layers = generated_layers(n)
        with get_task_stream(client) as stream:
            rv2dist.similarity(layers, metric="rv2", client=client, device=device, memory_budget=2**30)
        counts = {}
        for task in stream.data:
            if "rv2dist-chunk" in str(task["key"]):
                counts[task["worker"]] = counts.get(task["worker"], 0) + 1
        return counts


if __name__ == "__main__":
    main()
