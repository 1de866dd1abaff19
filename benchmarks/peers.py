"""Benchmark against the libraries a user would pick instead, on the same data in one run.

Two networks of the seed study's 11 widths (64 ... 1024 units, float32, as in
paper_scale.py), the 11 x 11 cross matrix of linear CKA and debiased CKA, at each
``--n-obs``.  Every tool runs in a fresh process of its own, watched from here: its
time (imports and data generation excluded), its peak resident memory (VmHWM; the
2 x n x 4,224 float32 inputs included), and the worst difference of its matrix from a
float64 reference computed here in feature space (checked against tests/reference.py's
dense n x n formulas at the smallest n).  A tool that passes ``--memory-cap`` GB or ``--time-cap`` seconds is
stopped and reported infeasible, with what it reached.

Tools (those on PyPI), installed into a folder of their own so that the project's packages
(torch included) stay as they are, and named with ``--peers DIR``::

    pip install --target DIR --no-deps pytorch-cka ckatorch cka-pytorch torch-cka repsim \
        rsatoolbox safetensors lightning lightning-utilities torchmetrics scikit-image \
        seaborn imageio tifffile lazy-loader

(their other dependencies are in the project's ``[test]`` environment plus torch).
rv2dist itself runs without ``DIR`` on the path.

- rv2dist: ``similarity(a, b, metric=["cka", "cka_debiased"])``, exact, in memory;
- pytorch-cka: ``cka_from_features`` (full n x n Grams, debiased) and ``compute_cka``
  over a DataLoader (minibatch HSIC-1 of ``--batch`` rows, an estimate);
- ckatorch: ``cka_base`` per layer pair (full float64 Grams; linear and debiased);
- cka-pytorch: ``CKACalculator`` over a DataLoader (minibatch, one epoch);
- torch-cka: ``CKA.compare`` over a DataLoader (minibatch);
- repsim: ``cka(kernel_type="linear", estimator="gretton")`` over all 22 layers (full Grams);
- rsatoolbox: offers no CKA; timed for its nearest analysis (Euclidean RDMs compared
  by cosine), with no difference reported.

The model-level tools see the activations through a replay model whose forward pass
hands each layer's stored rows to an identity module (their hooks' way in); the batch
index is the model's input.  Also timed here: the float32 A'B of the concatenated layers
with numpy's BLAS and with torch's, to say which one the BLAS floor should use, and the
floor of all the exact products, printed with their operation count beside a minibatch
estimator's at each ``--batch`` (the estimator skips the cross-batch pairs: about
``2 n m (P_a + P_b)`` operations for batches of ``m`` rows against the exact ``2 n P_a P_b``).

    python benchmarks/peers.py [--n-obs 2000 23582] [--peers DIR] [--batch 256 ...]
        [--memory-cap 16] [--time-cap 900]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from paper_scale import floor_products, network  # noqa: E402

# each tool's modules, imported before its clock starts
MODULES = {
    "rv2dist": ["rv2dist", "dask.array", "xarray"],
    "pytorch-cka full": ["torch", "cka"],
    "pytorch-cka minibatch": ["torch", "cka"],
    "ckatorch": ["torch", "ckatorch.core"],
    "cka-pytorch": ["torch", "cka_pytorch.cka"],
    "torch-cka": ["torch", "torch_cka"],
    "repsim": ["repsim"],
    "rsatoolbox": ["rsatoolbox"],
}
TOOLS = tuple(MODULES)
MINIBATCH = ("pytorch-cka minibatch", "cka-pytorch", "torch-cka")


def activations(n):
    rng = np.random.default_rng(0)
    return network(rng, n), network(rng, n)


# --- the float64 reference, in feature space (O(n p^2), no n x n matrix) -----------------

def _hsic_terms(x, y, xty):
    """Unbiased HSIC (Song et al. 2012) of linear kernels from features: the Grams'
    off-diagonal sums written through X'Y, row norms and column sums."""
    n = len(x)
    dx, dy = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    trace = np.sum(xty * xty) - dx @ dy
    kx, ly = x @ x.sum(axis=0) - dx, y @ y.sum(axis=0) - dy
    return (trace + kx.sum() * ly.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (kx @ ly)) / (n * (n - 3))


