"""Significance: validation of the exact moments, p-values and bootstrap intervals, and
their cost at the seed study's scale.

    python benchmarks/significance.py validate [--permutations K] [--datasets D] [--only CHECK]
    python benchmarks/significance.py cost [--n-obs N] [--repeat R] [--replicates B]

``validate``
    (1) the exact permutation mean and variance against K Monte Carlo permutations of the
    dense formulas, n in {20, 100, 1000}, p << n and p >> n, centred and not: each
    difference in Monte Carlo standard errors; (2) the p-values against the permutation
    p-values; (3) coverage of the 95 % Poisson-bootstrap intervals of CKA (= centred RV)
    over D simulated data sets whose population RV is known in closed form; (4) the
    same for paired differences between two cells (two layers against one reference
    layer) over 2 D data sets per case, with the p-values' calibration where the
    difference is 0, and two separate jobs against one; (5) the p-values of the feature
    and the gram route against each other.
``cost``
    At paper scale (23,582 observations, two 11-layer networks, float32), in one run and
    alternating: the plain job against the same job with ``tests=True`` (median of the
    paired ratios); ``bootstrap=B`` against the BLAS floor of its B weighted products;
    ``permutations=B`` against the floor of its B cross products.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
from scipy.stats import kstest, norm

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import rv2dist  # noqa: E402
from paper_scale import floor_products, network  # noqa: E402
from reference import dense_metric, permuted_values  # noqa: E402
from timing import timed  # noqa: E402

from rv2dist.core import significance  # noqa: E402

METRICS = ("rv2", "rv", "cka", "cka_debiased")
GRID = [(20, 3, 2), (20, 300, 200), (100, 5, 3), (100, 800, 400), (1000, 6, 4), (1000, 3000, 2000)]


def _pair(rng, n, p, q, strength):
    x = rng.standard_normal((n, p))
    x[:, 0] *= 3  # one dominant direction: a skewed permutation distribution
    y = strength * x[:, :1] @ np.ones((1, q)) + rng.standard_normal((n, q))
    return x + 1.0, y + 1.0  # positive means: the uncentred case is far from centred


def validate_moments(permutations):
    print(f"(1) exact mean and variance against {permutations:,} permutations (differences in Monte Carlo SE)")
    worst = 0.0
    for n, p, q in GRID:
        rng = np.random.default_rng(n + p)
        x, y = _pair(rng, n, p, q, 0.1)
        orders = [rng.permutation(n) for _ in range(permutations)]
        for center in (True, False):
            result = rv2dist.similarity({"x": x}, {"y": y}, metric=list(METRICS), center=center, tests=True)
            cells = []
            for metric in METRICS:
                if metric.startswith("cka") and not center:
                    continue
                values = permuted_values(x, y, metric, center, orders)
                z = float(result[f"{metric}_z"][0, 0])
                observed = float(result[metric][0, 0])
                # the exact mean and sd recovered from the z-score and the value
                mean_sd = _mean_and_sd(x, y, metric, center)
                k = len(values)
                mean_se = values.std() / np.sqrt(k)
                var_se = np.sqrt(np.var((values - values.mean()) ** 2) / k)
                d_mean = (values.mean() - mean_sd[0]) / mean_se
                d_var = (values.var() - mean_sd[1] ** 2) / var_se
                worst = max(worst, abs(d_mean), abs(d_var))
                assert np.isclose((observed - mean_sd[0]) / mean_sd[1], z, rtol=1e-9)
                cells.append(f"{metric} {d_mean:+.1f}/{d_var:+.1f}")
            print(f"  n={n:5d} p={p:5d} q={q:5d} {'centred  ' if center else 'uncentred'}  " + "  ".join(cells))
    print(f"  worst |difference|: {worst:.2f} SE (limit 3)")
    return worst


def _mean_and_sd(x, y, metric, center):
    import dask

    from rv2dist.core.measures import MEASURES
    from rv2dist.engine.statistics_graph import build_statistics
    from rv2dist.engine.taskgraph import TaskGraph
    from rv2dist.planning.planner import make_plan

    plan = make_plan(len(x), [("x", x.shape[1])], [("y", y.shape[1])], memory_budget=2**31)
    graph = TaskGraph("validate")
    edges = np.cumsum((0,) + plan.row_chunks)
    chunks = [[v[s:e] for s, e in zip(edges[:-1], edges[1:])] for v in (x, y)]
    stats = dask.get(graph.tasks, build_statistics(graph, chunks, plan, MEASURES[metric].centred(center)))
    mean, variance = significance.null_moments(metric, stats)
    return mean[0, 1], np.sqrt(variance[0, 1])


def validate_p_values(permutations):
    print(f"\n(2) p-values against {permutations:,} permutations (centred; tolerance 3 MC SE + 0.01 where the "
          "permutation p <= 0.5; above, + 0.03 for n >= 100 and + 0.08 at n = 20)")
    rows, worst_excess = [], -1.0
    for n, p, q in GRID:
        for strength in (0.0, 0.02, 0.05):
            rng = np.random.default_rng(7 * n + p + int(100 * strength))
            x, y = _pair(rng, n, p, q, strength)
            orders = [rng.permutation(n) for _ in range(permutations)]
            result = rv2dist.similarity({"x": x}, {"y": y}, metric=list(METRICS), tests=True)
            for metric in ("rv2", "cka"):
                values = permuted_values(x, y, metric, True, orders)
                exact = (1 + np.sum(values >= dense_metric(x, y, metric) - 1e-12)) / (len(values) + 1)
                ours = float(result[f"{metric}_p"][0, 0])
                normal = float(norm.sf(float(result[f"{metric}_z"][0, 0])))
                # the fitted law's lower part (p near 1) is its crudest, at n = 20 most: the
                # large-n skewness overstates the exact one there (2.0 against 1.4)
                slack = 0.01 if exact <= 0.5 else 0.03 if n >= 100 else 0.08
                tolerance = 3 * np.sqrt(exact * (1 - exact) / len(values)) + slack
                worst_excess = max(worst_excess, abs(ours - exact) - tolerance)
                rows.append((n, p, q, strength, metric, exact, ours, normal))
    print("      n      p      q  strength  metric  permutation  rv2dist   normal")
    for n, p, q, strength, metric, exact, ours, normal in rows:
        print(f"  {n:5d}  {p:5d}  {q:5d}  {strength:8.2f}  {metric:6s}  {exact:11.4f}  {ours:7.4f}  {normal:7.2e}")
    print(f"  every p-value within its tolerance: {worst_excess <= 0} (largest excess {worst_excess:+.4f})")
    return worst_excess


def validate_coverage(datasets, replicates, n=1000):
    """Gaussian X (p = 3) and Y = X W + E (q = 3): the population RV of centred data is
    tr(S_xy S_yx) / sqrt(tr S_xx^2 tr S_yy^2) with S_xx = I, S_xy = W, S_yy = W'W + s^2 I."""
    rng = np.random.default_rng(2026)
    w = rng.standard_normal((3, 3)) * 0.5
    noise = 1.0
    s_yy = w.T @ w + noise**2 * np.eye(3)
    population = np.trace(w @ w.T) / np.sqrt(3.0 * np.trace(s_yy @ s_yy))
    covered = {"cka": 0, "rv2": 0}
    widths = []
    start = time.perf_counter()
    for d in range(datasets):
        x = rng.standard_normal((n, 3))
        y = x @ w + noise * rng.standard_normal((n, 3))
        r = rv2dist.similarity({"x": x}, {"y": y}, metric=["cka", "rv2"], bootstrap=replicates, seed=d)
        for metric in covered:
            covered[metric] += float(r[f"{metric}_low"][0, 0]) <= population <= float(r[f"{metric}_high"][0, 0])
        widths.append(float(r["cka_high"][0, 0] - r["cka_low"][0, 0]))
    print(f"\n(3) 95 % Poisson-bootstrap intervals, {datasets} data sets of n = {n}, B = {replicates}, "
          f"population RV = {population:.4f} ({time.perf_counter() - start:.0f} s)")
    for metric, count in covered.items():
        print(f"  {metric}: covers the population value in {count}/{datasets} = {100 * count / datasets:.1f} % "
              "(goal >= 92 %)")
    print(f"  median interval width {statistics.median(widths):.4f}")
    return covered


