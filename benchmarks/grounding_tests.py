"""The four tests of benchmarks/grounding.py, from recorded activations to raw results
(grounding_report.py makes the tables, findings and figure of them).

:data:`MEASURES` is the one list of measures every test ranks: add a name rv2dist's
``similarity(metric=...)`` knows, with its direction (a distance is negated wherever
"most similar" is asked), and its dense formula to grounding_dense.FORMULAS.

Two conventions the second-moment measures need:

- the regressions (:data:`REGRESSIONS`) are read with the reference layer as the
  target, as Kornblith et al.'s R²_LR fits the reference from the candidate: test 1
  asks how well each layer of seed j predicts a layer of seed i, test 3 how well the
  modified layer predicts the original (the other way, a deletion is a linear function
  of the original and every R² would be 1);
- a measure that whitens (:data:`WHITENING`) is undefined (NaN) in a cell whose
  layers' ranks together exceed n - 1, where canonical correlations are 1 whatever the
  data (rv2dist's ``forced_ones``): test 4 reaches that at its smaller n.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np

import grounding_dense as dense
import grounding_networks as nets

SIMILARITY, DISTANCE = "similarity", "distance"
# every measure the tests rank, and whether a larger value means more alike (similarity)
# or less (distance); centred RV (center=True) is linear CKA exactly, listed as rv2dist names it
MEASURES = {"rv2": SIMILARITY, "rv": SIMILARITY, "cka": SIMILARITY, "cka_debiased": SIMILARITY,
            "rsa": SIMILARITY, "rsa_euclidean": SIMILARITY,
            "cca": SIMILARITY, "cca_r2": SIMILARITY, "svcca": SIMILARITY, "pwcca": SIMILARITY,
            "procrustes": SIMILARITY, "procrustes_distance": DISTANCE, "shape_metric": DISTANCE,
            "linreg": SIMILARITY, "ridge": SIMILARITY}
# the measures that invert a layer's covariance (rv2dist's Measure.whitens): meaningless
# where canonical correlations are forced to 1 (shape_metric whitens only below alpha = 1)
WHITENING = ("cca", "cca_r2", "svcca", "pwcca", "linreg")
# not symmetric: rv2dist's cell (x, y) is the R² of the column layer y predicted from x
REGRESSIONS = ("linreg", "ridge")
OTHER_WAY = "(reference predicts)"  # test 1's label of a regression read the other way
NULL = "rv2_null"  # the permutation expectation of RV2, shown beside test 4's curves
UNCENTRED = ("rv2", "rv", NULL)  # test 4 also runs these uncentred, as hoggorm computes them
CONDITIONS = ("trained", "untrained", "shuffled")
# every job takes the feature route: the second-moment measures (CCA, Procrustes, ...) need
# its p x p blocks, which the gram route (layers wider than n: test 4 at n = 100) lacks; at
# these widths (at most 256 units) it costs little.  Products in float64: the whitening
# measures then keep rv2dist's cut-off rcond = 1e-8 (dense.OPTIONS), as the dense formulas
ROUTE, PRECISION = "feature", "float64"


@dataclasses.dataclass(frozen=True)
class Spread:
    """A mean with the smallest and largest of the values it averages."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values, undefined="n/a"):
        """The spread of the defined ``values``; the label ``undefined`` where none is."""
        values = np.asarray(values, dtype=np.float64)
        if np.isnan(values).all():
            return undefined
        return cls(float(np.nanmean(values)), float(np.nanmin(values)), float(np.nanmax(values)))

    def __str__(self):
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def scores(values, measure):
    """``values`` of ``measure`` oriented so that larger means more alike."""
    direction = MEASURES[measure]
    if direction not in (SIMILARITY, DISTANCE):
        raise ValueError(f"MEASURES[{measure!r}] must be {SIMILARITY!r} or {DISTANCE!r}, not {direction!r}")
    return -values if direction == DISTANCE else values


