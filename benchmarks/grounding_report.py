"""The tables, findings and figure of benchmarks/grounding.py, from the tests' raw results."""

from __future__ import annotations

import numpy as np

from grounding_tests import MEASURES, NULL, Spread, scores

CCA_FAMILY = ("cca", "cca_r2", "svcca", "pwcca")
# a measure whose values over a seed's deletions span less than this is constant to
# rounding there: Spearman's rho would rank rounding errors, so it is left undefined
CONSTANT = 1e-9


def accuracy_table(trained):
    """Test accuracy of the trained networks and of the same networks untrained."""
    import pandas as pd

    return pd.DataFrame({kind: {name: Spread.of(t.accuracy[kind]) for name, t in trained.items()}
                         for kind in ("trained", "untrained")})


def spread_table(parts):
    """``{(data, networks): {measure: per-seed values}}`` as a table of spreads over seeds."""
    import pandas as pd

    table = pd.DataFrame({key: {m: Spread.of(values) for m, values in per.items()} for key, per in parts.items()}).T
    table.index.names = ["data", "networks"]
    return table


def _spearman(frame, measure):
    """Per seed, Spearman's rho of the measure with the accuracy change; NaN where the
    measure is constant to rounding (:data:`CONSTANT`)."""
    from scipy.stats import spearmanr

    rhos = []
    for _, group in frame.groupby("seed"):
        values = scores(group[measure].to_numpy(), measure)
        constant = np.ptp(values) < CONSTANT
        rhos.append(np.nan if constant else spearmanr(values, group["accuracy_change"]).statistic)
    return rhos


def deletion_table(frames):
    """Test 3: per data set, the rank correlation (over each seed's layers and
    deletions) of every measure with the accuracy change, over leading deletions and
    over all; then each measure's mean over layers after the smallest leading deletion
    and after each low-variance one, with the accuracy change."""
    import pandas as pd

    rows = {}
    for data, frame in frames.items():
        for label, subset in (("Spearman with accuracy change: leading PCs deleted", frame[frame.kind == "leading"]),
                              ("Spearman with accuracy change: all deletions", frame)):
            rows[data, label] = {"accuracy change": "",
                                 **{m: Spread.of(_spearman(subset, m), "constant") for m in MEASURES}}
        leading, trailing = (frame.deletion[frame.kind == kind].unique() for kind in ("leading", "trailing"))
        for label, deletion in [("leading", leading[0]), *(("low-variance", d) for d in trailing)]:
            per_seed = frame[frame.deletion == deletion].groupby("seed")
            rows[data, f"{label}: {deletion}"] = {
                "accuracy change": Spread.of(per_seed.accuracy_change.mean()),
                **{m: Spread.of(per_seed[m].mean()) for m in MEASURES}}
    table = pd.DataFrame(rows).T
    table.index.names = ["data", "row"]
    return table


def _per_pair(curves, n):
    """Mean over layers of each pair's values (and bootstrap widths) at ``n``: NaN
    where a layer has none (a degenerate whitening measure is not averaged away)."""
    at = curves[curves.n == n].assign(width=lambda f: f.high - f.low)
    return at.groupby("pair")[["value", "width"]].mean(skipna=False)


def _first_defined(group):
    """The smallest n at which every layer of every pair has a value (a whitening
    measure has none where canonical correlations are forced to 1), or None."""
    defined = group.groupby("n").value.apply(lambda values: values.notna().all())
    return next((n for n, ok in defined.items() if ok), None)


DEGENERATE = "degenerate"


def _sensitivity_row(group, smallest, whole):
    first = _first_defined(group)
    if first is None:
        return {"n": f"{smallest} -> {whole}", "at first n": DEGENERATE, "at all": DEGENERATE, "change": "",
                "bootstrap width at first n": "", OUTSIDE: ""}
    start, last = _per_pair(group, first), _per_pair(group, whole)
    intervals = group[group.low.notna()]
    return {"n": f"{first} -> {whole}" + (f" ({DEGENERATE} below)" if first > smallest else ""),
            "at first n": Spread.of(start.value), "at all": Spread.of(last.value),
            "change": Spread.of(last.value - start.value) if first < whole else "",
            "bootstrap width at first n": Spread.of(start.width, DEGENERATE),
            OUTSIDE: f"{int(intervals.outside.sum())} of {len(intervals)}"}


# rv2dist's ShiftedIntervalWarning, counted: a resample's duplicated observations shift
# the second-moment measures (docs/statistics.md), and an interval that leaves out its
# own estimate is no confidence interval
OUTSIDE = "estimate outside its interval"


