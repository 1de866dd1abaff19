"""What checking every chunk against its checksum costs, at paper scale, from stores.

Two stores of the seed study's shape (23,582 observations, 11 layers of 64 ... 1,024
float32 units) are read with the checks on (as rv2dist always reads) and off (the check
replaced by nothing: the same reads and decoding without the CRC-32C), alternately,
``R`` times each:

- (read) every stored chunk of both stores decoded into buffers, as the tasks of a job do
  (one thread; the pure cost of reading);
- (job) ``rv2dist.similarity(a, b)`` from the stores on local threads (reads and products).

    python benchmarks/chunk_checks.py [--n-obs N] [--repeat R] [--folder DIR]

Printed: the median seconds of each arm, the ratio of medians (checks on / off) and the
median of the ratios of each alternating pair.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import rv2dist  # noqa: E402
from paper_scale import network  # noqa: E402
from rv2dist.engine.buffers import KEPT_BUFFERS  # noqa: E402
from rv2dist.io.chunks import StoredLayer, stored_rows  # noqa: E402
from rv2dist.io.reader import open_activations  # noqa: E402
from rv2dist.io.schema import layer_arrays  # noqa: E402


def read_every_chunk(paths):
    """Read every stored row chunk of every layer of ``paths``, as a job's tasks do."""
    for path in paths:
        dataset = open_activations(path)
        for _, array in layer_arrays(dataset):
            for rows in stored_rows(array, array.chunks[0]):
                out = KEPT_BUFFERS.lend(rows.shape, rows.dtype)
                rows.read_into(out, KEPT_BUFFERS)
                KEPT_BUFFERS.give_back(out)


def alternate(work, repeat):
    """Seconds of ``work()`` with the checks on and off, alternately, ``repeat`` times each."""
    check = StoredLayer._verify
    seconds = {"on": [], "off": []}
    work()  # warm: imports, kept buffers, page cache
    for _ in range(repeat):
        for arm in ("on", "off"):
            StoredLayer._verify = check if arm == "on" else (lambda *args: None)
            try:
                start = time.perf_counter()
                work()
                seconds[arm].append(time.perf_counter() - start)
            finally:
                StoredLayer._verify = check
    return seconds


def report(label, seconds):
    on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
    pairs = statistics.median(a / b for a, b in zip(seconds["on"], seconds["off"]))
    print(f"({label}) checks on {on:.3f} s, off {off:.3f} s (medians of {len(seconds['on'])}): "
          f"ratio {on / off:.3f}; median of paired ratios {pairs:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-obs", type=int, default=23582)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--folder", help="where to write the two stores (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        rng = np.random.default_rng(0)
        paths = [Path(folder) / "a.zarr", Path(folder) / "b.zarr"]
        for path in paths:
            rv2dist.write_activations(path, network(rng, args.n_obs))
        size = sum(f.stat().st_size for path in paths for f in path.rglob("*") if f.is_file())
        print(f"two stores of {args.n_obs:,} observations, {size / 2**20:.0f} MiB on disk together")
        report("read", alternate(lambda: read_every_chunk(paths), args.repeat))
        report("job", alternate(lambda: rv2dist.similarity(*paths), args.repeat))
        rv2dist.release_buffers()


if __name__ == "__main__":
    main()
