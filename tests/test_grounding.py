"""The grounding benchmark's own checks can fail: its dense formulas equal the tests'
references, its cross-check catches a wrong value, its deletions delete what they say,
and its tests read the second-moment measures as documented (regressions with the
reference as the target, whitening measures undefined where degenerate)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import reference_measures as ref
import xarray as xr
from reference import dense_matrix, resampled_metric

import rv2dist.core.measures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import grounding_dense as dense  # noqa: E402
import grounding_report  # noqa: E402
import grounding_tests  # noqa: E402

METRICS = list(dense.FORMULAS)
# tests/reference_measures.py's formulas of the second-moment measures (written
# independently: least squares, scipy's orthogonal Procrustes, a transcription of netrep)
SECOND_MOMENTS = {
    "cca": ref.cca, "cca_r2": ref.cca_r2, "svcca": lambda x, y: ref.svcca(x, y, dense.OPTIONS["svcca_variance"]),
    "pwcca": ref.pwcca, "procrustes": ref.procrustes, "procrustes_distance": ref.procrustes_distance,
    "shape_metric": lambda x, y: ref.netrep_shape(x, y, dense.OPTIONS["alpha"]),
    "linreg": lambda x, y: ref.linreg(x, y, dense.OPTIONS["rcond"]),
    "ridge": lambda x, y: ref.ridge(x, y, dense.OPTIONS["ridge_lambda"])}


def _pair(rng):
    """Two networks of 30 observations: narrow layers, and layers wider than n - 1
    (their canonical correlations forced to 1 against any other layer)."""
    a = {"x": rng.random((30, 4)) + 2.0, "y": rng.random((30, 45))}
    b = {"z": rng.random((30, 3)), "w": rng.random((30, 60)) + 1.0}
    return a, b


def _well_posed(rng, n=80):
    """Two networks with every layer narrower than n / 2 and of distinct canonical
    correlations, two layers of equal width (PWCCA weighs the row layer then)."""
    a = {"x": rng.random((n, 4)) + 2.0, "y": rng.standard_normal((n, 12)) @ rng.random((12, 12)) + 5.0}
    b = {"z": rng.random((n, 3)) * 10.0, "w": rng.random((n, 12)) + a["y"][:, :3].sum(axis=1, keepdims=True)}
    return a, b


def _references(a, b, metric, center):
    if metric in SECOND_MOMENTS:
        return np.array([[SECOND_MOMENTS[metric](x, y) for y in b.values()] for x in a.values()])
    if metric == "rsa":
        return np.array([[ref.rsa(x, y, center) for y in b.values()] for x in a.values()])
    if metric == "rsa_euclidean":
        return np.array([[ref.rsa_euclidean(x, y) for y in b.values()] for x in a.values()])
    return dense_matrix(a, b, metric, center)


@pytest.mark.parametrize("center", [True, False])
def test_dense_formulas_equal_the_reference(rng, center):
    a, b = _pair(rng)
    side_a, side_b = dense.Side(a.values()), dense.Side(b.values())
    tied = dense.second_moments(side_a, side_b)["tied"] > 0
    for metric in METRICS:
        ours, expected = dense.matrix(metric, side_a, side_b, center), _references(a, b, metric, center)
        if metric in dense.TIED:  # basis-dependent where canonical correlations tie
            ours, expected = ours[~tied], expected[~tied]
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_second_moment_formulas_equal_the_reference_well_posed(rng, monkeypatch, alpha):
    """Every layer narrower than n - 1, both orientations (a network against itself
    computes each unordered pair once), and the shape metric at several alphas."""
    monkeypatch.setitem(dense.OPTIONS, "alpha", alpha)
    a, b = _well_posed(rng)
    both = {**a, **b}
    side, side_a, side_b = dense.Side(both.values()), dense.Side(a.values()), dense.Side(b.values())
    assert not (dense.second_moments(side, side)["tied"] > 0).any()
    for metric in SECOND_MOMENTS:
        np.testing.assert_allclose(dense.matrix(metric, side_a, side_b, True), _references(a, b, metric, True),
                                   rtol=1e-10, atol=1e-12, err_msg=metric)
        off = ~np.eye(len(both), dtype=bool)  # the diagonal: 1 (0) to rounding, which arccos magnifies
        np.testing.assert_allclose(dense.matrix(metric, side, side, True)[off],
                                   _references(both, both, metric, True)[off], rtol=1e-10, atol=1e-12,
                                   err_msg=metric)


def test_a_direction_below_the_cut_off_counts_as_none(rng):
    """x's third direction carries 1e-10 of the largest variance (below rcond = 1e-8,
    though its singular value, 1e-5, is not): rank 2, as rv2dist and the references
    count it, and the whitening measures ignore it (y is mostly that direction)."""
    u = np.linalg.qr(rng.standard_normal((60, 3)))[0]
    x = u * [1.0, 0.5, 1e-5] @ np.linalg.qr(rng.standard_normal((3, 3)))[0]
    y = u[:, 2:] + 0.1 * rng.standard_normal((60, 2))
    side_x, side_y = dense.Side([x]), dense.Side([y])
    assert side_x.principal(0).rank == ref.basis(x).shape[1] == 2
    for metric in ("cca", "linreg", "svcca", "ridge"):
        np.testing.assert_allclose(dense.matrix(metric, side_x, side_y, True)[0, 0],
                                   SECOND_MOMENTS[metric](x, y), rtol=1e-9, err_msg=metric)
    assert dense.matrix("linreg", side_x, side_y, True)[0, 0] < 0.1


def test_an_svd_that_does_not_converge_is_taken_by_qr_iteration(rng, monkeypatch):
    a, b = _well_posed(rng)
    expected = {m: dense.matrix(m, dense.Side(a.values()), dense.Side(b.values()), True) for m in SECOND_MOMENTS}

    def diverges(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", diverges)
    side_a, side_b = dense.Side(a.values()), dense.Side(b.values())
    for metric in SECOND_MOMENTS:
        np.testing.assert_allclose(dense.matrix(metric, side_a, side_b, True), expected[metric], rtol=1e-12,
                                   err_msg=metric)


def test_forced_ones_count_what_the_ranks_force(rng):
    """x (rank 4), y (29 = n - 1) against z (3), w (29): r_x + r_y - (n - 1) when
    positive, at most the smaller rank; there every canonical correlation is 1 and
    CCA is 1 whatever the data."""
    a, b = _pair(rng)
    side_a, side_b = dense.Side(a.values()), dense.Side(b.values())
    np.testing.assert_array_equal(dense.forced_matrix(side_a, side_b), [[0, 4], [3, 29]])
    cca = dense.matrix("cca", side_a, side_b, True)
    np.testing.assert_allclose(cca[[0, 1, 1], [1, 0, 1]], 1.0, atol=1e-12)
    assert cca[0, 0] < 0.9


def _result(values):
    return xr.Dataset({m: (("layer_a", "layer_b"), v) for m, v in values.items()})


def _shifted(matrix, cell, by):
    shifted = np.array(matrix, dtype=float)
    shifted[cell] += by
    return shifted


def test_tally_catches_a_wrong_cell(rng):
    a, b = _pair(rng)
    side_a, side_b = dense.Side(a.values()), dense.Side(b.values())
    right = {m: dense.matrix(m, side_a, side_b, True) for m in METRICS}
    right["forced_ones"] = dense.forced_matrix(side_a, side_b)
    tally = dense.Tally()
    tally.matrices("right", _result(right), list(a.values()), list(b.values()), METRICS, True)
    # forced ones make every canonical correlation 1 where they are forced: all tied, PWCCA 1
    assert tally.values == (len(METRICS) + 1) * 4 and tally.skipped == 0 and tally.worst < 1e-12
    for metric, cell in (("cka", (1, 1)), ("linreg", (0, 1)), ("procrustes_distance", (1, 0)), ("pwcca", (0, 0)),
                         ("forced_ones", (0, 0))):
        wrong = {**right, metric: _shifted(right[metric], cell, 2 * dense.TOLERANCE if metric != "forced_ones" else 1)}
        with pytest.raises(AssertionError, match=rf"wrong, {metric}: rv2dist gives .* at \({cell[0]}, {cell[1]}\)"):
            dense.Tally().matrices("wrong", _result(wrong), list(a.values()), list(b.values()), METRICS, True)


def test_tally_leaves_out_pwcca_where_canonical_correlations_tie(rng):
    """z holds two combinations of x's units: two canonical correlations are 1, the
    others not, and PWCCA's weights of the tied pair depend on the SVD's basis: that
    cell is left out of the check (and said so), the other is checked."""
    x = rng.standard_normal((50, 5))
    a = {"x": x}
    b = {"z": np.hstack([x[:, :2] @ rng.standard_normal((2, 2)), rng.standard_normal((50, 3))]),
         "w": rng.standard_normal((50, 4))}
    side_a, side_b = dense.Side(a.values()), dense.Side(b.values())
    np.testing.assert_array_equal(dense.second_moments(side_a, side_b)["tied"], [[1.0, 0.0]])
    pwcca = dense.matrix("pwcca", side_a, side_b, True)
    tally = dense.Tally()
    tally.matrices("tied", _result({"pwcca": pwcca + [[0.5, 0.0]]}), list(a.values()), list(b.values()), ["pwcca"],
                   True)
    assert (tally.values, tally.skipped, tally.worst_skipped) == (1, 1, 0.5)
    assert "1 PWCCA values with tied canonical correlations left out (there the two differ by up to 5.0e-01)" \
        in str(tally)
    with pytest.raises(AssertionError, match=r"untied, pwcca: rv2dist gives .* at \(0, 1\)"):
        dense.Tally().matrices("untied", _result({"pwcca": pwcca + [[0.0, 0.5]]}), list(a.values()),
                               list(b.values()), ["pwcca"], True)


def test_tally_checks_only_the_cells_asked_for(rng):
    a, b = _pair(rng)
    right = {"cka": dense.matrix("cka", dense.Side(a.values()), dense.Side(b.values()), True)}
    wrong = {"cka": _shifted(right["cka"], (0, 1), 1.0)}
    tally = dense.Tally()
    tally.matrices("mask", _result(wrong), list(a.values()), list(b.values()), ["cka"], True,
                   cells=np.array([[True, False], [True, True]]))
    assert (tally.values, tally.skipped) == (3, 0)
    with pytest.raises(AssertionError, match=r"all, cka: rv2dist gives .* at \(0, 1\)"):
        dense.Tally().matrices("all", _result(wrong), list(a.values()), list(b.values()), ["cka"], True)


def test_tally_checks_a_network_against_itself_both_ways(rng):
    """One Side for the same arrays; a regression's lower triangle is the other way
    round, so a matrix mirrored from its upper triangle is caught."""
    a, _ = _well_posed(rng)
    layers = list(a.values())
    side = dense.Side(layers)
    right = {m: dense.matrix(m, side, side, True) for m in ("linreg", "pwcca", "cca")}
    dense.Tally().matrices("right", _result(right), layers, layers, list(right), True)
    mirrored = np.triu(right["linreg"]) + np.triu(right["linreg"], 1).T
    with pytest.raises(AssertionError, match=r"mirrored, linreg: rv2dist gives .* at \(1, 0\)"):
        dense.Tally().matrices("mirrored", _result({"linreg": mirrored}), layers, layers, ["linreg"], True)


def test_bootstrap_intervals_are_percentiles_of_resampled_data(rng):
    x, y = rng.random((25, 3)), rng.random((25, 5))
    counts = rng.poisson(1.0, size=(25, 41))
    got, tied = dense.bootstrap_intervals(["rv2", "cka", "linreg"], x, y, True, counts, 0.9)
    assert not tied
    for metric in ("rv2", "cka"):
        replicates = [resampled_metric(x, y, metric, True, counts[:, r]) for r in range(counts.shape[1])]
        np.testing.assert_allclose(got[metric], np.quantile(replicates, [0.05, 0.95]), rtol=1e-12)
    replicates = [ref.linreg(np.repeat(x, c, axis=0), np.repeat(y, c, axis=0)) for c in counts.T]
    np.testing.assert_allclose(got["linreg"], np.quantile(replicates, [0.05, 0.95]), rtol=1e-10)


def test_deletions_remove_the_components_they_name(rng):
    config = type("Config", (), {"leading": (1, 3), "kept": (0.9,)})()
    x = (rng.standard_normal((200, 6)) * [5.0, 3.0, 2.0, 1.0, 0.5, 0.1]).reshape(200, 2, 3)
    made = {name: (kind, d.reshape(200, -1).astype(np.float64))
            for name, kind, d in grounding_tests.deletions(x, config)}
    assert [kind for kind, _ in made.values()] == ["leading", "leading", "trailing"]
    flat = x.reshape(200, -1)
    total = np.linalg.svd(flat - flat.mean(axis=0), compute_uv=False) ** 2
    for name, (kind, d) in made.items():
        left = np.linalg.svd(d - d.mean(axis=0), compute_uv=False) ** 2
        if kind == "leading":
            k = int(name.split()[0])  # the k largest variances are gone, the others stay
            np.testing.assert_allclose(np.sort(left)[::-1][: len(total) - k], total[k:], rtol=1e-4)
        else:  # the leading components holding 90 % of the variance stay, the rest go
            m = int(np.searchsorted(np.cumsum(total) / total.sum(), 0.9)) + 1
            np.testing.assert_allclose(np.sort(left)[::-1][:m], total[:m], rtol=1e-4)
            assert np.all(left[m:] < total[0] * 1e-9)
        np.testing.assert_allclose(d.mean(axis=0), flat.mean(axis=0), atol=1e-5)  # the mean is kept


def test_a_distance_is_negated_and_an_unknown_direction_refused(monkeypatch):
    monkeypatch.setitem(grounding_tests.MEASURES, "procrustes_distance", grounding_tests.DISTANCE)
    np.testing.assert_array_equal(grounding_tests.scores(np.array([0.1, 0.5]), "procrustes_distance"), [-0.1, -0.5])
    monkeypatch.setitem(grounding_tests.MEASURES, "typo", "simlarity")
    with pytest.raises(ValueError, match="MEASURES\\['typo'\\] must be 'similarity' or 'distance'"):
        grounding_tests.scores(np.array([0.1]), "typo")


def test_the_measure_lists_match_rv2dists_table():
    """WHITENING, REGRESSIONS and the directions say what rv2dist's table of measures
    says (a measure added there with other properties must be placed here)."""
    table = rv2dist.core.measures.MEASURES
    measures = grounding_tests.MEASURES
    assert set(grounding_tests.WHITENING) == {m for m in measures if table[m].whitens}
    assert set(grounding_tests.REGRESSIONS) == {m for m in measures if not table[m].symmetric} - {"pwcca"}
    assert {m for m, d in measures.items() if d == grounding_tests.DISTANCE} == \
        {m for m in measures if table[m].kind == "distance"}
    assert set(dense.SECOND_MOMENTS) == {m for m in measures if table[m].family == "blocks"}


def _square(values, forced=None):
    names = [f"s{s}.l{l}" for s in range(2) for l in range(2)]
    made = {m: (("layer_a", "layer_b"), np.asarray(v, dtype=float)) for m, v in values.items()}
    if forced is not None:
        made["forced_ones"] = (("layer_a", "layer_b"), np.asarray(forced))
    return xr.Dataset(made, coords={"layer_a": names, "layer_b": names})


def test_identification_reads_a_regression_with_the_reference_as_target(monkeypatch):
    """Two seeds of two layers.  linreg's cell (x, y) predicts y from x: row s0.l0
    predicts s1.l1 best, but s0.l0 is best predicted from s1.l0, which is what test 1
    counts (Kornblith et al.'s R²_LR)."""
    linreg = np.array([[1.0, 0.2, 0.5, 0.9],
                       [0.2, 1.0, 0.1, 0.95],
                       [0.8, 0.3, 1.0, 0.2],
                       [0.1, 0.7, 0.2, 1.0]])
    monkeypatch.setattr(grounding_tests, "MEASURES", {"linreg": grounding_tests.SIMILARITY,
                                                      "cca": grounding_tests.SIMILARITY})
    result = _square({"linreg": linreg, "cca": linreg}, forced=np.zeros((4, 4), dtype=int))
    shares = grounding_tests.identification(result, 2, ["l0", "l1"])
    assert shares["linreg"] == [1.0, 1.0]  # by columns: s0.l0 from s1.l0 (0.8, not 0.1), ...
    assert shares["cca"] == [0.5, 1.0]  # by rows, as a symmetric measure reads them
    assert shares[f"linreg {grounding_tests.OTHER_WAY}"] == [0.5, 1.0]  # s0.l0 predicts s1.l1 best


def test_whitening_measures_are_undefined_where_forced():
    values = np.full((4, 4), 0.5) + np.eye(4) / 2
    forced = np.zeros((4, 4), dtype=int)
    forced[0, 3] = forced[3, 0] = 2
    result = _square({"cca": values, "procrustes": values}, forced)
    assert np.isnan(grounding_tests.defined(result, "cca")[[0, 3], [3, 0]]).all()
    assert np.isnan(grounding_tests.defined(result, "cca")).sum() == 2
    np.testing.assert_array_equal(grounding_tests.defined(result, "procrustes"), values)


def _curves(values_at):
    """Test 4's rows for one measure, two pairs, two layers, at n = 100, 400, 800."""
    rows = [dict(condition="trained", pair=pair, n=n, layer=layer, measure="cca", value=v, low=v - 0.1, high=v + 0.1,
                 outside=n == 800 and layer == "l0")
            for n, per_layer in values_at.items() for pair in ("0-1", "1-2")
            for layer, v in zip(("l0", "l1"), per_layer)]
    return {"digits": pd.DataFrame(rows)}


def test_sensitivity_starts_where_no_layer_is_degenerate():
    """A whitening measure degenerate at n = 100 (both layers) and 400 (one layer):
    its change runs from 800, not from a mean over the defined layer alone."""
    table = grounding_report.sensitivity_table(_curves({100: (np.nan, np.nan), 400: (np.nan, 0.2),
                                                        800: (0.6, 0.4)}))
    row = table.loc[("digits", "trained", "cca")]
    assert row["n"] == "800 -> 800 (degenerate below)" and row["change"] == ""
    assert str(row["at first n"]) == "0.500 [0.500, 0.500]"
    # estimates outside their own interval, counted over the rows with an interval
    assert row[grounding_report.OUTSIDE] == "2 of 6"
    table = grounding_report.sensitivity_table(_curves({100: (np.nan, 0.1), 400: (0.3, 0.2), 800: (0.6, 0.4)}))
    row = table.loc[("digits", "trained", "cca")]
    assert row["n"] == "400 -> 800 (degenerate below)" and str(row["change"]) == "0.250 [0.250, 0.250]"
    table = grounding_report.sensitivity_table(_curves({n: (np.nan, np.nan) for n in (100, 400, 800)}))
    assert table.loc[("digits", "trained", "cca"), "at first n"] == "degenerate"


def test_a_constant_measure_has_no_rank_correlation():
    frame = pd.DataFrame(dict(seed=[0] * 4, accuracy_change=[-0.1, -0.2, 0.0, -0.3],
                              cca=[1.0, 1.0 - 1e-13, 1.0, 1.0 - 2e-13], cka=[0.9, 0.8, 1.0, 0.7]))
    assert np.isnan(grounding_report._spearman(frame, "cca")[0])
    assert grounding_report._spearman(frame, "cka") == [1.0]