def sensitivity_table(curves):
    """Test 4: per data set, condition and measure, the value at the first n (the
    smallest, or for a whitening measure the smallest at which no layer is degenerate)
    and at the whole held-out set (mean over layers; spread over seed pairs), the
    change between them, the 95 % bootstrap interval's width at the first n
    ("degenerate" where some replicate is), and in how many (layer, pair, n) of all
    with an interval the estimate lies outside it."""
    import pandas as pd

    rows = {}
    for data, frame in curves.items():
        smallest, whole = frame.n.min(), frame.n.max()
        for (condition, measure), group in frame.groupby(["condition", "measure"], sort=False):
            rows[data, condition, measure] = _sensitivity_row(group, smallest, whole)
    table = pd.DataFrame(rows).T
    table.index.names = ["data", "layers", "measure"]
    return table


def _row(finding, measured, value, holds):
    return {"finding (paper)": finding, "measured here as": measured, "value": value, "holds here": bool(holds)}


def _defined(row):
    """The measures of a table row with a value (not "constant" or "degenerate")."""
    return [m for m in MEASURES if isinstance(row[m], Spread)]


def _identification_findings(data, table):
    rows = []
    at = table.loc[(data, "trained")]
    rows.append(_row("Kornblith et al. 2019: linear CKA identifies nearly every layer",
                     f"{data}: share of layers identified by cka (>= 0.9)", f"{at['cka'].mean:.2f}",
                     at["cka"].mean >= 0.9))
    if "linreg" in MEASURES:
        rows.append(_row("Kornblith et al. 2019: linear regression identifies about half",
                         f"{data}: share identified by linreg (0.25 .. 0.75)", f"{at['linreg'].mean:.2f}",
                         0.25 <= at["linreg"].mean <= 0.75))
    family = [m for m in CCA_FAMILY if m in MEASURES]
    if family:
        best = max(family, key=lambda m: at[m].mean)
        rows.append(_row("Kornblith et al. 2019: the CCA family rarely identifies the layer",
                         f"{data}: best share of {', '.join(family)} (<= 0.5)", f"{best} {at[best].mean:.2f}",
                         at[best].mean <= 0.5))
    rivals = [m for m in ("linreg", *family) if m in MEASURES]
    if rivals:
        best = max(rivals, key=lambda m: at[m].mean)
        rows.append(_row("Kornblith et al. 2019: linear CKA identifies more layers than linear regression and CCA",
                         f"{data}: cka's share against the best of {', '.join(rivals)} (larger)",
                         f"cka {at['cka'].mean:.2f}, {best} {at[best].mean:.2f}", at["cka"].mean > at[best].mean))
    return rows


def _monotonicity_finding(data, table):
    at = table.loc[(data, "trained")]
    worst = min(_defined(at), key=lambda m: at[m].mean)
    return _row("Klabunde et al. 2024 (ReSi): similarity falls with the distance between layers",
                f"{data}: lowest mean Spearman over the measures (> 0.5)", f"{worst} {at[worst].mean:.2f}",
                at[worst].mean > 0.5)


def _deletion_findings(data, table):
    at = table.loc[data]
    low = at.loc[[row for row in at.index if row.startswith("low-variance")]]
    lowest = low.index[int(np.argmin([value.mean for value in low["cka"]]))]
    low = at.loc[lowest]
    rows = [_row("Ding et al. 2021: CKA barely moves when low-variance components are deleted (no accuracy cost)",
                 f"{data}: lowest cka over the low-variance deletions (>= 0.99): {lowest[len('low-variance: '):]}, "
                 f"accuracy change {low['accuracy change'].mean:+.3f}", f"{low['cka'].mean:.3f}",
                 low["cka"].mean >= 0.99)]
    family = [m for m in CCA_FAMILY if m in MEASURES]
    if family:
        least = min(family, key=lambda m: low[m].mean)
        rows.append(_row("Ding et al. 2021: the CCA family is over-sensitive to low-variance components",
                         f"{data}: lowest of {', '.join(family)} there (< 0.95)", f"{least} {low[least].mean:.3f}",
                         low[least].mean < 0.95))
    tracking = at.loc["Spearman with accuracy change: all deletions"]
    varying = _defined(tracking)
    worst = min(varying, key=lambda m: tracking[m].mean)
    constant = [m for m in MEASURES if m not in varying]
    rows.append(_row("Ding et al. 2021: a good measure ranks deletions by their accuracy cost",
                     f"{data}: lowest mean Spearman over the measures (> 0.5)"
                     + (f"; constant to rounding, so unranked: {', '.join(constant)}" if constant else ""),
                     f"{worst} {tracking[worst].mean:.2f}", tracking[worst].mean > 0.5))
    return rows