def reference(a, b):
    """``{"cka": (11, 11), "cka_debiased": (11, 11)}`` in float64."""
    xs = [np.asarray(v, np.float64) for v in a.values()]
    ys = [np.asarray(v, np.float64) for v in b.values()]
    xs, ys = [x - x.mean(axis=0) for x in xs], [y - y.mean(axis=0) for y in ys]
    gx, gy = [x.T @ x for x in xs], [y.T @ y for y in ys]
    hx = [_hsic_terms(x, x, g) for x, g in zip(xs, gx)]
    hy = [_hsic_terms(y, y, g) for y, g in zip(ys, gy)]
    cka, debiased = np.empty((len(xs), len(ys))), np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            xty = x.T @ y
            cka[i, j] = np.sum(xty * xty) / np.sqrt(np.sum(gx[i] ** 2) * np.sum(gy[j] ** 2))
            debiased[i, j] = _hsic_terms(x, y, xty) / np.sqrt(hx[i] * hy[j])
    return {"cka": cka, "cka_debiased": debiased}


# --- the tools, each run in its own process ----------------------------------------------

def _replay(layers):
    import torch

    class Replay(torch.nn.Module):
        """A 'model' whose layer outputs are the stored activations of the rows asked for."""

        def __init__(self):
            super().__init__()
            self.values = [torch.from_numpy(v) for v in layers.values()]
            self.taps = torch.nn.ModuleDict({name: torch.nn.Identity() for name in layers})

        def forward(self, index):
            for tap, values in zip(self.taps.values(), self.values):
                tap(values[index])
            return index

    return Replay(), [f"taps.{name}" for name in layers]


def _loader(n, batch):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.arange(n), torch.zeros(n)), batch_size=batch)


