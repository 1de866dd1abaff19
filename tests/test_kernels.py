"""Kernels are array-namespace agnostic: numpy and array-api-strict give the same sums."""

import numpy as np
import pytest

from rv2dist.core import feature, feature_totals, gram, resampling, xp

xps = pytest.importorskip("array_api_strict")


def _both(rng):
    chunks = [rng.standard_normal((9, 4)) + 5, rng.standard_normal((9, 3))]
    return chunks, [xps.asarray(c) for c in chunks]


def _host(value):
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_host(v) for v in value]
    if isinstance(value, (bool, int, float)):
        return value
    return xp.to_numpy(value)


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-12)


def test_feature_kernels_agree_across_namespaces(rng):
    np_chunks, x_chunks = _both(rng)
    pieces = [(0, 0, 4), (1, 1, 3)]
    layout = [[(0, 0, 4, 0), (1, 1, 3, 4)]]
    results = []
    for chunks in (np_chunks, x_chunks):
        shifts = [feature.first_rows_mean(c, "float64") for c in chunks]
        norms = []
        slab = feature.shift_slab(chunks, pieces, shifts, "float64", row_norms=norms)
        moments = feature.chunk_moments([slab], layout, 2, [norms])
        sums = feature.chunk_sums(chunks, [layout[0]], shifts, "float64", [(0, (0, 6), 0, (1, 5))], 2)
        # the finalisation's one-transfer copy of the moments keeps every value and shape
        on_host = feature_totals._moments_on_host(moments)
        assert all(isinstance(a, np.ndarray) for a in on_host["colsum"][1] + [on_host["norm_outer"]])
        results.append(_host({"slab": slab, "norms": norms, "moments": moments, "sums": sums, "on_host": on_host}))
    _assert_same(*results)
    assert xp.namespace(x_chunks[0]) is not np


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("center", [True, False])
def test_feature_statistics_agree_across_namespaces(rng, center, weighted):
    """The finalisation batches its device transfers; on a non-numpy namespace it must
    give numpy's statistics for every layer pair of a planned job."""
    from rv2dist.planning.planner import make_plan

    np_chunks = [rng.standard_normal((40, 5)) + 3, rng.standard_normal((40, 7)), rng.standard_normal((40, 2)) * 4]
    plan = make_plan(40, [("a", 5), ("b", 7)], [("c", 2)], memory_budget=8 * 5 * 6 * 6)
    assert len(plan.blocks) > 2  # layers split into pieces across blocks
    weights = resampling.poisson_weights(1, 0, 40, 1)[:, 0] if weighted else None  # a bootstrap replicate
    results = []
    for chunks in (np_chunks, [xps.asarray(c) for c in np_chunks]):
        shifts = [feature.first_rows_mean(c, "float64") if center else None for c in chunks]
        sums = [
            feature.chunk_sums(chunks, plan.blocks, shifts, "float64",
                               [(p.row_block, p.row_range, p.col_block, p.col_range) for p in plan.products[a:b]],
                               plan.n_layers, "column-sums" if g == 0 else "none", weights=weights)
            for g, (a, b) in enumerate(plan.product_groups)
        ]
        results.append(feature_totals.feature_statistics(
            sums, [(p.row_pieces, p.col_pieces) for p in plan.products], [p.mirrored for p in plan.products],
            center))
    for key in ("cross", "rowdot", "trace", "ones", "rowsum_sq", "rowsum_norm", "trace_cubed"):
        np.testing.assert_allclose(getattr(results[1], key), getattr(results[0], key), rtol=1e-12, atol=1e-10)
    assert np.isfinite(results[0].cross[:2, 2]).all()


