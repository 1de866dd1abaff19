"""Grounding: which similarity measure finds what it should, on real trained networks.

    python benchmarks/grounding.py [--size small|full] [--figure PNG] [--work DIR] [--no-check]

Networks are trained here, offline and seeded (benchmarks/grounding_networks.py: a CNN on
scikit-learn's digits, a 1-D CNN on MNIST-1D), their held-out activations recorded with
``rv2dist.record_activations``, and every measure of ``grounding_tests.MEASURES`` put
through four published tests:

1. layer identification (Kornblith et al. 2019, Table 2): for each layer of seed i, is
   the most similar layer of seed j the same layer?  Accuracy over all seed pairs;
2. monotonicity (ReSi, Klabunde et al. 2024): within one network, similarity should fall
   with the distance between layers (Spearman correlation);
3. principal-component deletion (Ding, Denain & Steinhardt 2021): delete a layer's k
   leading principal components (or keep only the leading ones that hold 99 % of the
   variance: the low-variance case), run the rest of the network on the result, and rank
   the measure (original against modified) against the accuracy change;
4. sensitivity to the number of observations (the claim of the seed study this project
   reproduces: RV2 depends less on n than RV and CKA): every measure against n, from 100
   to the whole held-out set, for trained and untrained layers and for unrelated ones
   (one side's rows shuffled), with ``rv2_null`` and Poisson-bootstrap intervals.

Each comparison is one rv2dist call: every layer of every seed against every other in
one job (tests 1 and 2), each network's layers against all their deletions (test 3), a
pair of networks at one n (test 4).  With the check on (the default), every value the
tables rest on is recomputed with the dense float64 formulas of grounding_dense.py; the
full size first runs the small one with that check, then itself without it (its n x n
Grams would take several GB).  Prints the tables, the trained networks' accuracies, the time and
the peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import grounding_dense as dense  # noqa: E402
import grounding_networks as nets  # noqa: E402
import grounding_report as tables  # noqa: E402
import grounding_tests as tests  # noqa: E402

DATASETS = ("digits", "mnist1d")


@dataclasses.dataclass(frozen=True)
class Config:
    """One size of the grounding run.

    Attributes
    ----------
    seeds : int
        Networks trained per data set (seeds 0 .. seeds - 1; the untrained controls are
        the same networks at their initialisation).
    digits_train, digits_epochs : int
        Training images of digits (the other 1,797 - digits_train are held out) and epochs.
    mnist1d_train, mnist1d_test, mnist1d_epochs : int
        MNIST-1D sequences generated for training and held out, and epochs.
    leading : tuple of int
        Numbers of leading principal components deleted (test 3).
    kept : tuple of float
        Variance shares: keep the leading components that hold this share, delete the
        rest (the low-variance case of test 3).
    sizes : tuple of int
        Numbers of observations of test 4 (capped at the held-out set, which is always
        added).
    pairs : int
        Pairs of seeds (0, 1), (1, 2), ... compared in test 4 (at most ``seeds``; the
        last wraps around to seed 0).
    bootstrap : int
        Poisson-bootstrap replicates of test 4's intervals.
    uncentred : bool
        Test 4 also runs RV2 and RV uncentred (hoggorm's, as the seed study ran them),
        one more job per comparison.
    center : bool
        rv2dist's ``center`` (RV2 and RV of centred data; CKA always centres).
    check : bool
        Recompute every value with the dense float64 formulas (small sizes only).
    """

    seeds: int = 5
    digits_train: int = 1000
    digits_epochs: int = 30
    mnist1d_train: int = 8000
    mnist1d_test: int = 2000
    mnist1d_epochs: int = 40
    leading: tuple = (1, 2, 4, 8, 16, 32)
    kept: tuple = (0.999, 0.99)
    sizes: tuple = (100, 200, 400, 800, 1600)
    pairs: int = 5
    bootstrap: int = 100
    uncentred: bool = True
    center: bool = True
    check: bool = False

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"seeds must be at least 2 (the tests compare seeds), got {self.seeds}")


SIZES = {
    "small": Config(seeds=3, digits_train=1200, digits_epochs=10, mnist1d_train=3000, mnist1d_test=600,
                    mnist1d_epochs=15,
                    leading=(1, 4, 16), kept=(0.99,), sizes=(100,), pairs=1, bootstrap=41, uncentred=False,
                    check=True),
    "full": Config(),
}


@dataclasses.dataclass(frozen=True)
class Trained:
    """One data set's networks, for kind "trained" and "untrained": ``models[kind][seed]``,
    the stores of their recorded held-out activations, those activations read back
    (``{layer: numpy array}``), and the networks' test accuracies."""

    data: object
    models: dict
    stores: dict
    activations: dict
    accuracy: dict
    layers: list


def prepare(data_name, config, work):
    """Train ``config.seeds`` networks on data set ``data_name`` (one CPU thread each:
    these small networks train fastest so), record them and their initialisations."""
    import torch

    import rv2dist

    data = nets.digits(config.digits_train) if data_name == "digits" else \
        nets.mnist1d(config.mnist1d_train, config.mnist1d_test)
    epochs = config.digits_epochs if data_name == "digits" else config.mnist1d_epochs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {"untrained": [nets.network(data_name, seed) for seed in range(config.seeds)],
                  "trained": [nets.train(nets.network(data_name, seed), data, epochs, seed)
                              for seed in range(config.seeds)]}
    finally:
        torch.set_num_threads(threads)
    stores = {kind: [nets.record(model, data, Path(work) / f"{data_name}-{kind}-{seed}.zarr", f"{kind} {seed}")
                     for seed, model in enumerate(group)] for kind, group in models.items()}
    activations = {kind: [{name: layer.values for name, layer in rv2dist.open_activations(path).data_vars.items()}
                          for path in paths] for kind, paths in stores.items()}
    accuracy = {kind: [nets.accuracy_from(model, None, data.x_test, data.y_test) for model in group]
                for kind, group in models.items()}
    return Trained(data, models, stores, activations, accuracy, nets.hidden_layers(models["trained"][0]))


@dataclasses.dataclass
class Report:
    """The grounding run's tables (pandas DataFrames), the data behind its figures,
    and what was checked and spent."""

    accuracy: object
    identification: object
    monotonicity: object
    deletion: object
    sensitivity: object
    curves: object
    matrices: dict
    findings: object
    checked: str
    seconds: float
    peak_bytes: int


def _phase(log, label, func, *args):
    """``func(*args)``, with a line saying what it did and the seconds it took."""
    start = time.perf_counter()
    value = func(*args)
    log(f"{label}: {time.perf_counter() - start:.1f} s")
    return value


def _study(name, config, work, tally, log):
    """Train and record data set ``name``'s networks and put them through the four
    tests; returns the networks and ``{part: value}`` of the tests' raw results."""
    trained = _phase(log, f"{name}: {config.seeds} seeds trained and recorded", prepare, name, config, work)
    matrices = {kind: _phase(log, f"{name}: every {kind} layer against every other, one job", tests.layer_matrix,
                             trained, kind, config, tally) for kind in ("trained", "untrained")}
    return trained, {
        "matrices": matrices,
        "identification": {f"{kind}{label}": tests.identification(m, config.seeds, trained.layers, band)
                           for kind, m in matrices.items() for band, label in ((0, ""), (1, ", within 1 layer"))},
        "monotonicity": {kind: tests.monotonicity(m, config.seeds, trained.layers) for kind, m in matrices.items()},
        "deletion": _phase(log, f"{name}: principal-component deletions", tests.pc_deletion, trained, config, tally),
        "curves": _phase(log, f"{name}: sensitivity to n", tests.sensitivity, trained, config, tally)}


def run(config, work=None, log=print):
    """The whole grounding run at size ``config``; returns a :class:`Report`.  ``log``
    gets a line per phase."""
    start = time.perf_counter()
    work = Path(work or tempfile.mkdtemp(prefix="rv2dist-grounding-"))
    work.mkdir(parents=True, exist_ok=True)
    tally = dense.Tally() if config.check else None
    trained, parts = {}, {}
    for name in DATASETS:
        trained[name], parts[name] = _study(name, config, work, tally, log)
    per = {key: {name: part[key] for name, part in parts.items()} for key in parts[DATASETS[0]]}
    by_kind = {key: {(name, kind): v for name, part in per[key].items() for kind, v in part.items()}
               for key in ("identification", "monotonicity")}
    report = Report(
        accuracy=tables.accuracy_table(trained), identification=tables.spread_table(by_kind["identification"]),
        monotonicity=tables.spread_table(by_kind["monotonicity"]), deletion=tables.deletion_table(per["deletion"]),
        sensitivity=tables.sensitivity_table(per["curves"]), curves=per["curves"], matrices=per["matrices"],
        findings=None, checked=str(tally) if tally else "not checked at this size",
        seconds=time.perf_counter() - start, peak_bytes=peak_memory())
    report.findings = tables.findings(report)
    return report


def peak_memory():
    """Peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def show(report, out=sys.stdout):
    """Print every table of ``report``."""
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 90):
        for title, table in [("test accuracy of the networks (mean [min, max] over seeds)", report.accuracy),
                             ("(1) layer identification: share of layers whose best match in another seed is "
                              "the same layer", report.identification),
                             ("(2) monotonicity: Spearman of similarity with -|layer distance|",
                              report.monotonicity),
                             ("(3) principal-component deletion", report.deletion),
                             ("(4) sensitivity to n", report.sensitivity),
                             ("findings", report.findings)]:
            print(f"\n{title}\n{table.to_string()}", file=out)
    print(f"\ncross-check: {report.checked}", file=out)
    print(f"time {report.seconds:.0f} s, peak memory {report.peak_bytes / 2**20:,.0f} MiB", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--figure", help="save the sensitivity curves to this PNG")
    parser.add_argument("--work", help="keep the stores here (default: a temporary folder)")
    parser.add_argument("--no-check", action="store_true", help="skip the dense float64 cross-check")
    args = parser.parse_args(argv)
    config = SIZES[args.size]
    start = time.perf_counter()
    if args.size != "small" and not args.no_check:
        checked = run(SIZES["small"], args.work and os.path.join(args.work, "check"), log=lambda *_: None)
        print(f"cross-check at the small size: {checked.checked}")
    report = run(dataclasses.replace(config, check=config.check and not args.no_check), args.work)
    show(report)
    if args.figure:
        tables.curves_figure(report.curves).savefig(args.figure, dpi=150)
    print(f"whole grounding run: {time.perf_counter() - start:.0f} s, peak memory "
          f"{peak_memory() / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
