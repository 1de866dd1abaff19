"""The grounding benchmark's own checks can fail: its dense formulas equal the tests'
references, its cross-check catches a wrong value, its deletions delete what they say."""

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from reference import dense_matrix, resampled_metric
from reference_measures import rsa, rsa_euclidean

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import grounding_dense as dense  # noqa: E402
import grounding_tests  # noqa: E402

METRICS = list(dense.FORMULAS)


def _pair(rng):
    a = {"x": rng.random((30, 4)) + 2.0, "y": rng.random((30, 45))}
    b = {"z": rng.random((30, 3)), "w": rng.random((30, 60)) + 1.0}
    return a, b


@pytest.mark.parametrize("center", [True, False])
def test_dense_formulas_equal_the_reference(rng, center):
    a, b = _pair(rng)
    references = {"rsa": lambda x, y: rsa(x, y, center), "rsa_euclidean": rsa_euclidean}
    for metric in METRICS:
        ours = dense.matrix(metric, dense.Side(a.values()), dense.Side(b.values()), center)
        if metric in references:
            expected = [[references[metric](x, y) for y in b.values()] for x in a.values()]
        else:
            expected = dense_matrix(a, b, metric, center)
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def _result(values):
    return xr.Dataset({m: (("layer_a", "layer_b"), v) for m, v in values.items()})


def test_tally_catches_a_wrong_cell(rng):
    a, b = _pair(rng)
    right = {m: dense.matrix(m, dense.Side(a.values()), dense.Side(b.values()), True) for m in METRICS}
    tally = dense.Tally()
    tally.matrices("right", _result(right), list(a.values()), list(b.values()), METRICS, True)
    assert tally.values == len(METRICS) * 4 and tally.worst < 1e-12
    wrong = {**right, "cka": right["cka"] + np.array([[0.0, 0.0], [0.0, 2 * dense.TOLERANCE]])}
    with pytest.raises(AssertionError, match=r"wrong, cka: rv2dist gives .* at \(1, 1\)"):
        tally.matrices("wrong", _result(wrong), list(a.values()), list(b.values()), METRICS, True)


def test_bootstrap_intervals_are_percentiles_of_resampled_data(rng):
    x, y = rng.random((25, 3)), rng.random((25, 5))
    counts = rng.poisson(1.0, size=(25, 41))
    got = dense.bootstrap_intervals(["rv2", "cka"], x, y, True, counts, 0.9)
    for metric in ("rv2", "cka"):
        replicates = [resampled_metric(x, y, metric, True, counts[:, r]) for r in range(counts.shape[1])]
        np.testing.assert_allclose(got[metric], np.quantile(replicates, [0.05, 0.95]), rtol=1e-12)


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
