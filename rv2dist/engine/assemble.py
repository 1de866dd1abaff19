"""The last task of a job: the sufficient statistics of every statistic set (and of
every resampling pass) turned into the labelled result, through the table of measures.

Faults the sums reveal (NaN or Inf, layers out of the arithmetic's range) are errors
naming the layer; layers of zero variance and undefined bootstrap replicates are
recorded in the result's attrs, for the caller to warn of in its own process (a
warning here, on a worker, would go to the worker's stderr).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from rv2dist.core import significance
from rv2dist.core import statistics as stat_checks
from rv2dist.core.block_measures import MeasureOptions
from rv2dist.core.errors import (DegenerateCellWarning, ShiftedIntervalWarning, UndefinedLayerWarning,
                                 UndefinedReplicateWarning)
from rv2dist.core.measures import MEASURES
from rv2dist.planning.options import Resampling


@dataclass(frozen=True)
class ResultSpec:
    """What the result holds and how it is labelled.

    Attributes
    ----------
    measures : tuple of str
        The measures asked for, in order.
    center : bool
        ``center=`` of the call.
    flags : tuple of bool
        The statistic sets computed (centred first), as the keys of their statistics.
    names_a, names_b : tuple of str
        Layer names of the rows and columns.
    networks : (str, str)
        How errors name the two networks.
    single : bool
        One measure and nothing added: a DataArray, not a Dataset.
    resampling : rv2dist.planning.options.Resampling
    digest : str or None
        Digest of the observation ids, recorded with kept replicates.
    measure_options : rv2dist.core.block_measures.MeasureOptions
        Options of the second-moment measures.
    """

    measures: tuple
    center: bool
    flags: tuple
    names_a: tuple
    names_b: tuple
    networks: tuple
    single: bool
    resampling: Resampling
    digest: str | None = None
    measure_options: MeasureOptions = MeasureOptions()

    @property
    def block_measures(self) -> tuple:
        """The measures asked for of the second-moment family."""
        return tuple(name for name in self.measures if MEASURES[name].family == "blocks")


def _check(statistics, plan, networks):
    """Errors naming the first layer whose sums are not finite or out of range."""
    def layer(i):
        # both networks may have a layer of that name
        side = "" if plan.self_job else f" of {networks[0 if i < plan.n_layers_a else 1]}"
        return f"layer {plan.layer_names[i]!r}{side}"

    for stats in statistics:
        bad = [i for i, ok in enumerate(stats.finite) if not ok]
        if bad:
            raise ValueError(f"{layer(bad[0])} contains NaN or Inf (or values too large to sum in float64)")
        faults = [(i, fault) for i, fault in
                  enumerate(stat_checks.scale_faults(stats, plan.widths, plan.compute_dtype)) if fault]
        if faults:
            i, fault = faults[0]
            wider = ", or pass precision='float64'" if plan.compute_dtype == "float32" else ""
            raise ValueError(f"{layer(i)} {fault}; multiply it by a constant (no metric depends on a layer's "
                             f"scale){wider}")


def _self_layouts(statistics, resampled, plan):
    """A self job's statistics with each pair's two cells one value (not the permuted
    sets: a layer against another's shuffled rows is no symmetric pair, and those come
    as the network against a permuted copy, twice its layers)."""
    statistics = {flag: stat_checks.symmetrised(stats) for flag, stats in statistics.items()}
    changed = {}
    if "bootstrap" in resampled:
        changed["bootstrap"] = {flag: [stat_checks.symmetrised(r) for r in sets]
                                for flag, sets in resampled["bootstrap"].items()}
    if "permutation" in resampled:
        changed["permutation"] = {flag: [stat_checks.against_copy(r, plan.n_layers_a) for r in sets]
                                  for flag, sets in resampled["permutation"].items()}
    return statistics, {**resampled, **changed}


def _significance(name, values, stats, permuted, replicates, block, self_job, resampling):
    """``{suffix: (La, Lb) array}``: the tests, permutation p-values and bootstrap
    interval of measure ``name`` from its full matrix ``values``, the statistics, the
    permuted statistics and the bootstrap replicates (already of the result's cells);
    ``block`` the result's rows and columns of the full matrices."""
    rows, cols = block
    tested = name in significance.TESTED
    extra = {}
    if resampling.tests and tested:
        mean, variance = significance.null_moments(name, stats)
        extra["z"] = significance.z_scores(values, mean, variance)[rows, cols]
        extra["p"] = significance.upper_p(extra["z"], significance.skewness(stats)[rows, cols])
        extra["p_corrected"] = significance.corrected_matrix(extra["p"], self_job, resampling.correction)
    if resampling.permutations and tested:
        extra["p_permutation"] = significance.permutation_p(name, stats, permuted)[rows, cols]
    if resampling.bootstrap:
        extra["low"], extra["high"] = significance.percentile_interval(replicates, resampling.confidence)
    return extra


def _block_significance(measure, observed, permuted, replicates, resampling):
    """The permutation p-values and bootstrap interval of a second-moment measure from
    its values (``observed``), those of its permutations and of its replicates; a
    distance is more extreme where it is smaller."""
    extra = {}
    if resampling.permutations:
        sign = -1.0 if measure.kind == "distance" else 1.0
        with np.errstate(invalid="ignore"):
            # a permutation that reproduces the observed value counts, despite rounding
            exceed = sum(sign * values >= sign * observed - 1e-12 * np.abs(observed) for values in permuted)
        p = (1.0 + exceed) / (len(permuted) + 1.0)
        p[np.isnan(observed)] = np.nan
        extra["p_permutation"] = p
    if resampling.bootstrap:
        extra["low"], extra["high"] = significance.percentile_interval(replicates, resampling.confidence)
    return extra


class _Variables:
    """The result's variables, labelled alike: dims ``(layer_a, layer_b)`` (and
    ``replicate``), layer coordinates, ``long_name`` and ``description``."""

    def __init__(self, spec):
        import xarray as xr

        self.xr, self.spec, self.made = xr, spec, {}
        self.coords = {"layer_a": ("layer_a", list(spec.names_a), {"long_name": "layer of network a"}),
                       "layer_b": ("layer_b", list(spec.names_b), {"long_name": "layer of network b"})}

    def add(self, values, name, long_name, description, **attrs):
        self.made[name] = self.xr.DataArray(values, dims=("layer_a", "layer_b"), coords=self.coords, name=name,
                                            attrs={"long_name": long_name, "description": description, **attrs})

    def add_replicates(self, name, replicates):
        bootstrap = self.spec.resampling.bootstrap
        self.made[f"{name}_replicates"] = self.xr.DataArray(
            replicates, dims=("replicate", "layer_a", "layer_b"), name=f"{name}_replicates",
            coords={**self.coords, "replicate": ("replicate", np.arange(len(replicates)),
                                                 {"long_name": "bootstrap replicate"})},
            attrs={"long_name": f"bootstrap replicates of {name}", "metric": name,
                   "description": significance.REPLICATES_DESCRIPTION.format(bootstrap=bootstrap)})

    def add_significance(self, name, extra, undefined_replicates, observed):
        resampling = self.spec.resampling
        # (with fewer replicates than the confidence needs, FewReplicatesWarning has said the ends are extremes)
        counted = "low" in extra and resampling.bootstrap >= significance.fewest_replicates(resampling.confidence)
        outside = significance.estimates_outside(observed, extra["low"], extra["high"]) if counted else 0
        for suffix, array in extra.items():
            long_name, description = significance.DESCRIPTIONS[suffix]
            more = {"correction": resampling.correction} if suffix == "p_corrected" else {}
            if suffix in ("p", "p_corrected"):
                more["floor"] = significance.P_FLOOR
            if suffix in ("low", "high") and undefined_replicates:
                description += significance.LEFT_OUT
                more["undefined_replicates"] = undefined_replicates
            if suffix in ("low", "high") and outside:
                description += significance.OUTSIDE
                more["estimate_outside"] = outside
            self.add(array, f"{name}_{suffix}", f"{long_name} of {name}", description.format(
                correction=resampling.correction, permutations=resampling.permutations,
                bootstrap=resampling.bootstrap, confidence=resampling.confidence,
                undefined=undefined_replicates, outside=outside, floor=significance.P_FLOOR), metric=name, **more)


def _measure(variables, name, statistics, resampled, plan, block):
    """Add measure ``name``'s matrix and everything its significance adds (a measure of
    the RV family)."""
    spec, (rows, cols) = variables.spec, block
    measure = MEASURES[name]
    centred = measure.centred(spec.center)
    stats = statistics[centred]
    values = measure.matrix(stats)
    variables.add(values[rows, cols], name, measure.long_name, measure.description, metric=name,
                  center=int(centred))
    resampling = spec.resampling
    replicates = (np.stack([measure.matrix(r)[rows, cols] for r in resampled["bootstrap"][centred]])
                  if resampling.bootstrap else None)
    undefined = significance.undefined_replicates(replicates, values[rows, cols]) if resampling.bootstrap else 0
    extra = _significance(name, values, stats, resampled.get("permutation", {}).get(centred), replicates, block,
                          plan.self_job, resampling)
    variables.add_significance(name, extra, undefined, values[rows, cols])
    if resampling.keep_replicates:
        variables.add_replicates(name, replicates)


def _block_measure(variables, name, block_values, resampled_values, plan):
    """Add second-moment measure ``name``'s matrix (with the options it was computed
    with in its attrs: its own and the eigenvalue cut-off), permutation p-values and
    interval."""
    measure, resampling, options = MEASURES[name], variables.spec.resampling, variables.spec.measure_options
    observed = block_values.values[name]
    variables.add(observed, name, measure.long_name, measure.description, metric=name, center=1,
                  **{key: getattr(options, key) for key in measure.options}, rcond=options.cut_off(plan.compute_dtype))
    replicates = (np.stack([values.values[name] for values in resampled_values["bootstrap"]])
                  if resampling.bootstrap else None)
    permuted = [values.values[name] for values in resampled_values.get("permutation", ())]
    undefined = significance.undefined_replicates(replicates, observed) if resampling.bootstrap else 0
    variables.add_significance(name, _block_significance(measure, observed, permuted, replicates, resampling),
                               undefined, observed)
    if resampling.keep_replicates:
        variables.add_replicates(name, replicates)


def _ranks(variables, block_values, plan):
    """The layers' ranks as coordinates, and the cells whose whitening measures are
    forced towards 1 (a variable, and the attr the caller warns from)."""
    la = len(variables.spec.names_a)
    ranks_a, ranks_b = block_values.ranks[:la], block_values.ranks[la:]
    described = {"long_name": "numerical rank", "description": "rank of the layer's centred covariance (eigenvalues "
                 "above rcond times the largest): at most the number of observations minus 1"}
    variables.add(block_values.forced, "forced_ones", "canonical correlations forced to 1",
                  f"how many canonical correlations of the cell are 1 whatever the data: the two layers' ranks "
                  f"together exceed n - 1 = {int(plan.n_obs) - 1} (Kornblith et al. 2019); CCA-type measures and "
                  "regression of such a cell say nothing of the layers")
    for name in list(variables.made):
        variables.made[name] = variables.made[name].assign_coords(
            rank_a=("layer_a", list(ranks_a), described), rank_b=("layer_b", list(ranks_b), described))
    names_a, names_b = variables.spec.names_a, variables.spec.names_b
    return sorted({f"{names_a[i]} x {names_b[j]}" for i, j in zip(*np.nonzero(block_values.forced))})


def _degenerate(variables, block_values, plan, spec):
    """Ranks and forced ones of a job with second-moment measures; the cells a
    whitening measure cannot tell apart (none without such measures)."""
    if block_values is None:
        return []
    cells = _ranks(variables, block_values, plan)
    return cells if any(MEASURES[name].whitens for name in spec.block_measures) else []


def _attrs(spec, plan, undefined):
    resampling = spec.resampling
    attrs = {"n_obs": int(plan.n_obs), "center": int(bool(spec.center)), "route": plan.route,
             "precision": plan.compute_dtype, "device": plan.device}
    if undefined:
        attrs.update(undefined_layers=undefined)
    if resampling.tests:
        attrs.update(tests=1, correction=resampling.correction)
    if resampling.resampled:
        attrs.update(seed=resampling.seed)
    if resampling.permutations:
        attrs.update(permutations=resampling.permutations)
    if resampling.bootstrap:
        attrs.update(bootstrap=resampling.bootstrap, confidence=resampling.confidence)
    if spec.digest is not None:
        attrs.update(obs_digest=spec.digest)
    return attrs


def assemble(statistics, block_values, kinds, resampled, resampled_values, spec, plan):
    """The result (a DataArray for ``spec.single``, else a Dataset).

    ``statistics``: per flag of ``spec.flags``, the job's statistics; ``block_values``
    the :class:`~rv2dist.core.block_measures.BlockValues` of its second-moment measures
    (None without); ``kinds``, ``resampled`` and ``resampled_values``: per resampling
    kind, the list (per flag) of its passes' statistics and second-moment values (task
    arguments hold keys in lists only: dask does not look inside dicts).
    """
    statistics = dict(zip(spec.flags, statistics))
    resampled = {kind: dict(zip(spec.flags, sets)) for kind, sets in zip(kinds, resampled)}
    # the second-moment measures are of centred data: the first statistic set's passes
    resampled_values = {kind: sets[0] for kind, sets in zip(kinds, resampled_values)}
    _check(statistics.values(), plan, spec.networks)
    undefined = sorted({plan.layer_names[i] for stats in statistics.values() for i, u in enumerate(stats.undefined)
                        if u})
    if plan.self_job:
        statistics, resampled = _self_layouts(statistics, resampled, plan)
    la = plan.n_layers_a
    block = (slice(0, la), slice(0, la) if plan.self_job else slice(la, plan.n_layers))
    variables = _Variables(spec)
    for name in spec.measures:
        if MEASURES[name].family == "blocks":
            _block_measure(variables, name, block_values, resampled_values, plan)
        else:
            _measure(variables, name, statistics, resampled, plan, block)
    degenerate = _degenerate(variables, block_values, plan, spec)
    attrs = _attrs(spec, plan, undefined)
    if degenerate:
        attrs.update(degenerate_cells=degenerate)
    if spec.single:
        result = variables.made[spec.measures[0]]
        result.attrs.update(attrs)
        return result
    dataset = variables.xr.Dataset(variables.made)
    dataset.attrs.update(attrs, metric=list(spec.measures))
    return dataset


def _undefined_message(names, center):
    return (f"layer(s) {', '.join(map(repr, names))} have zero variance"
            f"{'' if center else ' (or are all zeros, or too small to square)'}: their rows/columns are NaN")


def undefined_message(result):
    """What a result's ``undefined_layers`` attr says, as the warning puts it (None
    when every layer is defined)."""
    names = list(result.attrs.get("undefined_layers", ()))
    return _undefined_message(names, bool(result.attrs.get("center", 1))) if names else None


def replicates_message(result):
    """What the ``undefined_replicates`` attrs of a result's interval variables say, in
    one sentence (None when every bootstrap replicate was defined)."""
    variables = result.data_vars.values() if hasattr(result, "data_vars") else ()
    counts = {v.attrs["metric"]: v.attrs["undefined_replicates"] for v in variables
              if "undefined_replicates" in v.attrs and v.name.endswith("_low")}
    if not counts:
        return None
    listed = ", ".join(f"{metric}: {count:,}" for metric, count in counts.items())
    return (f"bootstrap replicates whose weights leave a metric undefined (too few weighted observations, or a "
            f"layer without variance in the resample) are left out of the intervals ({listed} of "
            f"{result.attrs.get('bootstrap', '?'):,})")


def shifted_message(result):
    """What the ``estimate_outside`` attrs of a result's interval variables say (None
    when every estimate lies inside its interval)."""
    variables = result.data_vars.values() if hasattr(result, "data_vars") else ()
    counts = {v.attrs["metric"]: (v.attrs["estimate_outside"], v.size) for v in variables
              if "estimate_outside" in v.attrs and v.name.endswith("_low")}
    if not counts:
        return None
    listed = ", ".join(f"{metric} in {count:,} of {cells:,} cells" for metric, (count, cells) in counts.items())
    return (f"estimates outside their own bootstrap intervals ({listed}): a resample's duplicated observations "
            "shift these measures (docs/statistics.md), so those intervals are no confidence intervals")


def degenerate_message(result):
    """What a result's ``degenerate_cells`` attr says (None when there are none)."""
    cells = list(result.attrs.get("degenerate_cells", ()))
    if not cells:
        return None
    listed = ", ".join(cells[:5]) + (f" and {len(cells) - 5} more" if len(cells) > 5 else "")
    return (f"{listed}: the layers' ranks together exceed the {result.attrs.get('n_obs', '?')} observations less "
            "one, so canonical correlations are 1 whatever the data and CCA-type measures and regression say nothing "
            "there (the forced_ones variable counts them); use more observations, or Procrustes, CKA or RV2")


def warn_undefined(result, stacklevel=2):
    """Warn of the layers a computed result marks undefined (its ``undefined_layers``
    attr), of bootstrap replicates left out of its intervals, of intervals that leave
    out their estimate and of cells whose whitening measures are degenerate, in the
    caller's process: the task that found them may have run on a worker."""
    for message, category in ((undefined_message(result), UndefinedLayerWarning),
                              (replicates_message(result), UndefinedReplicateWarning),
                              (shifted_message(result), ShiftedIntervalWarning),
                              (degenerate_message(result), DegenerateCellWarning)):
        if message:
            warnings.warn(message, category, stacklevel=stacklevel + 1)