def test_gram_kernels_agree_across_namespaces(rng):
    np_chunks, x_chunks = _both(rng)
    results = []
    for chunks in (np_chunks, x_chunks):
        shifts = [feature.first_rows_mean(c, "float64") for c in chunks]
        summary = gram.column_summary(chunks, shifts)
        means = gram.column_means(summary, shifts)
        prepared = gram.gram_prepare(chunks, means, "float32")
        tile = gram.gram_tile(prepared, prepared, True)
        # kept tiles (their diagonal back) and the one-block cube of the tests' tr(A^3)
        kept = gram.gram_tile(prepared, prepared, True, keep="tiles")
        cube = gram.gram_cube([[kept]], [[kept]], [[kept]], ([[False]],) * 3, 1)
        results.append(_host({"summary": summary, "tile": tile, "outer": prepared["norm_outer"], "kept": kept,
                              "cube": cube}))
    _assert_same(*results)
    np.testing.assert_array_equal(results[0]["kept"]["inner"], results[0]["tile"])
    for chunk, tiles, cube in zip(np_chunks, results[0]["kept"]["tiles"], results[0]["cube"]):
        centred = chunk - chunk.mean(axis=0)
        np.testing.assert_allclose(tiles, centred @ centred.T, rtol=1e-5, atol=1e-5)
        assert cube == pytest.approx(np.trace(np.linalg.matrix_power(centred @ centred.T, 3)), rel=1e-5)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("input_dtype, dtype", [(np.float64, "float64"), (np.float32, "float32"),
                                                (np.float64, "float32"), (np.float16, "float32")])
def test_slab_row_norms_are_those_of_the_values_written(rng, center, input_dtype, dtype):
    chunks = [(rng.standard_normal((30, 5)) * 3 + 2).astype(input_dtype), rng.standard_normal((30, 4)).astype(input_dtype)]
    pieces = [(0, 1, 5), (1, 0, 4), (0, 0, 1)]
    shifts = ([feature.first_rows_mean(c, dtype) for c in chunks] if center else [None, None])
    norms = []
    slab = feature.shift_slab(chunks, pieces, shifts, dtype, row_norms=norms)
    assert slab.dtype == np.dtype(dtype) and [n.dtype for n in norms] == [slab.dtype] * 3
    offsets = [0, 4, 8, 9]
    for piece, (start, stop) in zip(norms, zip(offsets[:-1], offsets[1:])):
        written = slab[:, start:stop].astype(np.float64)
        np.testing.assert_allclose(piece, (written * written).sum(axis=1), rtol=1e-6 if dtype == "float32" else 1e-14)


@pytest.mark.parametrize("moments", ["column-sums", "row-norms", "none"])
def test_float32_products_that_overflow_where_no_row_norm_does_are_redone_in_float64(rng, moments):
    """Row norms of 1e18-sized values fit float32, their sums over 3,000 rows do not: the
    chunk is redone in float64 (whether or not it sums moments) and equals float64 input's."""
    wide = rng.standard_normal((3000, 2)) * 1e18
    chunks = [wide.astype(np.float32), rng.standard_normal((3000, 3)).astype(np.float32)]
    blocks, products = [[(0, 0, 2, 0), (1, 0, 3, 2)]], [(0, (0, 5), 0, (0, 5))]
    shifts = [feature.first_rows_mean(c, "float32") for c in chunks]
    assert np.isinf(np.float32(1e18) ** 2 * 3000) and np.isfinite(np.float32(1e18) ** 2 * 2)
    got = feature.chunk_sums(chunks, blocks, shifts, "float32", products, 2, moments=moments)
    want = feature.chunk_sums(chunks, blocks, shifts, "float64", products, 2, moments=moments)
    assert got["products"][0].dtype == np.float64
    np.testing.assert_array_equal(got["products"][0], want["products"][0])
    assert np.isfinite(got["products"][0]).all()


