"""The engine against the dense float64 reference and hoggorm (acceptance 1 and 2)."""

import numpy as np
import pytest

import rv2dist
from conftest import relu_network
from reference import dense_matrix

METRICS = ["rv2", "rv", "cka", "cka_debiased", "rv2_null"]

CASES = [
    # n, widths of a, widths of b
    (4, (1, 3), (2,)),
    (40, (1, 5, 60), (3, 200)),
    (300, (16, 64, 2000), (8, 1200)),  # p >> n
    (2500, (1, 32, 128), (64, 8)),  # p << n
]


def _relative_error(got, want):
    return np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))


# the cases of one test in one test process, where the dense references they share are cached
@pytest.mark.xdist_group("float64 reference")
@pytest.mark.parametrize("n,widths_a,widths_b", CASES)
@pytest.mark.parametrize("route", ["feature", "gram"])
@pytest.mark.parametrize("center", [True, False])
def test_float64_matches_dense_reference(rng, n, widths_a, widths_b, route, center):
    a = relu_network(rng, n, widths_a)
    b = relu_network(rng, n, widths_b, offset=1.0)
    metrics = METRICS if n >= 4 else METRICS
    got = rv2dist.similarity(a, b, metric=metrics, center=center, route=route)
    assert got.attrs["route"] == route
    for metric in metrics:
        want = dense_matrix(a, b, metric, center)
        err = _relative_error(got[metric].values, want)
        assert err < 1e-10, (metric, err)


@pytest.mark.xdist_group("float32 reference")
@pytest.mark.parametrize("n,widths_a,widths_b", CASES[1:])
@pytest.mark.parametrize("route", ["feature", "gram"])
@pytest.mark.parametrize("center", [True, False])
def test_float32_matches_dense_reference(rng, n, widths_a, widths_b, route, center):
    a = relu_network(rng, n, widths_a, dtype=np.float32)
    b = relu_network(rng, n, widths_b, dtype=np.float32, offset=1.0)
    got = rv2dist.similarity(a, b, metric=METRICS, center=center, route=route)
    for metric in METRICS:
        want = dense_matrix(a, b, metric, center)
        err = _relative_error(got[metric].values, want)
        assert err < 2e-5, (metric, err)


@pytest.mark.xdist_group("large means reference")
@pytest.mark.parametrize("route", ["feature", "gram"])
def test_float32_large_means_do_not_cancel(rng, route):
    n = 3000
    base = rng.standard_normal((n, 6))
    a = {
        "x": (1000 + base @ rng.standard_normal((6, 50)) + rng.standard_normal((n, 50))).astype(np.float32),
        "y": (1000 + rng.standard_normal((n, 40))).astype(np.float32),
    }
    b = {"z": (-1000 + base @ rng.standard_normal((6, 30)) + rng.standard_normal((n, 30))).astype(np.float32)}
    got = rv2dist.similarity(a, b, metric=METRICS, route=route)
    for metric in METRICS:
        want = dense_matrix(a, b, metric)
        assert _relative_error(got[metric].values, want) < 2e-5, metric


@pytest.mark.parametrize("route", ["feature", "gram"])
def test_self_job_matches_reference(rng, route):
    a = relu_network(rng, 200, (3, 40, 400))
    got = rv2dist.similarity(a, metric=METRICS, route=route)
    for metric in METRICS:
        assert _relative_error(got[metric].values, dense_matrix(a, a, metric)) < 1e-10


@pytest.mark.parametrize("route", ["feature", "gram"])
def test_uncentred_rv2_equals_hoggorm(rng, route):
    hoggorm = pytest.importorskip("hoggorm")
    a = relu_network(rng, 150, (5, 30, 700))
    b = relu_network(rng, 150, (20, 2))
    got = rv2dist.similarity(a, b, metric="rv2", center=False, route=route)
    arrays = list(a.values()) + list(b.values())
    want = np.asarray(hoggorm.RV2coeff(arrays))[: len(a), len(a) :]
    assert np.max(np.abs(got.values - want)) < 1e-10


def test_hoggorm_on_centred_data_equals_centred_rv2(rng):
    hoggorm = pytest.importorskip("hoggorm")
    a = relu_network(rng, 120, (4, 60))
    centred = [x - x.mean(axis=0) for x in a.values()]
    want = np.asarray(hoggorm.RV2coeff(centred))
    got = rv2dist.similarity(a, metric="rv2").values
    assert np.max(np.abs(got - want)) < 1e-10