def run_tool(tool, a, b, batch):
    """The tool's matrices, ``{metric: (11, 11)}`` (empty for rsatoolbox, which has no CKA)."""
    n = len(next(iter(a.values())))
    if tool == "rv2dist":
        import rv2dist

        result = rv2dist.similarity(a, b, metric=["cka", "cka_debiased"])
        return {m: result[m].values for m in ("cka", "cka_debiased")}
    import torch

    ta, tb = ([torch.from_numpy(v) for v in side.values()] for side in (a, b))
    if tool == "pytorch-cka full":
        from cka import cka_from_features

        return {"cka_debiased": cka_from_features(ta, tb).numpy()}
    if tool == "pytorch-cka minibatch":
        from cka import compute_cka

        (model1, names1), (model2, names2) = _replay(a), _replay(b)
        matrix = compute_cka(model1, model2, _loader(n, batch), layers=names1, model2_layers=names2,
                             device="cpu", progress=False)[0]
        return {"cka_debiased": matrix.numpy()}
    if tool == "ckatorch":
        from ckatorch.core import cka_base

        return {m: np.array([[float(cka_base(x, y, unbiased=unbiased)) for y in tb] for x in ta])
                for m, unbiased in (("cka", False), ("cka_debiased", True))}
    if tool == "cka-pytorch":
        from cka_pytorch.cka import CKACalculator

        (model1, names1), (model2, names2) = _replay(a), _replay(b)
        calculator = CKACalculator(model1, model2, model1_layers=names1, model2_layers=names2,
                                   device=torch.device("cpu"), verbose=False)
        return {"cka_debiased": calculator.calculate_cka_matrix(_loader(n, batch), num_epochs=1).numpy()}
    if tool == "torch-cka":
        import warnings

        from torch_cka import CKA

        (model1, names1), (model2, names2) = _replay(a), _replay(b)
        comparison = CKA(model1, model2, model1_layers=names1, model2_layers=names2, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comparison.compare(_loader(n, batch))
        return {"cka_debiased": comparison.export()["CKA"].numpy()}
    if tool == "repsim":
        import repsim

        both = repsim.cka(list(a.values()) + list(b.values()), kernel_type="linear", estimator="gretton")
        return {"cka": np.asarray(both)[: len(a), len(a):]}
    if tool == "rsatoolbox":
        import rsatoolbox

        def rdms(side):
            data = [rsatoolbox.data.Dataset(np.asarray(v, np.float64)) for v in side.values()]
            return rsatoolbox.rdm.calc_rdm(data, method="euclidean")

        rsatoolbox.rdm.compare(rdms(a), rdms(b), method="cosine")
        return {}
    raise ValueError(f"unknown tool {tool!r}")


def worker(tool, n, batch, out):
    import importlib

    for module in MODULES[tool]:
        importlib.import_module(module)
    a, b = activations(n)
    begin = time.perf_counter()
    matrices = run_tool(tool, a, b, batch)
    seconds = time.perf_counter() - begin
    np.savez(out, seconds=seconds, peak=_high_water_mark(), **matrices)


def _high_water_mark():
    """Peak resident bytes of this process (Linux's VmHWM: unlike ru_maxrss, not
    inherited from the parent's image across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


# --- the run, from here -------------------------------------------------------------------

def watched(tool, n, batch, peers, memory_cap, time_cap, folder):
    """Run one tool in its own process; stop it past the caps.  Returns a result dict."""
    import psutil

    out = os.path.join(folder, f"{tool.replace(' ', '_')}-{n}.npz")
    # rv2dist runs on the project's own packages alone
    path = [peers if tool != "rv2dist" else None, os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    process = subprocess.Popen([sys.executable, __file__, "--worker", tool, "--n-obs", str(n), "--batch",
                                str(batch), "--out", out], env=env, stderr=subprocess.PIPE, text=True)
    watcher, begin, highest, stopped = psutil.Process(process.pid), time.monotonic(), 0, None
    while process.poll() is None:
        try:
            highest = max(highest, watcher.memory_info().rss)
        except psutil.Error:
            pass
        if highest > memory_cap:
            stopped = f"passed {memory_cap / 1e9:.0f} GB"
        elif time.monotonic() - begin > time_cap:
            stopped = f"passed {time_cap:.0f} s"
        if stopped:
            process.kill()
            process.wait()
            return {"stopped": stopped, "reached": highest, "after": time.monotonic() - begin}
        time.sleep(0.1)
    error = process.stderr.read()
    if process.returncode != 0:
        return {"failed": error.strip().splitlines()[-1] if error.strip() else f"exit {process.returncode}"}
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


def _best_of_3(function):
    function()
    best = float("inf")
    for _ in range(3):
        begin = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - begin)
    return best


def blas_check(n, batches):
    """float32 A'B of the concatenated layers with numpy's BLAS and torch's, and the
    floor of all the exact products (A'B and each layer's X'X), best of 3; with the
    operation counts of the exact products and of a minibatch estimator."""
    import torch

    a, b = activations(n)
    cat_a, cat_b = np.hstack(list(a.values())), np.hstack(list(b.values()))
    ta, tb = torch.from_numpy(cat_a), torch.from_numpy(cat_b)
    times = {name: _best_of_3(product) for name, product in (("numpy", lambda: cat_a.T @ cat_b),
                                                               ("torch", lambda: ta.T @ tb))}
    width_a, width_b = cat_a.shape[1], cat_b.shape[1]
    flop = 2.0 * n * width_a * width_b
    print(f"BLAS check, A'B of {width_a:,} x {width_b:,} over {n:,} rows, float32, "
          f"{torch.get_num_threads()} threads: numpy {times['numpy']:.2f} s ({flop / times['numpy'] / 1e9:.0f} GFLOP/s), "
          f"torch {times['torch']:.2f} s ({flop / times['torch'] / 1e9:.0f} GFLOP/s)")
    exact = flop + sum(2.0 * n * x.shape[1] ** 2 for x in list(a.values()) + list(b.values()))
    print(f"n {n:,}: floor of the exact products (A'B and each layer's X'X, numpy) {_best_of_3(floor_products(a, b)):.2f} s, "
          f"{exact / 1e9:,.0f} GFLOP")
    # per batch of m rows: each layer's m x m Gram (2 m^2 p) and, per layer pair, the
    # HSIC of two centred Grams (about 3 m^2): 2 n m (P_a + P_b) + 3 n m L_a L_b in all
    for m in batches:
        estimate = 2.0 * n * m * (width_a + width_b) + 3.0 * n * m * len(a) * len(b)
        print(f"  minibatch estimator, {m:,}-row batches: about {estimate / 1e9:,.0f} GFLOP, "
              f"{exact / estimate:.1f}x fewer than the exact products")
    print(f"  equal counts at batches of about {exact / (2.0 * n * (width_a + width_b) + 3.0 * n * len(a) * len(b)):,.0f} rows")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-obs", type=int, nargs="+", default=[2000, 23582])
    parser.add_argument("--peers", default=None, help="folder the peers are installed in (PYTHONPATH)")
    parser.add_argument("--batch", type=int, nargs="+", default=[256],
                        help="rows per minibatch of the minibatch tools (each size a run of its own)")
    parser.add_argument("--memory-cap", type=float, default=16, help="GB of resident memory a tool may reach")
    parser.add_argument("--time-cap", type=float, default=900, help="seconds a tool may run")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.n_obs[0], args.batch[0], args.out)
    if args.peers:
        sys.path.insert(0, args.peers)
    tools = args.tools.split(",")
    print(f"machine: {os.cpu_count()} cores; minibatch tools: {', '.join(map(str, args.batch))} rows per batch")
    blas_check(max(args.n_obs), args.batch)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.n_obs:
            a, b = activations(n)
            expected = reference(a, b)
            if n == min(args.n_obs) and n <= 4000:
                sys.path.insert(0, os.path.join(HERE, "..", "tests"))
                from reference import dense_matrix

                check = max(np.max(np.abs(dense_matrix(a, b, m) - expected[m])) for m in expected)
                print(f"n {n:,}: feature-space reference against the dense n x n formulas: {check:.1e}")
            del a, b
            for tool in tools:
                for batch in args.batch if tool in MINIBATCH else args.batch[:1]:
                    label = f"{tool} ({batch} rows)" if tool in MINIBATCH and len(args.batch) > 1 else tool
                    result = watched(tool, n, batch, args.peers, args.memory_cap * 1e9, args.time_cap, folder)
                    rows.append((n, label, result, expected))
                    print(_line(n, label, result, expected), flush=True)
    print("\n| n | tool | time | peak memory | worst difference from float64 (linear CKA / debiased CKA) |")
    print("|---|---|---|---|---|")
    for n, tool, result, expected in rows:
        print(_row(n, tool, result, expected))


def _differences(result, expected):
    return " / ".join(f"{np.max(np.abs(result[m] - expected[m])):.1e}" if m in result else "—"
                      for m in ("cka", "cka_debiased"))


def _cells(result, expected):
    """(time, peak memory, differences) of one tool's result, as text."""
    if "stopped" in result:
        return (f"infeasible: stopped, {result['stopped']} after {result['after']:.0f} s",
                f">= {result['reached'] / 2**30:.1f} GiB", "—")
    if "failed" in result:
        return f"failed: {json.dumps(result['failed'])[1:-1]}", "—", "—"
    return (f"{float(result['seconds']):.2f} s", f"{float(result['peak']) / 2**30:.2f} GiB",
            _differences(result, expected))


def _line(n, tool, result, expected):
    seconds, peak, differences = _cells(result, expected)
    return f"n {n:,} {tool}: {seconds}, peak {peak}, worst difference {differences}"


def _row(n, tool, result, expected):
    return "| " + " | ".join([f"{n:,}", tool, *_cells(result, expected)]) + " |"

if __name__ == "__main__":
    main()