def test_combine_sums_moments_and_accumulates_products_in_float64():
    a = {"n": 2, "colsum": [[np.array([1.0])]]}
    b = {"n": 3, "colsum": [[np.array([2.0])]]}
    merged = xp.combine([a, b])
    assert merged["n"] == 5 and merged["colsum"][0][0][0] == 3.0
    parts = [np.full((2, 2), 1e8, np.float32), np.full((2, 2), 1.0, np.float32)]
    total = xp.combine(parts)
    assert total.dtype == np.float64 and total[0, 0] == 1e8 + 1
    assert parts[0][0, 0] == np.float32(1e8)  # inputs untouched
    # chunk sums as chunk_sums returns them: float32 products of one sub-block each
    chunks = [{"products": [p], "moments": None} for p in parts + [parts[1]]]
    merged = xp.combine(chunks)
    assert merged["moments"] is None
    assert merged["products"][0].dtype == np.float64 and merged["products"][0][0, 0] == 1e8 + 2
    assert chunks[0]["products"][0][0, 0] == np.float32(1e8)


@pytest.mark.parametrize("sub_rows, dtype", [(64, np.float32), (16, np.float64)])
def test_chunk_products_of_one_sub_block_keep_the_compute_dtype(rng, sub_rows, dtype):
    """A chunk of one sub-block hands on its product as it is; a longer one sums its
    sub-blocks in float64; both equal X'Y."""
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.standard_normal((40, 2)).astype(np.float32)
    blocks = [[(0, 0, 3, 0)], [(1, 0, 2, 0)]]
    sums = feature.chunk_sums([x, y], blocks, [None, None], "float32", [(0, (0, 3), 1, (0, 2))], 2, sub_rows=sub_rows)
    product = sums["products"][0]
    assert product.dtype == dtype
    np.testing.assert_allclose(product, x.astype(np.float64).T @ y, rtol=1e-5, atol=1e-5)


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value] if isinstance(value, np.ndarray) else []


def _address(array):
    return array.__array_interface__["data"][0]


@pytest.mark.parametrize("scale, sub_rows", [(1.0, 16), (1.0, 64), (3e19, 16)])
def test_chunk_sums_from_kept_buffers_equal_fresh_ones_and_alias_none(rng, scale, sub_rows):
    """Slabs and sub-block products lent from a pool give the same sums as new arrays
    (also when a float32 overflow redoes the chunk in float64); every working array is
    given back, and no returned array shares memory with a kept one (the next task
    reuses those).  Returned float64 sums come back to the pool only once nothing refers
    to them, not while a view of one lives."""
    from rv2dist.engine.buffers import KeptBuffers

    x = (np.abs(rng.standard_normal((50, 5))) * scale).astype(np.float32)
    y = (rng.standard_normal((50, 4)) * scale).astype(np.float32)
    shifts = [x[:3].mean(0), None]
    blocks = [[(0, 0, 5, 0), (1, 0, 4, 5)]]
    products = [(0, (0, 5), 0, (5, 9)), (0, (0, 5), 0, (0, 5))]
    with np.errstate(over="ignore"):
        fresh = feature.chunk_sums([x, y], blocks, shifts, "float32", products, 2, sub_rows=sub_rows)
    pool = KeptBuffers()

    def lent_sums():
        with np.errstate(over="ignore"):
            sums = feature.chunk_sums([x, y], blocks, shifts, "float32", products, 2, sub_rows=sub_rows, buffers=pool)
        _assert_same(_host(sums), _host(fresh))
        kept = [a for arrays in pool._free.values() for a in arrays]
        assert kept and pool.nbytes == sum(a.nbytes for a in kept)
        assert not any(np.shares_memory(leaf, a) for leaf in _leaves(sums) for a in kept)
        return sums["products"]

    first = lent_sums()
    second = lent_sums()  # the first call's sums are still referred to: not reused
    assert not any(np.shares_memory(u, v) for u in first for v in second)
    addresses = {_address(p) for p in first}
    corner = first[0][:1, :1]  # a view outlives its array
    del first, second
    third = lent_sums()
    assert not any(np.shares_memory(corner, p) for p in third)
    if sub_rows < 50 and scale == 1.0:  # float64 sums of several sub-blocks, lent as results
        assert len({_address(p) for p in third} & addresses) == 1  # the one nothing refers to came back
    assert np.isfinite(fresh["products"][0]).all()
