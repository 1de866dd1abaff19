"""Invariances of the measures through the engine (``rv2dist.similarity`` on in-memory
arrays), drawn by Hypothesis: each example is one job whose layers are a pair of layers
and their transformed copies, so that every cell of the result must hold the same value
(docs/measures.md, "Invariances").  Exact answers, no reference implementation."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rv2dist
from rv2dist.core import feature

_seeds = st.integers(0, 2**32 - 1)
_scales = st.builds(lambda size, sign: sign * size, st.floats(1e-3, 1e3), st.sampled_from([-1.0, 1.0]))
_shifts = st.floats(-1e3, 1e3)
_widths = st.integers(1, 5)
_rows = st.integers(16, 40)  # above p + q + 1: no canonical correlation forced to 1


@pytest.fixture(autouse=True, scope="module")
def _shift_from_the_first_rows():
    """The centring shift from the first 3 rows instead of the mean of all of them (as
    with fewer than feature.SHIFT_ROWS rows): the blocks' centring correction works."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(feature, "SHIFT_ROWS", 3)
        yield


def _pair(rng, n, p, q, means=(1e2, 1e3)):
    """Two layers mixing a shared latent, with noise (full rank, distinct canonical
    correlations) and column means drawn from ``means`` (large by default)."""
    latent = rng.standard_normal((n, 3))
    x = latent @ rng.standard_normal((3, p)) + 0.5 * rng.standard_normal((n, p)) + rng.uniform(*means, p)
    y = latent @ rng.standard_normal((3, q)) + 0.5 * rng.standard_normal((n, q)) + rng.uniform(*means, q)
    return x, y


def _orthogonal(rng, p):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def _invertible(rng, p):
    """A random linear map of condition number at most 25."""
    return _orthogonal(rng, p) @ np.diag(rng.uniform(0.2, 5.0, p)) @ _orthogonal(rng, p)