def similarity(a, b, metrics, center, **resampling):
    """One rv2dist call of the benchmark: ``metrics`` between the layers of ``a`` and
    ``b`` (``b=None``: ``a`` against itself) on the feature route in float64, with
    the measure options of the dense formulas."""
    import rv2dist

    return rv2dist.similarity(a, b, metric=list(metrics), center=center, route=ROUTE, precision=PRECISION,
                              **dense.OPTIONS, **resampling)


def defined(result, measure):
    """``result[measure]``'s values, NaN where the measure whitens and the cell has
    canonical correlations forced to 1."""
    values = np.array(result[measure].values, dtype=np.float64)
    if measure in WHITENING:
        values[result["forced_ones"].values > 0] = np.nan
    return values


def _check_matrices(tally, label, result, a, b, metrics, center, cells=None):
    if tally is not None:
        tally.matrices(label, result, list(a.values()), list(b.values()), metrics, center, cells)


def layer_matrix(trained, kind, config, tally=None):
    """Every layer of every seed against every other, in one rv2dist call on the stores:
    a (seeds x layers) square matrix per measure."""
    import rv2dist

    opened = [rv2dist.open_activations(path) for path in trained.stores[kind]]
    layers = {f"s{seed}.{layer}": store[layer] for seed, store in enumerate(opened) for layer in trained.layers}
    result = similarity(layers, None, MEASURES, config.center)
    _check_matrices(tally, f"{trained.data.name} {kind} layers", result, layers, layers, MEASURES, config.center)
    return result


def _blocks(result, measure, seeds, n_layers, target="reference"):
    """Scores as (seed a, layer a, seed b, layer b): the reference layer first, the
    candidate second; a regression's ``target`` the reference or the candidate."""
    values = scores(defined(result, measure), measure)
    return (values.T if target == "reference" and measure in REGRESSIONS else values).reshape(
        seeds, n_layers, seeds, n_layers)


def _best(block):
    """Each row's column of largest score; -1 where the row has none defined."""
    undefined = np.isnan(block)
    return np.where(undefined.all(axis=1), -1, np.where(undefined, -np.inf, block).argmax(axis=1))


def identification(result, seeds, layers, band=0):
    """Test 1, per measure and seed i: the share of i's layers whose most similar layer
    in seed j is the same layer (or, with ``band``, at most that many layers away),
    averaged over the other seeds j.  A regression scores each candidate of seed j by
    how well it predicts i's layer, and also (labelled :data:`OTHER_WAY`) by how well
    i's layer predicts it."""
    n = len(layers)
    read = [(measure, measure, "reference") for measure in MEASURES]
    # the regressions also the other way (the reference predicting the candidates)
    read += [(f"{measure} {OTHER_WAY}", measure, "candidate") for measure in REGRESSIONS if measure in MEASURES]
    shares = {}
    for label, measure, target in read:
        blocks = _blocks(result, measure, seeds, n, target)
        shares[label] = [np.mean([_hits(blocks[i, :, j, :], band) for j in range(seeds) if j != i])
                         for i in range(seeds)]
    return shares


def _hits(block, band):
    """The share of rows whose best column lies within ``band`` of the row's own index."""
    best = _best(block)
    return np.mean((best >= 0) & (np.abs(best - np.arange(len(best))) <= band))


def monotonicity(result, seeds, layers):
    """Test 2, per measure and seed: Spearman's rho between the scores of all pairs of
    distinct layers and minus their distance in depth."""
    from scipy.stats import spearmanr

    rows, columns = np.nonzero(~np.eye(len(layers), dtype=bool))
    closeness = -np.abs(rows - columns)
    rhos = {}
    for measure in MEASURES:
        blocks = _blocks(result, measure, seeds, len(layers))
        rhos[measure] = [spearmanr(blocks[s, rows, s, columns], closeness).statistic for s in range(seeds)]
    return rhos