# the |change| with n by which RV2 must beat the others for the claim to hold: below
# it, both are flat within the run's resolution
CLAIM_MARGIN = 0.005


def _claim_findings(data, table):
    rows = []
    measures = table.loc[data].index.get_level_values(1).unique()
    for suffix in [s for s in ("", " uncentred") if f"rv2{s}" in measures]:
        others = [m + suffix for m in ("rv", "cka") if m + suffix in measures]
        for condition in table.loc[data].index.get_level_values(0).unique():
            change = {m: abs(table.loc[(data, condition, m), "change"].mean) for m in [f"rv2{suffix}", *others]}
            rows.append(_row(f"seed study: RV2 depends less on n than {' and '.join(others)}",
                             f"{data}, {condition} layers: |change| from the smallest n to all "
                             f"(rv2's smaller by > {CLAIM_MARGIN})",
                             ", ".join(f"{m} {v:.3f}" for m, v in change.items()),
                             change[f"rv2{suffix}"] + CLAIM_MARGIN < min(change[m] for m in others)))
    return rows


def findings(report):
    """Each paper's finding, how it is measured here, this run's value, and whether it
    holds: computed from the tables, not typed."""
    import pandas as pd

    rows = []
    for data in report.identification.index.get_level_values(0).unique():
        rows += _identification_findings(data, report.identification)
        rows.append(_monotonicity_finding(data, report.monotonicity))
        rows += _deletion_findings(data, report.deletion)
        rows += _claim_findings(data, report.sensitivity)
    return pd.DataFrame(rows)


def _distinct(frame):
    """``{measure: label}`` for the measures of ``frame`` with different curves; a
    measure equal to an earlier one everywhere (centred RV and CKA) joins its label."""
    curves = frame.groupby(["measure", "condition", "n"], sort=False).value.mean()
    labels = {}
    for measure in frame.measure.unique():
        same = next((m for m in labels if np.allclose(curves.loc[m], curves.loc[measure], rtol=0, atol=1e-9)), None)
        if same is None:
            labels[measure] = measure
        else:
            labels[same] += f" = {measure}"
    return labels


def _ticks(sizes):
    """Tick labels for the sizes of test 4, leaving out those too close to the next one."""
    labels, shown = [], None
    for n in sorted(sizes, reverse=True):
        labels.append(str(n) if shown is None or shown / n >= 1.4 else "")
        shown = n if labels[-1] else shown
    return sorted(sizes), labels[::-1]


def curves_figure(curves):
    """Test 4's curves: per data set (rows) and condition (columns), every similarity
    against n (mean over layers and seed pairs; a gap where a whitening measure is
    degenerate) with its mean bootstrap band, the uncentred ones dotted and
    ``rv2_null`` dashed.  The distances are left to the tables: on their own scale,
    and at alpha = 1 both are functions of ``procrustes``."""
    import matplotlib.pyplot as plt

    from grounding_tests import CONDITIONS, DISTANCE

    figure, axes = plt.subplots(len(curves), len(CONDITIONS), figsize=(4 * len(CONDITIONS) + 2.5, 3.2 * len(curves)),
                                squeeze=False, constrained_layout=True)
    colours = plt.get_cmap("tab20").colors
    for row, (data, frame) in zip(axes, curves.items()):
        shown = frame[frame.measure.map(lambda m: MEASURES.get(m.removesuffix(" uncentred")) != DISTANCE)]
        labels = _distinct(shown)
        for ax, condition in zip(row, CONDITIONS):
            means = shown[shown.condition == condition].groupby(["measure", "n"])[["value", "low", "high"]].mean(
                skipna=False)
            for k, (measure, label) in enumerate(labels.items()):
                part = means.loc[measure]
                null, uncentred = measure.startswith(NULL), measure.endswith("uncentred")
                line, = ax.plot(part.index, part.value, "o" + (":" if uncentred else "--" if null else "-"), ms=3,
                                color="k" if null else colours[k % len(colours)], label=label)
                if not null:
                    ax.fill_between(part.index, part.low, part.high, color=line.get_color(), alpha=0.12)
            ax.set_xscale("log")
            ax.set_xticks(*_ticks(frame.n.unique()))
            ax.minorticks_off()
            ax.set_title(f"{data}: {condition} layers")
            ax.set_xlabel("observations n")
        row[0].set_ylabel("mean over layers and pairs")
        row[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return figure
