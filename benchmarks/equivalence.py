"""Bit-for-bit equivalence of rv2dist's matrices across a change of its code.

Runs a fixed set of jobs through the public surface (both routes, centred and not,
float32 and float64, self and cross jobs, arrays and stores, tests, permutations,
bootstrap, every metric) on seeded data, and saves every variable of every result;
``check`` runs them again and compares each array bit for bit with the saved ones.

    python benchmarks/equivalence.py save  before.npz   # on the old code
    python benchmarks/equivalence.py check before.npz   # on the new code

Variables present on one side only are listed, not failed: a change may add outputs.
"""

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import rv2dist

METRICS = ["rv2", "rv", "cka", "cka_debiased", "rv2_null"]


def relu_layers(rng, n, widths, dtype, offset=0.5):
    """Layers shaped like a ReLU network's, with positive means."""
    layers, previous = {}, rng.standard_normal((n, 8))
    for i, width in enumerate(widths):
        weights = rng.standard_normal((previous.shape[1], width)) / np.sqrt(previous.shape[1])
        previous = np.maximum(previous @ weights + offset + 0.3 * rng.standard_normal((n, width)), 0)
        layers[f"l{i}"] = previous.astype(dtype)
    return layers


def cases(folder):
    """``{case name: (a, b, options)}``: the jobs compared."""
    rng = np.random.default_rng(20261204)
    narrow_a = relu_layers(rng, 900, (3, 17, 40, 9), np.float64)
    narrow_b = relu_layers(rng, 900, (12, 5, 33), np.float64)
    single_a = {k: v.astype(np.float32) for k, v in narrow_a.items()}
    single_b = {k: v.astype(np.float32) for k, v in narrow_b.items()}
    wide_a = relu_layers(rng, 150, (400, 90, 300), np.float64)
    wide_b = relu_layers(rng, 150, (250, 500), np.float64)
    store_a, store_b = Path(folder) / "a.zarr", Path(folder) / "b.zarr"
    rv2dist.write_activations(store_a, single_a, chunk_bytes=40 * 4 * 128)
    rv2dist.write_activations(store_b, single_b, chunk_bytes=33 * 4 * 128)
    found = {}
    for center in (True, False):
        for route in ("feature", "gram"):
            for label, (a, b) in {"f64": (narrow_a, narrow_b), "f32": (single_a, single_b),
                                  "wide": (wide_a, wide_b)}.items():
                found[f"{label}-{route}-center{int(center)}"] = (a, b, dict(metric=METRICS, center=center,
                                                                            route=route))
            found[f"self-{route}-center{int(center)}"] = (narrow_a, None, dict(metric=METRICS, center=center,
                                                                               route=route))
    found["stores"] = (store_a, store_b, dict(metric=METRICS))
    found["stores-self"] = (store_a, None, dict(metric=METRICS))
    found["float64-precision"] = (single_a, single_b, dict(metric=METRICS, precision="float64"))
    found["tests-feature"] = (narrow_a, narrow_b, dict(metric=["rv2", "cka", "cka_debiased"], tests=True))
    found["tests-gram"] = (wide_a, wide_b, dict(metric=["rv2", "cka"], tests=True, route="gram"))
    found["tests-uncentred"] = (narrow_a, narrow_b, dict(metric=["rv2", "rv"], tests=True, center=False,
                                                         correction="bh"))
    found["resampling"] = (narrow_a, narrow_b, dict(metric=["rv2", "cka"], permutations=7, bootstrap=9, seed=3))
    found["resampling-self"] = (narrow_a, None, dict(metric=["rv2", "cka"], bootstrap=9, seed=3))
    found["resampling-gram"] = (wide_a, wide_b, dict(metric=["rv2"], permutations=5, bootstrap=5, route="gram"))
    found["single-metric"] = (narrow_a, narrow_b, dict(metric="rv2"))
    found["small-budget"] = (narrow_a, narrow_b, dict(metric=METRICS, memory_budget=200_000))
    return found


def run_all(folder):
    arrays = {}
    for name, (a, b, options) in cases(folder).items():
        result = rv2dist.similarity(a, b, **options)
        variables = {result.name: result} if hasattr(result, "name") and not hasattr(result, "data_vars") else {
            key: result[key] for key in result.data_vars}
        for key, variable in variables.items():
            arrays[f"{name}/{key}"] = np.asarray(variable.values)
        arrays[f"{name}/@layers"] = np.array([str(v) for v in result["layer_a"].values]
                                             + ["|"] + [str(v) for v in result["layer_b"].values])
    rv2dist.release_buffers()
    arrays["rv2/one-pair"] = np.array(rv2dist.rv2(np.arange(40.0).reshape(20, 2) ** 1.5,
                                                  np.sin(np.arange(60.0)).reshape(20, 3)))
    return arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("save", "check"))
    parser.add_argument("file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.FewReplicatesWarning)
        arrays = run_all(folder)
    if args.mode == "save":
        np.savez(args.file, **arrays)
        print(f"saved {len(arrays)} arrays to {args.file}")
        return 0
    saved = dict(np.load(args.file))
    different = [key for key in sorted(set(saved) & set(arrays))
                 if saved[key].shape != arrays[key].shape
                 or not np.array_equal(saved[key], arrays[key], equal_nan=saved[key].dtype.kind == "f")]
    for key in different:
        old, new = saved[key], arrays[key]
        gap = np.nanmax(np.abs(old - new)) if old.shape == new.shape and old.dtype.kind == "f" else "shape/labels"
        print(f"DIFFERENT {key}: largest difference {gap}")
    for key in sorted(set(saved) - set(arrays)):
        print(f"missing now: {key}")
    for key in sorted(set(arrays) - set(saved)):
        print(f"new: {key}")
    same = len(set(saved) & set(arrays)) - len(different)
    print(f"{same} of {len(set(saved) & set(arrays))} arrays in common identical bit for bit")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