def deletions(x, config):
    """Test 3's modifications of one layer's activations ``x`` (observations first):
    ``(name, kind, modified x)``, kind "leading" (the k leading principal components
    deleted) or "trailing" (only the leading ones holding a share of the variance kept)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    centred = flat - mean
    variances, vectors = np.linalg.eigh(centred.T @ centred)  # ascending
    variances, vt = variances[::-1], vectors[:, ::-1].T
    rank = int(np.sum(variances > variances[0] * 1e-12))
    share = np.cumsum(variances) / np.sum(variances)
    made = [(f"{k} leading PC{'s' if k > 1 else ''} deleted", "leading", flat - centred @ vt[:k].T @ vt[:k])
            for k in config.leading if k < rank]
    for kept in config.kept:
        m = int(np.searchsorted(share, kept)) + 1
        if m < rank:
            kept_part = mean + centred @ vt[:m].T @ vt[:m]
            made.append((f"PCs past {kept:.1%} of the variance deleted", "trailing", kept_part))
    return [(name, kind, d.reshape(x.shape).astype(np.float32)) for name, kind, d in made]


def pc_deletion(trained, config, tally=None):
    """Test 3: per trained seed, one rv2dist call of all its layers' deletions
    against its layers (a regression: the original predicted from the modified); one
    row per (seed, layer, deletion) with the accuracy change and the measures between
    the modified and the original layer."""
    import pandas as pd

    rows = []
    for seed, model in enumerate(trained.models["trained"]):
        original = trained.activations["trained"][seed]
        base = trained.accuracy["trained"][seed]
        modified, cases = {}, []
        for layer, x in original.items():
            # resuming the forward pass from the recorded layer must give the network's accuracy
            resumed = nets.accuracy_from(model, layer, x, trained.data.y_test)
            if resumed != base:
                raise RuntimeError(f"{trained.data.name} seed {seed}: the network resumed at {layer} from its "
                                   f"recorded activations scores {resumed}, not its accuracy {base}")
            for name, kind, x_mod in deletions(x, config):
                modified[f"{layer} {name}"] = x_mod
                change = nets.accuracy_from(model, layer, x_mod, trained.data.y_test) - base
                cases.append(dict(seed=seed, layer=layer, deletion=name, kind=kind, accuracy_change=change))
        result = similarity(modified, original, MEASURES, config.center)
        # the tables use each layer against its own deletions only
        own = np.array([[name.split(" ", 1)[0] == layer for layer in original] for name in modified])
        _check_matrices(tally, f"{trained.data.name} seed {seed} deletions", result, modified, original, MEASURES,
                        config.center, own)
        names_a, names_b = list(result.layer_a.values), list(result.layer_b.values)
        values = {m: defined(result, m) for m in MEASURES}
        for case in cases:
            cell = names_a.index(f"{case['layer']} {case['deletion']}"), names_b.index(case["layer"])
            rows.append({**case, **{m: float(values[m][cell]) for m in MEASURES}})
    return pd.DataFrame(rows).assign(data=trained.data.name)


def sensitivity_layers(layers):
    """Test 4's layers: the first, the middle and the last hidden one."""
    return list(dict.fromkeys([layers[0], layers[len(layers) // 2], layers[-1]]))


def _jobs(config):
    """Test 4's jobs per comparison: ``(metrics, center, label suffix)``."""
    jobs = [([*MEASURES, NULL], config.center, "")]
    if config.uncentred:
        jobs.append((list(UNCENTRED), False, " uncentred"))
    return jobs


def sensitivity(trained, config, tally=None):
    """Test 4: for each condition and pair of seeds (i, i + 1), at every n of
    ``config.sizes`` (the first n held-out observations) one rv2dist call with
    bootstrap intervals (two with ``config.uncentred``); one row per (condition, pair,
    n, layer, measure)."""
    import pandas as pd

    n_test = trained.data.n_test
    sizes = sorted({min(size, n_test) for size in config.sizes} | {n_test})
    chosen = sensitivity_layers(trained.layers)
    shuffle = np.random.default_rng(0).permutation(n_test)
    acts = {kind: [{layer: per_seed[layer] for layer in chosen} for per_seed in trained.activations[kind]]
            for kind in ("trained", "untrained")}
    pairs = [(i, (i + 1) % config.seeds) for i in range(min(config.pairs, config.seeds))]
    rows = []
    for condition in CONDITIONS:
        group = acts["untrained" if condition == "untrained" else "trained"]
        for (i, j), n, (metrics, center, suffix) in itertools.product(pairs, sizes, _jobs(config)):
            a = {layer: v[:n] for layer, v in group[i].items()}
            b = {layer: (v[shuffle] if condition == "shuffled" else v)[:n] for layer, v in group[j].items()}
            label = f"{trained.data.name} {condition} {i}-{j} n={n}{suffix}"
            result = _sensitivity_call(a, b, metrics, center, config, tally, label, intervals=n == sizes[0])
            rows += _sensitivity_rows(result, metrics, suffix, config.bootstrap, chosen,
                                      dict(condition=condition, pair=f"{i}-{j}", n=n))
    return pd.DataFrame(rows).assign(data=trained.data.name)


def _degenerate_resamples(result, n, bootstrap):
    """Per diagonal cell, whether some bootstrap replicate of a whitening measure has
    canonical correlations forced to 1: its rows of positive weight (the distinct
    observations) span fewer dimensions than the layers' ranks together (rv2dist's
    Poisson counts, drawn from seed 0 and each observation's index)."""
    from rv2dist.core.resampling import poisson_weights

    if "rank_a" not in result.coords:
        return np.zeros(result.sizes["layer_a"], dtype=bool)
    distinct = int((poisson_weights(0, 0, n, bootstrap) > 0).sum(axis=0).min())
    return result.rank_a.values + result.rank_b.values > distinct - 1


def _sensitivity_rows(result, metrics, suffix, bootstrap, chosen, where):
    """Test 4's rows of one call: per layer (diagonal cell) and measure, the value and
    bootstrap interval; NaN where a whitening measure is degenerate (the interval also
    where a replicate is)."""
    resamples = _degenerate_resamples(result, result.attrs["n_obs"], bootstrap)
    rows = []
    for m in metrics:
        values = np.diagonal(defined(result, m)) if m in MEASURES else result[m].values.diagonal()
        low, high = result[f"{m}_low"].values.diagonal(), result[f"{m}_high"].values.diagonal()
        unsure = np.isnan(values) | (resamples if m in WHITENING else False)
        rows += [dict(where, layer=layer, measure=m + suffix, value=float(values[k]),
                      low=np.nan if unsure[k] else float(low[k]), high=np.nan if unsure[k] else float(high[k]),
                      outside=bool(not unsure[k] and not low[k] <= values[k] <= high[k]))
                 for k, layer in enumerate(chosen)]
    return rows


def _sensitivity_call(a, b, metrics, center, config, tally, label, intervals):
    """One rv2dist call of test 4; with ``tally``, its values checked, and its
    bootstrap intervals too where ``intervals`` (the smallest n: each replicate's dense
    Grams cost as much as the call's)."""
    with warnings.catch_warnings():
        # the cells whose whitening measures are degenerate (the smaller n), and the
        # estimates outside their own bootstrap interval, are recorded and reported by
        # _sensitivity_rows and the table: rv2dist's warnings would repeat them per job
        from rv2dist import DegenerateCellWarning, ShiftedIntervalWarning

        warnings.simplefilter("ignore", DegenerateCellWarning)
        warnings.simplefilter("ignore", ShiftedIntervalWarning)
        result = similarity(a, b, metrics, center, bootstrap=config.bootstrap, seed=0)
    _check_matrices(tally, label, result, a, b, metrics, center)
    if tally is not None and intervals:
        tally.intervals(label, result, list(a.values()), list(b.values()), metrics, center, config.bootstrap, seed=0)
    return result