def _job(a, b, metric, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error", rv2dist.DegenerateCellWarning)  # none is expected here
        return rv2dist.similarity(a, b, metric=metric, progress=False, **options)


def _same(values, name, rel=1e-9, atol=1e-12):
    """Every entry of ``values`` equals the first one (the untransformed pair's)."""
    values = np.asarray(values, dtype=float)
    np.testing.assert_allclose(values, np.full_like(values, values.flat[0]), rtol=rel, atol=atol, err_msg=name)


@settings(max_examples=20, deadline=None)
@given(seed=_seeds, n=_rows, p=_widths, q=_widths, scale=_scales, shift=_shifts)
def test_cca_type_measures_unchanged_by_invertible_linear_maps(seed, n, p, q, scale, shift):
    """cca, cca_r2, svcca keeping every direction (svcca_variance=1: no truncation) and
    shape_metric at alpha=0 depend only on the two column spans: the same in every cell
    of (x, M x) x (y, N y).  linreg only on the predictors' span (rows of the result);
    pwcca's weights only on the layer with fewer directions, so it is unchanged by maps
    of the other layer."""
    rng = np.random.default_rng(seed)
    x, y = _pair(rng, n, p, q)
    a = {"x": x, "x_mapped": scale * x @ _invertible(rng, p) + shift}
    b = {"y": y, "y_mapped": y @ _invertible(rng, q) - shift}
    result = _job(a, b, ["cca", "cca_r2", "svcca", "shape_metric", "linreg", "pwcca"], svcca_variance=1.0, alpha=0.0)
    assert result["rank_a"].values.tolist() == [p, p] and result["rank_b"].values.tolist() == [q, q]
    for name in ("cca", "cca_r2", "svcca", "shape_metric"):
        _same(result[name].values, name)
    np.testing.assert_allclose(result["svcca"].values, result["cca"].values, rtol=1e-12)
    for column in result["linreg"].values.T:
        _same(column, "linreg")
    pwcca = result["pwcca"].values
    for weighted in (pwcca if p <= q else pwcca.T):  # the weighting layer fixed, the other one mapped
        _same(weighted, "pwcca")


# measures of the raw columns under center=False: translations move them
_UNCENTRED = ("rv", "rv2", "rsa")


@settings(max_examples=20, deadline=None)
@given(seed=_seeds, n=_rows, p=_widths, q=_widths, scales=st.tuples(_scales, _scales), shift=_shifts,
       center=st.booleans())
def test_measures_unchanged_by_rotations_and_isotropic_scaling(seed, n, p, q, scales, shift, center):
    """procrustes (scale-normalised: ||C_xy||_* / sqrt(tr C_xx tr C_yy)), its distance,
    shape_metric at alpha=1, linear CKA, RV and RV2 (centred or not), RSA, svcca with
    its truncation, cca, linreg and ridge: the same in every cell of (x, c Q x, c Q x +
    s) x (y, d R y, d R y + t); the translated copies only where the measure centres
    (cka, rsa_euclidean and the second-moment measures always do).  Uncentred, with
    small means: a large mean swamps the spread of uncentred RSA's Gram entries."""
    rng = np.random.default_rng(seed)
    x, y = _pair(rng, n, p, q, means=(1e2, 1e3) if center else (0.0, 2.0))
    moved_x, moved_y = scales[0] * x @ _orthogonal(rng, p), scales[1] * y @ _orthogonal(rng, q)
    a = {"x": x, "x_moved": moved_x, "x_shifted": moved_x + shift}
    b = {"y": y, "y_moved": moved_y, "y_shifted": moved_y - shift}
    metric = ["procrustes", "procrustes_distance", "shape_metric", "cka", "rv", "rv2", "rsa", "rsa_euclidean",
              "svcca", "cca", "linreg", "ridge"]
    result = _job(a, b, metric, center=center)
    for name in metric:
        values = result[name].values
        _same(values if center or name not in _UNCENTRED else values[:2, :2], name)


@settings(max_examples=20, deadline=None)
@given(seed=_seeds, n=_rows, p=_widths, q=_widths, alpha=st.floats(0.0, 1.0), shift=_shifts)
def test_distances_zero_for_a_layer_against_its_rotated_copy_and_symmetric(seed, n, p, q, alpha, shift):
    """procrustes_distance and shape_metric (any alpha: the partial whitening turns with
    the data) are 0 to rounding for a layer against a rotated, shifted copy of itself,
    and d(x, y) = d(y, x); the similarities (rsa_euclidean among them: a correlation of
    distance matrices, not a distance) are 1 there.  Rounding: a cosine 1 - δ gives the
    angle sqrt(2δ), δ a few 1e-16 (1e-8), after whitening up to 1e-14 (1.4e-7)."""
    rng = np.random.default_rng(seed)
    x, y = _pair(rng, n, p, q)
    a = {"x": x, "y": y}
    b = {"x": x @ _orthogonal(rng, p) + shift, "y": y @ _orthogonal(rng, q) - shift}
    similarities = ["procrustes", "cca", "cca_r2", "svcca", "pwcca", "rsa", "rsa_euclidean", "rv2", "cka"]
    result = _job(a, b, ["procrustes_distance", "shape_metric", *similarities], alpha=alpha)
    for name, zero in (("procrustes_distance", 1e-7), ("shape_metric", 1e-7 if alpha == 1.0 else 3e-7)):
        values = result[name].values
        assert np.all(np.diag(values) <= zero), (name, values)
        assert values[0, 1] == pytest.approx(values[1, 0], rel=1e-10), name
        assert values[0, 1] > 1e-3, name  # two different layers are apart
    for name in similarities:
        values = result[name].values
        np.testing.assert_allclose(np.diag(values), 1.0, rtol=0, atol=1e-9, err_msg=name)
        if name != "pwcca":  # its weights come from x in both cells, and are not rotation-invariant
            assert values[0, 1] == pytest.approx(values[1, 0], rel=1e-10), name


@settings(max_examples=10, deadline=None)
@given(seed=_seeds, n=_rows, p=_widths, q=_widths, alpha=st.sampled_from([0.0, 1.0]))
def test_shape_metric_at_its_ends_is_the_procrustes_and_the_cca_angle(seed, n, p, q, alpha):
    """netrep's convention: alpha=1 is arccos(procrustes), the angle whose chord is
    procrustes_distance (sqrt(2 - 2 cos θ) = 2 sin(θ/2)); alpha=0 is
    arccos(Σ ρ_i / sqrt(r_x r_y)) = arccos(cca k / sqrt(r_x r_y)), k = min(r_x, r_y)."""
    rng = np.random.default_rng(seed)
    x, y = _pair(rng, n, p, q)
    result = _job({"x": x}, {"y": y}, ["shape_metric", "procrustes", "procrustes_distance", "cca"], alpha=alpha)
    angle = float(result["shape_metric"].values[0, 0])
    if alpha == 1.0:
        assert angle == pytest.approx(math.acos(result["procrustes"].values[0, 0]), rel=1e-12)
        assert result["procrustes_distance"].values[0, 0] == pytest.approx(2.0 * math.sin(angle / 2.0), rel=1e-10)
    else:
        rx, ry = int(result["rank_a"].values[0]), int(result["rank_b"].values[0])
        cosine = float(result["cca"].values[0, 0]) * min(rx, ry) / math.sqrt(rx * ry)
        assert angle == pytest.approx(math.acos(cosine), rel=1e-12)


def test_shape_metric_between_its_ends_tends_to_them():
    """The partial whitening of 0 < alpha < 1 (a separate formula) meets the two ends
    the way docs/measures.md names them: alpha -> 1 rotations only, alpha -> 0 CCA."""
    x, y = _pair(np.random.default_rng(7), 40, 3, 5)
    ends = _job({"x": x}, {"y": y}, ["procrustes", "cca"])
    rotation_angle = math.acos(ends["procrustes"].values[0, 0])
    cca_angle = math.acos(ends["cca"].values[0, 0] * 3 / math.sqrt(15))
    assert abs(rotation_angle - cca_angle) > 0.1
    for alpha, end in ((1.0 - 1e-9, rotation_angle), (1e-9, cca_angle)):
        assert _job({"x": x}, {"y": y}, "shape_metric", alpha=alpha).values[0, 0] == pytest.approx(end, abs=1e-6)


def test_the_invariances_the_docs_deny_do_not_hold():
    """The "no" entries of docs/measures.md's table, on one example each: svcca's
    truncation, pwcca's weights, procrustes and linreg's target see an invertible map;
    shape_metric between its ends sees an isotropic scaling; pwcca sees a rotation of
    the weighting layer (cca, which sees none of them, as the control)."""
    rng = np.random.default_rng(11)
    x, y = _pair(rng, 40, 4, 5)
    a = {"x": x, "x_stretched": x @ _invertible(rng, 4) @ np.diag([6.0, 1.0, 0.3, 0.2]), "x_scaled": 50.0 * x,
         "x_rotated": x @ _orthogonal(rng, 4)}
    b = {"y": y, "y_stretched": y @ _invertible(rng, 5)}
    result = _job(a, b, ["svcca", "pwcca", "procrustes", "shape_metric", "linreg", "cca"], alpha=0.5,
                  svcca_variance=0.8)

    def moved(name, row, col=0):
        return abs(result[name].values[row, col] - result[name].values[0, 0]) > 1e-3

    _same(result["cca"].values, "cca")
    assert moved("svcca", 1) and moved("pwcca", 1) and moved("procrustes", 1) and moved("linreg", 0, 1)
    assert moved("shape_metric", 2) and not moved("shape_metric", 3)
    assert moved("pwcca", 3)