def _population_rv(w, noise=1.0):
    """Population RV of centred X (identity covariance) and Y = X W + noise E."""
    s_yy = w.T @ w + noise**2 * np.eye(w.shape[1])
    return np.trace(w @ w.T) / np.sqrt(w.shape[0] * np.trace(s_yy @ s_yy))


def validate_differences(datasets, replicates, n=1000, per_job=20):
    """Two layers y1 = x W1 + E1 and y2 = x W2 + E2 against x (3 units each): the paired
    difference of their cells.  W2 = W1 / 2: a known nonzero population difference;
    W2 = W1: zero (y1 and y2 exchangeable).  ``per_job`` data sets share a job and its
    seed; every job has its own."""
    rng = np.random.default_rng(2027)
    w1 = rng.standard_normal((3, 3)) * 0.6
    print(f"\n(4) paired differences of two cells, {datasets} data sets of n = {n} per case, B = {replicates}")
    for label, w2 in (("W2 = W1 / 2", w1 / 2), ("W2 = W1 (zero)", w1)):
        truth = _population_rv(w1) - _population_rv(w2)
        found = {"cka": [], "rv2": []}
        start = time.perf_counter()
        for job in range(datasets // per_job):
            a, b = {}, {}
            for d in range(per_job):
                x = rng.standard_normal((n, 3))
                b[f"x{d}"] = x
                a[f"y1_{d}"] = x @ w1 + rng.standard_normal((n, 3))
                a[f"y2_{d}"] = x @ w2 + rng.standard_normal((n, 3))
            r = rv2dist.similarity(a, b, metric=list(found), bootstrap=replicates, seed=job, keep_replicates=True)
            for metric, differences in found.items():
                differences += [rv2dist.compare_cells(r, metric, (f"y1_{d}", f"x{d}"), (f"y2_{d}", f"x{d}"))
                                for d in range(per_job)]
        print(f"  {label}: population difference {truth:.4f} ({time.perf_counter() - start:.0f} s)")
        for metric, differences in found.items():
            covered = sum(d.low <= truth <= d.high for d in differences)
            p = np.array([d.p for d in differences])
            line = (f"    {metric}: 95 % interval covers it in {covered}/{len(differences)} = "
                    f"{100 * covered / len(differences):.1f} % (goal >= 92 %); p < 0.05 in {100 * np.mean(p < 0.05):.1f} %")
            if truth == 0:
                line += (f", p < 0.2 in {100 * np.mean(p < 0.2):.1f} %, Kolmogorov-Smirnov against uniform "
                         f"p = {kstest(p, 'uniform').pvalue:.2f}")
            print(line)
    # two jobs with the same seed and observations against one: the same replicates
    x = rng.standard_normal((n, 3))
    y1, y2 = x @ w1 + rng.standard_normal((n, 3)), x @ (w1 / 2) + rng.standard_normal((n, 3))
    options = dict(metric="cka", bootstrap=replicates, seed=1, keep_replicates=True)
    joint = rv2dist.compare_cells(rv2dist.similarity({"y1": y1, "y2": y2}, {"x": x}, **options), "cka",
                                  ("y1", "x"), ("y2", "x"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arrays carry no ids
        apart = rv2dist.compare_results(rv2dist.similarity({"y1": y1}, {"x": x}, **options),
                                        rv2dist.similarity({"y2": y2}, {"x": x}, **options), "cka", ("y1", "x"),
                                        ("y2", "x"))
    print(f"  one job against two: interval [{joint.low:.6f}, {joint.high:.6f}] against "
          f"[{apart.low:.6f}, {apart.high:.6f}], p {joint.p:.4f} against {apart.p:.4f}")


def _gram_blocks(x, y, budget, options):
    """Row blocks of the gram route's plan within ``budget`` (infinitely many when
    nothing fits: the planner costs both routes, and one observation must fit both)."""
    try:
        return len(rv2dist.plan({"x": x}, {"y": y}, route="gram", memory_budget=budget, **options).row_chunks)
    except rv2dist.PlanError:
        return float("inf")


def validate_routes():
    """The p-values of the feature and the gram route (split into several row blocks) on
    the grid of (2): equal to rounding."""
    print("\n(5) p-values of the gram route against the feature route (largest relative difference)")
    worst = 0.0
    for n, p, q in GRID:
        rng = np.random.default_rng(n + q)
        x, y = _pair(rng, n, p, q, 0.02)
        options = dict(metric=list(METRICS), tests=True)
        feature = rv2dist.similarity({"x": x}, {"y": y}, route="feature", **options)
        # the smallest budget that splits the gram route into at most six row blocks
        budget = next(2**k for k in range(16, 40) if _gram_blocks(x, y, 2**k, options) <= 6)
        tiles = rv2dist.plan({"x": x}, {"y": y}, route="gram", memory_budget=budget, **options).row_chunks
        gram = rv2dist.similarity({"x": x}, {"y": y}, route="gram", memory_budget=budget, **options)
        differences = [abs(float(gram[f"{m}_p"][0, 0]) / float(feature[f"{m}_p"][0, 0]) - 1) for m in METRICS]
        worst = max(worst, *differences)
        print(f"  n={n:5d} p={p:5d} q={q:5d}  gram in {len(tiles)} row blocks  "
              + "  ".join(f"{m} p={float(feature[f'{m}_p'][0, 0]):.3g} ({d:.1e})" for m, d in zip(METRICS, differences)))
    print(f"  largest relative difference {worst:.1e}")
    return worst


def cost(n_obs, repeat, replicates):
    rng = np.random.default_rng(0)
    a, b = network(rng, n_obs), network(rng, n_obs)
    print(rv2dist.plan(a, b, tests=True, bootstrap=replicates, permutations=replicates))
    floor = floor_products(a, b)
    cat_a, cat_b = np.hstack(list(a.values())), np.hstack(list(b.values()))

    def cross_floor():
        cat_a.T @ cat_b

    rv2dist.similarity(a, b, tests=True)  # imports and first calls, outside the timing
    plain, tested = [], []
    for _ in range(repeat):
        plain.append(timed(lambda: rv2dist.similarity(a, b, metric="rv2"), 1)[0])
        tested.append(timed(lambda: rv2dist.similarity(a, b, metric="rv2", tests=True), 1)[0])
    print(f"machine: {os.cpu_count()} cores; n_obs {n_obs:,}")
    print(f"plain job      median {statistics.median(plain):.2f} s   tests=True median {statistics.median(tested):.2f} s")
    print(f"tests / plain: median of {repeat} paired ratios {statistics.median(t / p for t, p in zip(tested, plain)):.3f}"
          "   goal <= 1.05")
    floor_time = timed(lambda: [floor() for _ in range(replicates)], 1)[0]
    ours = timed(lambda: rv2dist.similarity(a, b, metric="rv2", bootstrap=replicates), 1)[0]
    plain_once = statistics.median(plain)
    print(f"bootstrap B={replicates}: {ours:.1f} s; floor of its {replicates} weighted products {floor_time:.1f} s;"
          f" ratio {(ours - plain_once) / floor_time:.2f} (replicates only)   {ours / floor_time:.2f} (whole job)"
          "   goal <= 1.3")
    floor_time = timed(lambda: [cross_floor() for _ in range(replicates)], 1)[0]
    ours = timed(lambda: rv2dist.similarity(a, b, metric="rv2", permutations=replicates), 1)[0]
    print(f"permutations K={replicates}: {ours:.1f} s; floor of its {replicates} cross products {floor_time:.1f} s;"
          f" ratio {(ours - plain_once) / floor_time:.2f} (permutations only)   {ours / floor_time:.2f} (whole job)"
          "   goal <= 1.3")


def main():
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("validate")
    check.add_argument("--permutations", type=int, default=5000)
    check.add_argument("--datasets", type=int, default=200)
    check.add_argument("--replicates", type=int, default=200)
    check.add_argument("--only", choices=("moments", "p-values", "coverage", "differences", "routes"),
                       help="run one check only")
    timing = verbs.add_parser("cost")
    timing.add_argument("--n-obs", type=int, default=23582)
    timing.add_argument("--repeat", type=int, default=4)
    timing.add_argument("--replicates", type=int, default=100)
    args = parser.parse_args()
    if args.verb == "validate":
        checks = {"moments": lambda: validate_moments(args.permutations),
                  "p-values": lambda: validate_p_values(args.permutations),
                  "coverage": lambda: validate_coverage(args.datasets, args.replicates),
                  "differences": lambda: validate_differences(2 * args.datasets, args.replicates),
                  "routes": validate_routes}
        for name, check in checks.items():
            if args.only in (None, name):
                check()
    else:
        cost(args.n_obs, args.repeat, args.replicates)


if __name__ == "__main__":
    main()
