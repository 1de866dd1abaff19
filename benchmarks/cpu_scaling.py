"""Strong scaling on CPU cores: one job from two stores on a real ``dask scheduler`` with
1, 2, 4, 8 ... ``dask worker`` processes, against one worker, and the same job on the
embedded cluster.

Two networks of the seed study's 11 widths (as paper_scale.py), ``--n-obs`` observations
(four times the paper scale by default; 943,280 is the study at full resolution, about
32 GB of stores), written once into ``--folder`` as activation stores.  For each count in
``--workers``: a scheduler and that many single-threaded workers (each a process with a
nanny, as ``dask worker --nworkers N --nthreads 1`` starts them), the job (11 x 11 cross
RV2) timed twice, the second kept; then every process is stopped.  Printed: seconds,
speed-up and strong-scaling efficiency ``T(1) / (N T(N))`` per count, the in-memory BLAS
floor of the same products (numpy, every core) and the embedded cluster's time; written:
a figure (``--figure``).  The issue's goal: at least 75 % efficiency at 8 workers.

    python benchmarks/cpu_scaling.py [--workers 1 2 4 8] [--n-obs 94328] [--folder DIR]
        [--figure benchmarks/cpu_scaling.png]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rv2dist  # noqa: E402
from paper_scale import floor_products, network  # noqa: E402


def write_stores(folder, n_obs):
    """The two stores at ``folder`` (written unless there with ``n_obs`` rows), and the
    two networks in memory."""
    paths = [folder / f"{name}.zarr" for name in ("a", "b")]
    rng = np.random.default_rng(0)
    networks = []
    for path in paths:
        networks.append(network(rng, n_obs))
        if not (path.exists() and rv2dist.open_activations(path).sizes["obs"] == n_obs):
            rv2dist.write_activations(path, networks[-1], network=path.stem, overwrite=True)
    return paths, networks


def _wait_for_file(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


def time_on_workers(paths, workers, folder):
    """Seconds of the second of two runs of the job on a fresh scheduler and ``workers``
    single-threaded worker processes."""
    from distributed import Client

    scheduler_file = folder / f"scheduler-{workers}.json"
    scheduler_file.unlink(missing_ok=True)
    # what `dask scheduler` and `dask worker` run, without needing their scripts on PATH
    # (packages installed with pip --target, as on the device machine, have none there)
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file",
                                   str(scheduler_file), "--port", "0", "--dashboard-address", ":0"],
                                  stderr=subprocess.DEVNULL)]
    try:
        _wait_for_file(scheduler_file)
        processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                           str(scheduler_file), "--nworkers", str(workers), "--nthreads", "1"],
                                          stderr=subprocess.DEVNULL))
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(workers, timeout=120)
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                rv2dist.similarity(*map(str, paths), client=client, progress=False)
                seconds.append(time.perf_counter() - start)
        return seconds[-1]
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)


def time_embedded(paths):
    from rv2dist.service.cluster import connect

    with connect() as client:
        rv2dist.similarity(*map(str, paths), client=client, progress=False)
        start = time.perf_counter()
        rv2dist.similarity(*map(str, paths), client=client, progress=False)
        return time.perf_counter() - start, len(client.scheduler_info()["workers"])


def figure(path, counts, seconds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(counts, seconds, "o-", label="rv2dist")
    left.plot(counts, [seconds[0] / c for c in counts], "--", color="grey", label="ideal")
    left.set(xscale="log", yscale="log", xlabel="worker processes (1 thread each)", ylabel="seconds")
    left.legend()
    right.plot(counts, [100 * seconds[0] / (c * s) for c, s in zip(counts, seconds)], "o-")
    right.axhline(75, color="grey", linestyle="--")
    right.set(xscale="log", xlabel="worker processes", ylabel="strong-scaling efficiency (%)", ylim=(0, 110))
    for axes in (left, right):
        axes.set_xticks(counts, [str(c) for c in counts])
        axes.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--n-obs", type=int, default=4 * 23582)
    parser.add_argument("--folder", help="where the stores are written (default: a temporary folder)")
    parser.add_argument("--figure", default=None, help="PNG to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        paths, networks = write_stores(folder, args.n_obs)
        floor = floor_products(*networks)
        floor()
        start = time.perf_counter()
        floor()
        floor_seconds = time.perf_counter() - start
        del networks, floor
        print(f"machine: {os.cpu_count()} cores; n_obs {args.n_obs:,}; BLAS floor in memory, every core: "
              f"{floor_seconds:.2f} s")
        seconds = [time_on_workers(paths, count, folder) for count in args.workers]
        for count, value in zip(args.workers, seconds):
            print(f"{count:3d} workers: {value:8.2f} s  speed-up {seconds[0] / value:5.2f}  "
                  f"efficiency {100 * seconds[0] / (count * value):5.1f} %")
        embedded, workers = time_embedded(paths)
        print(f"embedded cluster ({workers} workers): {embedded:.2f} s")
    if args.figure:
        figure(args.figure, args.workers, seconds)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
