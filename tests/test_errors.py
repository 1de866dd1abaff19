"""Bad input raises clear errors naming the layer or value; undefined layers give NaN."""

import warnings

import dask.array as da
import numpy as np
import pytest

import rv2dist


@pytest.fixture
def good(rng):
    return {"c1": rng.standard_normal((20, 3)), "c2": rng.standard_normal((20, 4))}


def test_observation_counts_differ(good, rng):
    with pytest.raises(ValueError, match=r"'fc1' has 19 observations.*'c1' has 20"):
        rv2dist.similarity(good, {"fc1": rng.standard_normal((19, 2))})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("route", ["feature", "gram"])
@pytest.mark.parametrize("lazy", [False, True])
def test_nan_or_inf_names_the_layer(good, bad, route, lazy):
    good["c2"][7, 1] = bad
    layers = {k: da.from_array(v, chunks=(5, -1)) for k, v in good.items()} if lazy else good
    with pytest.raises(ValueError, match=r"layer 'c2' contains NaN or Inf"):
        rv2dist.similarity(layers, route=route)
    # two networks with the same layer names: the message says which one (and, for a
    # store, its path: test_store_cli)
    with pytest.raises(ValueError, match=r"layer 'c2' of network b contains NaN or Inf"):
        rv2dist.similarity({"c1": good["c1"], "c2": good["c1"] * 2 + 1}, layers, route=route)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("extra", [{}, {"bootstrap": 3, "permutations": 2}])
def test_nan_or_inf_names_the_layer_for_second_moment_measures(good, bad, lazy, extra):
    """A layer's block holding NaN or Inf is not decomposed (LAPACK would fail with
    'Eigenvalues did not converge', naming nothing): the job's check names the layer."""
    good["c2"][7, 1] = bad
    layers = {k: da.from_array(v, chunks=(5, -1)) for k, v in good.items()} if lazy else good
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rv2dist.FewReplicatesWarning)
        with pytest.raises(ValueError, match=r"layer 'c2' contains NaN or Inf"):
            rv2dist.similarity(layers, metric=["cca", "procrustes", "ridge"], **extra)


@pytest.mark.parametrize("scale", [1e155, 1e300])
def test_sums_past_float64_name_the_layer_for_second_moment_measures(good, scale):
    good["c2"] = good["c2"] * scale
    with pytest.raises(ValueError, match=r"layer 'c2' contains NaN or Inf \(or values too large to sum in float64\)"):
        rv2dist.similarity(good, metric=["procrustes", "linreg"])


def test_non_numeric_dtype(good):
    good["c2"] = np.array([["a"] * 3] * 20)
    with pytest.raises(TypeError, match=r"layer 'c2' has dtype <U1"):
        rv2dist.similarity(good)
    with pytest.raises(TypeError, match=r"layer 'z'.*complex128"):
        rv2dist.similarity({"z": np.ones((5, 2), dtype=complex)})


def test_layer_with_no_units(good):
    good["c3"] = np.zeros((20, 0))
    with pytest.raises(ValueError, match=r"layer 'c3' has no units"):
        rv2dist.similarity(good)


def test_unknown_metric_route_precision_layer(good):
    with pytest.raises(ValueError, match=r"unknown metric 'rv3'"):
        rv2dist.similarity(good, metric="rv3")
    with pytest.raises(ValueError, match=r"metric 'cka' is asked for more than once"):
        rv2dist.similarity(good, metric=["cka", "rv2", "cka"])
    with pytest.raises(ValueError, match=r"unknown route 'fast'"):
        rv2dist.similarity(good, route="fast")
    with pytest.raises(ValueError, match=r"unknown precision 'half'"):
        rv2dist.similarity(good, precision="half")
    with pytest.raises(ValueError, match=r"no layer 'fc9'"):
        rv2dist.similarity(good, layers=["c1", "fc9"])


def test_bad_containers(good):
    with pytest.raises(TypeError, match="a must be a mapping .*, a sequence of arrays, .*; got set"):
        rv2dist.similarity({np.ones(3).tobytes()})
    with pytest.raises(ValueError, match="no layers"):
        rv2dist.similarity({})
    with pytest.raises(ValueError, match="at least 4 observations"):
        rv2dist.similarity({"x": np.ones((3, 2))}, metric="cka_debiased")


@pytest.mark.parametrize("route", ["feature", "gram"])
def test_zero_variance_layer_gives_nan_and_one_warning(good, route):
    good["flat"] = np.full((20, 5), 3.25)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rv2dist.similarity(good, metric=["rv2", "cka"], route=route)
    relevant = [w for w in caught if issubclass(w.category, rv2dist.UndefinedLayerWarning)]
    assert len(relevant) == 1 and "'flat'" in str(relevant[0].message)
    for metric in ("rv2", "cka"):
        m = got[metric].values
        assert np.all(np.isnan(m[2, :])) and np.all(np.isnan(m[:, 2]))
        assert np.all(np.isfinite(m[:2, :2]))


def test_zero_variance_on_a_cluster_warns_once_in_the_client(good):
    from distributed import Client, LocalCluster

    good["flat"] = np.full((20, 5), 3.25)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rv2dist.similarity(good, client=client)
    relevant = [w for w in caught if issubclass(w.category, rv2dist.UndefinedLayerWarning)]
    assert len(relevant) == 1 and "'flat'" in str(relevant[0].message)
    assert got.attrs["undefined_layers"] == ["flat"] and np.all(np.isnan(got.values[2]))


def test_uncentred_constant_layer_is_defined_but_zero_layer_is_not(good):
    good["flat"] = np.full((20, 5), 3.25)
    good["zero"] = np.zeros((20, 2))
    with pytest.warns(rv2dist.UndefinedLayerWarning, match="'zero'"):
        got = rv2dist.similarity(good, metric="rv", center=False)
    assert np.isfinite(got.values[2, 2]) and np.all(np.isnan(got.values[3]))


def test_dask_array_of_unknown_size_is_named(good):
    x = da.from_array(good["c1"], chunks=5)
    unknown = x[x[:, 0] > -np.inf]  # boolean indexing leaves the row count unknown
    with pytest.raises(ValueError, match=r"layer 'u' is a dask array of unknown size \(nan, 3\).*compute_chunk_sizes"):
        rv2dist.similarity({"u": unknown}, good)


def test_sparse_tensor_is_named(good):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"layer 's' is a tensor of layout torch.sparse_coo; pass it dense"):
        rv2dist.similarity({"s": torch.tensor(good["c1"]).to_sparse()}, good)


def test_names_for_a_sequence_are_checked(good):
    arrays = list(good.values())
    # one name twice would keep only the last array of it in a mapping
    with pytest.raises(ValueError, match=r"a: layer name 'x' is given to more than one array"):
        rv2dist.similarity(arrays, names=["x", "x"])
    pair = rv2dist.similarity(arrays, arrays[:1], names=[["p", "q"], ["r"]])
    assert list(pair.layer_a.values) == ["p", "q"] and list(pair.layer_b.values) == ["r"]
    np.testing.assert_array_equal(pair.values, rv2dist.similarity(good, {"r": good["c1"]}).values)


def test_a_lazy_result_names_undefined_layers_in_its_attrs(good):
    good["flat"] = np.zeros((20, 2))
    lazy = rv2dist.similarity(good, compute=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rv2dist.UndefinedLayerWarning)
        got = lazy.compute()
    assert got.attrs["undefined_layers"] == ["flat"] and np.all(np.isnan(got.values[2]))
    with pytest.warns(rv2dist.UndefinedLayerWarning, match="'flat'"):
        rv2dist.api.warn_undefined(got)