def test_rv2_function_matches_reference(rng):
    x = rng.standard_normal((60, 7, 3))
    y = x.reshape(60, -1) @ rng.standard_normal((21, 5)) + rng.standard_normal((60, 5))
    from reference import dense_metric

    assert abs(rv2dist.rv2(x, y) - dense_metric(x, y, "rv2")) < 1e-12
    assert abs(rv2dist.rv2(x, y, center=False) - dense_metric(x, y, "rv2", center=False)) < 1e-12


def test_null_level_matches_permutation_mean(rng):
    from reference import permutation_mean_rv2

    x = np.maximum(rng.standard_normal((30, 4)) + 1, 0)
    y = np.maximum(rng.standard_normal((30, 3)) + 1, 0)
    got = rv2dist.similarity({"x": x}, {"y": y}, metric="rv2_null").values[0, 0]
    want = permutation_mean_rv2(x, y)
    assert abs(got - want) < 0.01


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("center", [True, False])
def test_each_metric_alone_matches_dense_reference(rng, metric, center):
    """A job computes only the sums its metrics need (uncentred rv2, rv and cka skip the
    column sums that rv2_null and the tests read): each metric alone stays exact."""
    a = relu_network(rng, 60, (3, 20))
    b = relu_network(rng, 60, (7,), offset=1.0)
    got = rv2dist.similarity(a, b, metric=metric, center=center)
    assert _relative_error(got.values, dense_matrix(a, b, metric, center)) < 1e-10
    skipped = not rv2dist.plan(a, b, metric=metric, center=center).column_sums
    assert skipped == (metric != "rv2_null")
    # tests need them (rv2_null has no tests of its own: with rv2's)
    tested = [metric] if metric != "rv2_null" else [metric, "rv2"]
    assert rv2dist.plan(a, b, metric=tested, center=center, tests=True).column_sums


SCALES = [
    # dtype, scale of layer l1 of a, whether the answer is computed (else refused)
    ("float64", 1e-70, True),
    ("float64", 1e70, True),
    ("float64", 1e-150, False),  # sums of squares fine, their squares underflow
    ("float64", 1e150, False),  # their squares overflow
    ("float64", 1e-200, False),  # every square underflows
    ("float32", 1e-17, True),
    ("float32", 1e18, True),
    ("float32", 1e20, True),  # squares overflow float32: redone in float64
    ("float32", 1e-21, False),  # squares in the subnormals: bits lost
    ("float32", 1e-25, False),  # every square underflows
]


@pytest.mark.parametrize("dtype,scale,computed", SCALES)
@pytest.mark.parametrize("route", ["feature", "gram"])
def test_badly_scaled_layers_give_the_unscaled_answer_or_a_clear_error(rng, dtype, scale, computed, route):
    """Every metric is scale-invariant: a layer times a constant gives the same matrix,
    unless its sums leave the arithmetic's range, which is then refused by name."""
    a = relu_network(rng, 120, (5, 7), dtype=dtype)
    b = relu_network(rng, 120, (6,), dtype=dtype, offset=1.0)
    metric = ["rv2", "rv", "cka", "cka_debiased"]
    want = rv2dist.similarity(a, b, metric=metric, route=route)
    scaled = dict(a, l1=a["l1"] * a["l1"].dtype.type(scale))
    if computed:
        tolerance = 5e-6 if dtype == "float32" else 1e-12
        got = rv2dist.similarity(scaled, b, metric=metric + ["rv2_null"], route=route)
        for m in metric:
            np.testing.assert_allclose(got[m].values, want[m].values, rtol=0, atol=tolerance)
        itself = rv2dist.similarity(scaled, metric=metric + ["rv2_null"], route=route)
        unscaled = rv2dist.similarity(a, metric=metric + ["rv2_null"], route=route)
        for m in metric + ["rv2_null"]:
            np.testing.assert_allclose(itself[m].values, unscaled[m].values, rtol=0, atol=tolerance)
        return
    advice = r"multiply it by a constant \(no metric depends on a layer's scale\)"
    with pytest.raises(ValueError, match=r"^layer 'l1' of network a .*" + advice):
        rv2dist.similarity(scaled, b, metric=metric, route=route)
    if dtype == "float32" and scale > 1e-30:
        got = rv2dist.similarity(scaled, b, metric=metric, route=route, precision="float64")
        np.testing.assert_allclose(got["rv2"].values, want["rv2"].values, rtol=0, atol=5e-6)
