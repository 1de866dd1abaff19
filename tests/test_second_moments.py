"""Second-moment measures (rv2dist.second_moments) and RSA (rv2dist.rsa) against dense
float64 references from the full data (tests/reference_measures.py), independent
libraries, invariances with exact answers, degeneracy and bad options."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_measures as ref
from rv2dist.core import measures
from rv2dist.core import second_moments as sm

# (n, p, q): p < n; p and q close to n (r_x + r_y > n - 1: some ρ forced to 1)
SHAPES = [(120, 7, 11), (40, 33, 36)]


def _layer(rng, latent, width, offset):
    """Post-ReLU-like units of a shared latent: column means 1e3 to 1e4, spread ~1."""
    mixed = latent @ rng.standard_normal((latent.shape[1], width)) + 0.7 * rng.standard_normal((len(latent), width))
    return np.maximum(mixed + 1.0, 0.0) + (rng.uniform(1e3, 1e4, width) if offset else 0.0)


def _pair_data(rng, n, p, q, offset=True):
    latent = rng.standard_normal((n, 5))
    return _layer(rng, latent, p, offset), _layer(rng, latent, q, offset)


def _blocks(x, y, chunks=3, **options):
    """The pair's blocks as the feature route sums them: products and column sums of
    data shifted by the mean of its first rows, over row chunks, centred at the end."""
    n = len(x)
    shift_x, shift_y = x[:4].mean(axis=0), y[:4].mean(axis=0)
    xx, yy, xy, sx, sy = 0.0, 0.0, 0.0, 0.0, 0.0
    for rows in np.array_split(np.arange(n), chunks):
        a, b = x[rows] - shift_x, y[rows] - shift_y
        xx, yy, xy = xx + a.T @ a, yy + b.T @ b, xy + a.T @ b
        sx, sy = sx + a.sum(axis=0), sy + b.sum(axis=0)
    lx = sm.layer_blocks(sm.centred_cross(xx, sx, sx, n), n, **options)
    ly = sm.layer_blocks(sm.centred_cross(yy, sy, sy, n), n, **options)
    return sm.pair_blocks(lx, ly, sm.centred_cross(xy, sx, sy, n))


MEASURES = {
    "cca": (sm.cca, ref.cca),
    "cca_r2": (sm.cca_r2, ref.cca_r2),
    "svcca": (sm.svcca, ref.svcca),
    "svcca_0.8": (lambda pair: sm.svcca(pair, svcca_variance=0.8), lambda x, y: ref.svcca(x, y, 0.8)),
    "procrustes": (sm.procrustes, ref.procrustes),
    "procrustes_distance": (sm.procrustes_distance, ref.procrustes_distance),
    "linreg": (sm.linreg, ref.linreg),
    "linreg_reversed": (lambda pair: sm.linreg(pair.reversed()), lambda x, y: ref.linreg(y, x)),
    "ridge": (lambda pair: sm.ridge(pair, ridge_lambda=0.3), lambda x, y: ref.ridge(x, y, 0.3)),
    "shape_0": (lambda pair: sm.shape_metric(pair, alpha=0.0), lambda x, y: ref.netrep_shape(x, y, 0.0)),
    "shape_0.4": (lambda pair: sm.shape_metric(pair, alpha=0.4), lambda x, y: ref.netrep_shape(x, y, 0.4)),
    "shape_1": (sm.shape_metric, lambda x, y: ref.netrep_shape(x, y, 1.0)),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("measure", MEASURES)
def test_measure_equals_dense_reference(rng, shape, measure):
    x, y = _pair_data(rng, *shape)
    ours, reference = MEASURES[measure]
    assert ours(_blocks(x, y)) == pytest.approx(reference(x, y), rel=1e-10, abs=1e-13)


def test_reversed_pair_equals_the_pair_built_the_other_way(rng):
    x, y = _pair_data(rng, 60, 5, 8)
    forward, backward = _blocks(x, y), _blocks(y, x)
    assert sm.linreg(forward) != pytest.approx(sm.linreg(backward))
    for measure in (sm.linreg, sm.ridge, sm.pwcca, sm.cca):
        assert measure(forward.reversed()) == pytest.approx(measure(backward), rel=1e-12)


def test_an_svd_that_does_not_converge_is_taken_by_qr_iteration(rng, monkeypatch):
    """LAPACK's divide and conquer (numpy's SVD) may not converge where singular values
    cluster: a bootstrap replicate of a degenerate cell (every canonical correlation 1)
    in benchmarks/grounding.py stopped a job so.  QR iteration (scipy's gesvd) takes
    such a matrix, with the same values."""
    x, y = _pair_data(rng, 60, 6, 9)
    measures = (sm.pwcca, sm.cca, sm.svcca, sm.procrustes, lambda pair: sm.shape_metric(pair, alpha=0.4))
    expected = [measure(_blocks(x, y)) for measure in measures]

    def diverges(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", diverges)
    monkeypatch.setattr(np.linalg, "svdvals", diverges)
    assert [measure(_blocks(x, y)) for measure in measures] == pytest.approx(expected, rel=1e-12)


def test_reversed_pair_reuses_the_canonical_svd(rng):
    """Equal ranks, so PWCCA weights the row layer and differs each way round: the
    reversed pair's transposed SVD gives the other way's value without an SVD."""
    x, y = _pair_data(rng, 60, 6, 6)
    forward, backward = _blocks(x, y), _blocks(y, x)
    forward.canonical
    reversed_pair = forward.reversed()
    assert "canonical" in reversed_pair.__dict__
    assert sm.pwcca(reversed_pair) == pytest.approx(sm.pwcca(backward), rel=1e-10)
    assert sm.pwcca(reversed_pair) == pytest.approx(ref.pwcca(y, x), rel=1e-10)
    assert abs(sm.pwcca(forward) - sm.pwcca(reversed_pair)) > 1e-3


def test_pwcca_equals_the_paper_definition_on_large_means(rng):
    """Canonical variates' loadings on the raw units (Morcos et al. 2018), either side
    carrying the weights; distinct ρ (tied ρ leave a tied group's weights to the SVD)."""
    for p, q in ((7, 11), (11, 7)):
        x, y = _pair_data(rng, 150, p, q)
        assert sm.pwcca(_blocks(x, y)) == pytest.approx(ref.pwcca(x, y), rel=1e-10)


def test_pwcca_equals_google_pwcca_py_where_that_is_well_defined(rng):
    """google/svcca's pwcca.py weights u'(x - m) + m instead of the canonical variates:
    for centred, white x (C_xx = c I) the two coincide; otherwise they differ."""
    x, y = _pair_data(rng, 150, 6, 9, offset=False)
    white = np.linalg.qr(ref.centred(x))[0] * 7.0
    assert sm.pwcca(_blocks(white, y)) == pytest.approx(ref.google_pwcca(white, y), rel=1e-10)
    assert abs(sm.pwcca(_blocks(x, y)) - ref.google_pwcca(x, y)) > 1e-3


def test_canonical_correlations_equal_scipy_qr_and_cca_zoo(rng):
    from cca_zoo.linear import CCA
    from scipy.linalg import qr, svdvals

    x, y = _pair_data(rng, 150, 6, 9)
    rho = np.asarray(_blocks(x, y).canonical.rho)
    qx, qy = (qr(ref.centred(v), mode="economic")[0] for v in (x, y))
    np.testing.assert_allclose(rho, svdvals(qx.T @ qy), rtol=1e-10)
    zx, zy = CCA(n_components=6).fit([x, y]).transform([x, y])
    zoo = [abs(np.corrcoef(zx[:, i], zy[:, i])[0, 1]) for i in range(6)]
    np.testing.assert_allclose(rho, zoo, rtol=1e-9)


def _statistics(x, y, center, route):
    """The engine's sufficient statistics of the pair (x, y) from one route."""
    import dask

    from rv2dist.engine.statistics_graph import build_statistics
    from rv2dist.engine.taskgraph import TaskGraph
    from rv2dist.planning.planner import make_plan

    plan = make_plan(len(x), [("x", x.shape[1])], [("y", y.shape[1])], route=route, memory_budget=2**30)
    graph = TaskGraph("rsa")
    return dask.get(graph.tasks, build_statistics(graph, [[x], [y]], plan, center))


@pytest.mark.parametrize("route", ["feature", "gram"])
def test_rsa_from_the_statistics_of_either_route_equals_n_by_n(rng, route):
    x, y = _pair_data(rng, 50, 9, 6)
    stats = _statistics(x, y, True, route)
    assert measures.MEASURES['rsa'].finalize(stats)[0, 1] == pytest.approx(ref.rsa(x, y), rel=1e-10)
    assert measures.MEASURES['rsa_euclidean'].finalize(stats)[0, 1] == pytest.approx(ref.rsa_euclidean(x, y), rel=1e-10)
    for measure in (measures.MEASURES['rsa'].finalize, measures.MEASURES['rsa_euclidean'].finalize):
        assert np.diag(measure(stats)).tolist() == [1.0, 1.0]
    # raw columns (small means: the mean of uncentred Grams swamps their spread)
    x, y = _pair_data(rng, 50, 9, 6, offset=False)
    assert measures.MEASURES['rsa'].finalize(_statistics(x, y, False, route))[0, 1] == pytest.approx(ref.rsa(x, y, center=False), rel=1e-10)


def test_svcca_keeps_the_fewest_directions_reaching_the_share():
    layer = sm.layer_blocks(np.diag([1.0, 4.0, 2.0, 3.0]), 50)  # shares 0.4, 0.7, 0.9, 1
    dims = {share: sm.svcca_dims(layer, share) for share in (0.1, 0.4, 0.41, 0.7, 0.95, 1.0)}
    assert dims == {0.1: 1, 0.4: 1, 0.41: 2, 0.7: 2, 0.95: 4, 1.0: 4}


def test_rank_at_n_minus_one_forces_every_rho_to_one(rng):
    """Kornblith et al. (2019): a layer of rank n - 1 spans every centred direction."""
    x, y = _pair_data(rng, 30, 8, 29)
    pair = _blocks(x, y)
    assert (pair.x.rank, pair.y.rank) == (8, 29)
    assert sm.forced_ones(pair) == 8
    assert sm.cca(pair) == pytest.approx(1.0, abs=1e-10)
    assert ref.cca(x, y) == pytest.approx(1.0, abs=1e-10)
    assert sm.linreg(pair.reversed()) == pytest.approx(1.0, abs=1e-10)
    assert sm.forced_ones(pair, svcca_variance=0.5) < 8


def test_partial_forcing_counts_the_shared_dimensions(rng):
    n, p, q = SHAPES[1]
    x, y = _pair_data(rng, n, p, q)
    pair = _blocks(x, y)
    expected = p + q - (n - 1)
    assert sm.forced_ones(pair) == expected
    assert np.sum(ref.canonical_correlations(x, y) > 1 - 1e-9) == expected
    assert sm.forced_ones(_blocks(*_pair_data(rng, 120, 7, 11))) == 0


def test_zero_variance_layers_give_nan(rng):
    x, y = _pair_data(rng, 40, 5, 4)
    constant = np.full((40, 3), 1234.5)
    measures = [m for m, _ in MEASURES.values()] + [sm.pwcca]
    for pair in (_blocks(x, constant), _blocks(constant, y), _blocks(constant, constant)):
        assert pair.x.rank == 0 or pair.y.rank == 0
        with np.errstate(all="raise"):
            assert all(math.isnan(m(pair)) for m in measures)
        assert sm.forced_ones(pair) == 0


@pytest.mark.parametrize("option, value", [
    ("alpha", -0.1), ("alpha", 1.5), ("alpha", float("nan")), ("alpha", "0.5"), ("alpha", True),
    ("ridge_lambda", -1e-3), ("ridge_lambda", float("inf")),
    ("svcca_variance", 0.0), ("svcca_variance", 1.01), ("rcond", 1.0), ("rcond", -1e-9),
])
def test_bad_options_raise_naming_option_and_value(rng, option, value):
    pair = _blocks(*_pair_data(rng, 30, 3, 4))
    call = {
        "alpha": lambda: sm.shape_metric(pair, alpha=value),
        "ridge_lambda": lambda: sm.ridge(pair, ridge_lambda=value),
        "svcca_variance": lambda: sm.svcca(pair, svcca_variance=value),
        "rcond": lambda: sm.layer_blocks(np.eye(3), 30, rcond=value),
    }[option]
    with pytest.raises(ValueError, match=rf"{option} must be .*got {value!r}".replace("(", r"\(")):
        call()
    with pytest.raises(ValueError, match=option):
        sm.check_option(option, value)


@pytest.mark.parametrize("ridge_lambda", [1e6, 1e300, 1e308])
def test_ridge_with_a_huge_penalty_is_the_dense_value_without_overflow(rng, ridge_lambda):
    """The penalty's square would overflow past 1e154 (numpy's warning, then 0); at
    1e308 the penalty itself, scaled by the mean eigenvalue, leaves float64: R² 0."""
    x, y = _pair_data(rng, 60, 4, 5, offset=False)
    pair = _blocks(x, y)
    with np.errstate(all="raise"):
        got = sm.ridge(pair, ridge_lambda=ridge_lambda)
    assert got == pytest.approx(ref.ridge(x, y, min(ridge_lambda, 1e300)), rel=1e-9, abs=1e-15)
    assert 0.0 <= got < 1e-5


def test_each_layer_decomposed_once_and_each_svd_shared(rng, monkeypatch):
    """cca, cca_r2 and shape_metric(alpha=0) share the singular values of one SVD,
    pwcca alone asks for its vectors; procrustes, its distance and shape_metric(alpha=1)
    share one more; layers are decomposed before."""
    pair = _blocks(*_pair_data(rng, 60, 5, 7))
    calls = []
    for name in ("svd", "svdvals", "eigh"):
        original = getattr(np.linalg, name)
        monkeypatch.setattr(np.linalg, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    for measure in (sm.cca, sm.cca_r2, sm.pwcca, lambda p: sm.shape_metric(p, alpha=0.0)):
        measure(pair)
    assert calls == ["svdvals", "svd"]
    for measure in (sm.procrustes, sm.procrustes_distance, sm.shape_metric, sm.linreg, sm.ridge):
        measure(pair)
    assert calls == ["svdvals", "svd", "svdvals"]
    # with the vectors known first, the values come from them
    pair = _blocks(*_pair_data(rng, 60, 5, 7))
    calls.clear()
    for measure in (sm.pwcca, sm.cca, sm.cca_r2):
        measure(pair)
    assert calls == ["svd"]


def test_array_api_namespace_gives_numpy_values(rng):
    xps = pytest.importorskip("array_api_strict")
    x, y = _pair_data(rng, 60, 5, 7)
    xc, yc = ref.centred(x), ref.centred(y)
    pairs = [sm.pair_blocks(sm.layer_blocks(to(xc.T @ xc), 60), sm.layer_blocks(to(yc.T @ yc), 60), to(xc.T @ yc))
             for to in (np.asarray, xps.asarray)]
    measures = [m for m, _ in MEASURES.values()] + [sm.pwcca]
    for measure in measures:
        assert measure(pairs[1]) == pytest.approx(measure(pairs[0]), rel=1e-12), measure
        same = [sm.pair_blocks(pair.x, pair.x, None) for pair in pairs]
        assert measure(same[1]) == pytest.approx(measure(same[0]), rel=1e-12, abs=1e-15), measure


def _invertible(rng, p):
    """A random linear map with condition number at most 25."""
    q1, _ = np.linalg.qr(rng.standard_normal((p, p)))
    q2, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q1 @ np.diag(rng.uniform(0.2, 5.0, p)) @ q2


def _orthogonal(rng, p):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


_seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=25, deadline=None)
@given(seed=_seeds, shift=st.floats(-1e3, 1e3), scale=st.floats(1e-3, 1e3))
def test_cca_type_measures_unchanged_by_invertible_maps(seed, shift, scale):
    rng = np.random.default_rng(seed)
    x, y = _pair_data(rng, 50, 4, 6)
    base = _blocks(x, y)
    moved = _blocks(scale * x @ _invertible(rng, 4) + shift, y @ _invertible(rng, 6) - shift)
    for measure in (sm.cca, sm.cca_r2, lambda p: sm.shape_metric(p, alpha=0.0)):
        assert measure(moved) == pytest.approx(measure(base), rel=1e-9, abs=1e-12)
    # the predictors' span only: linreg is unchanged by maps of x, not of y
    predicted = _blocks(scale * x @ _invertible(rng, 4) + shift, y)
    assert sm.linreg(predicted) == pytest.approx(sm.linreg(base), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=_seeds, scale=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3))
def test_procrustes_family_unchanged_by_rotation_and_isotropic_scaling(seed, scale, shift):
    rng = np.random.default_rng(seed)
    x, y = _pair_data(rng, 50, 4, 6)
    base = _blocks(x, y)
    moved = _blocks(scale * x @ _orthogonal(rng, 4) + shift, y @ _orthogonal(rng, 6) / scale)
    for measure in (sm.procrustes, sm.procrustes_distance, sm.shape_metric, sm.svcca, sm.linreg,
                    lambda p: sm.ridge(p, ridge_lambda=0.5)):
        assert measure(moved) == pytest.approx(measure(base), rel=1e-9, abs=1e-12)
    rotated = _blocks(x @ _orthogonal(rng, 4), y @ _orthogonal(rng, 6))
    assert sm.shape_metric(rotated, alpha=0.3) == pytest.approx(sm.shape_metric(base, alpha=0.3), rel=1e-9)
    permuted = _blocks(scale * x[:, ::-1] * np.array([1, -1, 1, -1]), y)
    assert sm.pwcca(permuted) == pytest.approx(sm.pwcca(base), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=_seeds, scale=st.floats(1e-2, 1e2))
def test_rsa_unchanged_by_rotation_and_isotropic_scaling(seed, scale):
    rng = np.random.default_rng(seed)
    x, y = _pair_data(rng, 30, 4, 5)
    base = _statistics(x, y, True, "feature")
    moved = _statistics(scale * x @ _orthogonal(rng, 4) + 7.0, y @ _orthogonal(rng, 5), True, "feature")
    for measure in (measures.MEASURES['rsa'].finalize, measures.MEASURES['rsa_euclidean'].finalize):
        assert measure(moved)[0, 1] == pytest.approx(measure(base)[0, 1], rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=_seeds, n=st.integers(8, 40), p=st.integers(1, 12), alpha=st.floats(0.0, 1.0))
def test_a_layer_against_itself(seed, n, p, alpha):
    """Distances exactly 0 and similarities exactly 1 for the same blocks; to rounding
    for a second copy of the data, held on the cosines: arccos and sqrt near 1 turn a
    rounding error e of the cosine into a distance of sqrt(2e) (1e-6 from e = 5e-13,
    which whitening a direction of eigenvalue 1e-5 of the largest reaches)."""
    rng = np.random.default_rng(seed)
    x = _layer(rng, rng.standard_normal((n, 3)), p, True)
    pair = _blocks(x, x)
    same = sm.pair_blocks(pair.x, pair.x, None)
    assert sm.procrustes_distance(same) == 0.0 == sm.shape_metric(same, alpha=alpha)
    assert sm.cca(same) == sm.procrustes(same) == sm.svcca(same) == sm.pwcca(same) == 1.0
    assert 1.0 - math.cos(sm.procrustes_distance(pair)) < 1e-12
    assert 1.0 - math.cos(sm.shape_metric(pair, alpha=alpha)) < 1e-10
    assert sm.cca(pair) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=_seeds, n=st.integers(6, 30), p=st.integers(1, 30), q=st.integers(1, 30))
def test_forced_ones_count_the_dimensions_shared_by_necessity(seed, n, p, q):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, p)), rng.standard_normal((n, q))
    pair = _blocks(x, y)
    rx, ry = min(p, n - 1), min(q, n - 1)
    assert (pair.x.rank, pair.y.rank) == (rx, ry)
    assert sm.forced_ones(pair) == max(0, min(rx, ry, rx + ry - (n - 1)))
    if sm.forced_ones(pair) == min(rx, ry):
        assert sm.cca(pair) == pytest.approx(1.0, abs=1e-8)
