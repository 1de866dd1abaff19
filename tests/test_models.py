"""Bring your own model: every input kind, sequence models with padded batches, two
models in one call (skipped without torch)."""

import numpy as np
import pytest
import xarray as xr

import rv2dist
from conftest import relu_network
from rv2dist.inputs import as_array

torch = pytest.importorskip("torch")

METRICS = ["rv2", "rv", "cka", "cka_debiased"]


def _same(got, want, tol=1e-12):
    for metric in METRICS:
        np.testing.assert_allclose(got[metric].values, want[metric].values, rtol=0, atol=tol)
        assert list(got.layer_a.values) == list(want.layer_a.values)


def test_every_input_kind_gives_the_numpy_mapping_matrix(rng):
    a, b = relu_network(rng, 120, (5, 9)), relu_network(rng, 120, (7,))
    want = rv2dist.similarity(a, b, metric=METRICS)
    tensors = {name: torch.from_numpy(value).requires_grad_(True) for name, value in a.items()}
    _same(rv2dist.similarity(tensors, b, metric=METRICS), want)
    arrays = {name: xr.DataArray(value, dims=("sample", f"{name}_u")) for name, value in a.items()}
    _same(rv2dist.similarity(arrays, b, metric=METRICS), want)
    dataset = xr.Dataset({name: (("sample", f"{name}_u"), value) for name, value in a.items()},
                         coords={"sample": np.arange(120)})
    _same(rv2dist.similarity(dataset, b, metric=METRICS, obs_dim="sample"), want)
    named = rv2dist.similarity(list(a.values()), list(b.values()), metric=METRICS, names=(list(a), list(b)))
    _same(named, want)
    positional = rv2dist.similarity(list(a.values()), metric="rv2")
    assert list(positional.layer_a.values) == ["0", "1"]
    np.testing.assert_allclose(positional.values, rv2dist.similarity(a).values, rtol=0, atol=1e-12)
    one = rv2dist.similarity(xr.DataArray(a["l0"], dims=("sample", "u"), name="l0"), {"l1": a["l1"]})
    np.testing.assert_allclose(one.values[0, 0], rv2dist.rv2(a["l0"], a["l1"]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="obs_dim="):
        rv2dist.similarity(dataset)
    with pytest.raises(TypeError, match=r"a must be .*; got int"):
        rv2dist.similarity(3)


def test_a_tensor_that_requires_grad_is_used_without_a_copy(rng):
    tensor = torch.randn(50, 4, dtype=torch.float64, requires_grad=True)
    array = as_array("x", tensor)
    assert isinstance(array, np.ndarray) and array.ctypes.data == tensor.data_ptr()
    half = as_array("h", torch.randn(50, 4).half())
    assert half.dtype == np.float32
    with pytest.raises(TypeError, match="layer 'z' has dtype torch.complex64"):
        as_array("z", torch.randn(5, 2, dtype=torch.complex64))


class TinyEncoder(torch.nn.Module):
    """Token embedding, two transformer encoder layers and a linear head, called as a
    HuggingFace model is: ``model(input_ids=..., attention_mask=...)``."""

    def __init__(self, seed=0, vocab=30, width=16):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, width)
        layer = torch.nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        return self.head(hidden)


LAYERS = ["embed", "encoder.layers.0", "encoder.layers.1", "head"]


def _padded_batches(seed=1, n=37, batch=8, longest=11):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, longest + 1, (n,), generator=generator)
    ids = torch.randint(1, 30, (n, longest), generator=generator)
    mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # padding token 0
    return [{"input_ids": ids[i:i + batch], "attention_mask": mask[i:i + batch]} for i in range(0, n, batch)]


def _plain_outputs(model, batches):
    """Each layer's full output (N, T, C) by plain forward hooks, and the masks."""
    outputs, hooks = {name: [] for name in LAYERS}, []
    modules = dict(model.named_modules())
    for name in LAYERS:
        hooks.append(modules[name].register_forward_hook(
            lambda module, inputs, out, name=name: outputs[name].append(out.detach().numpy())))
    model.eval()
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for hook in hooks:
        hook.remove()
    masks = np.concatenate([b["attention_mask"].numpy() for b in batches]).astype(bool)
    return {name: np.concatenate(parts) for name, parts in outputs.items()}, masks


def _independent_pool(values, masks, how):
    n = len(values)
    if how == "mean":
        return np.stack([values[i][masks[i]].mean(axis=0) for i in range(n)])
    if how == "max":
        return np.stack([values[i][masks[i]].max(axis=0) for i in range(n)])
    if how == "last":
        return np.stack([values[i][np.flatnonzero(masks[i])[-1]] for i in range(n)])
    return values[:, 0]


@pytest.mark.parametrize("how", ["mean", "max", "last", "cls"])
def test_padded_sequences_pool_under_the_attention_mask(tmp_path, how):
    model = TinyEncoder()
    batches = _padded_batches()
    plain, masks = _plain_outputs(model, batches)
    rv2dist.record_activations(tmp_path / "enc.zarr", model, batches, LAYERS, pool=how, progress=False)
    stored = rv2dist.open_activations(tmp_path / "enc.zarr")
    for name in LAYERS:
        want = _independent_pool(plain[name], masks, how)
        assert stored[name].shape == want.shape  # (n, units): the hidden units kept, tokens pooled
        np.testing.assert_allclose(stored[name].values, want, rtol=1e-5, atol=1e-6)
    if how == "mean":  # padding averaged in would differ
        unmasked = plain["encoder.layers.1"].mean(axis=1)
        assert not np.allclose(stored["encoder.layers.1"].values, unmasked, atol=1e-3)


def test_every_module_keeps_its_own_mode(tmp_path):
    model = TinyEncoder()
    model.train()
    model.encoder.layers[0].eval()  # a frozen part of a training model
    wrapper = torch.nn.Sequential(torch.nn.Identity())  # fresh: training
    inner = TinyEncoder(seed=2).eval()
    before = {id(m): m.training for m in list(model.modules()) + list(inner.modules()) + list(wrapper.modules())}
    batches = _padded_batches()
    rv2dist.record_activations(tmp_path / "a.zarr", model, batches, LAYERS, progress=False)
    rv2dist.compare_models(model, inner, batches, LAYERS, progress=False)
    after = {id(m): m.training for m in list(model.modules()) + list(inner.modules()) + list(wrapper.modules())}
    assert after == before


def test_compare_models_equals_recording_both_and_comparing(tmp_path, capsys):
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=5)
    batches = _padded_batches(n=45)
    rv2dist.record_activations(tmp_path / "a.zarr", a, batches, LAYERS, progress=False)
    rv2dist.record_activations(tmp_path / "b.zarr", b, batches, LAYERS, progress=False)
    want = rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric=METRICS)
    got = rv2dist.compare_models(a, b, batches, LAYERS, metric=METRICS, names=("seed0", "seed5"), progress=False)
    _same(got, want)
    assert got.attrs["network_a"] == "seed0" and "spilling" not in capsys.readouterr().err
    spilled = rv2dist.compare_models(a, b, batches, LAYERS, metric=METRICS, memory_budget=4000, progress=False,
                                     spill_dir=tmp_path)
    _same(spilled, want)
    assert "spilling to the temporary store" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr"]  # temporary stores removed
    itself = rv2dist.compare_models(a, a, batches, LAYERS, metric=METRICS, progress=False)
    # one recording, a symmetric job: the diagonal exactly 1, as a store against itself
    _same(itself, rv2dist.similarity(tmp_path / "a.zarr", metric=METRICS))
    for metric in METRICS:
        assert np.array_equal(np.diag(itself[metric].values), np.ones(len(LAYERS)))
        assert np.array_equal(itself[metric].values, itself[metric].values.T)


class Channels(torch.nn.Module):
    def forward(self, x):
        return x


def test_bad_models_batches_and_masks_are_named(tmp_path):
    model = TinyEncoder()
    batches = _padded_batches()
    with pytest.raises(ValueError, match=r"has no module 'encoder.layer.0'; did you mean 'encoder.layers.0'"):
        rv2dist.compare_models(model, model, batches, ["encoder.layer.0"], progress=False)
    with pytest.raises(ValueError, match="the loader yielded no batches"):
        rv2dist.record_activations(tmp_path / "none.zarr", model, [], LAYERS, progress=False)
    assert not (tmp_path / "none.zarr").exists()
    bad_mask = lambda batch: torch.ones(batch["input_ids"].shape[0], 3)  # noqa: E731
    with pytest.raises(ValueError, match=r"layer 'embed': the mask has shape \(8, 3\) but the output has 11 positions"):
        rv2dist.record_activations(tmp_path / "m.zarr", model, batches, LAYERS, mask=bad_mask, progress=False)
    plain = torch.nn.Sequential(Channels())
    square = [torch.randn(4, 6, 6)]
    with pytest.raises(ValueError, match=r"layer '0' \(Channels\) returned \(4, 6, 6\).*channel_axis"):
        rv2dist.record_activations(tmp_path / "c.zarr", plain, square, ["0"], progress=False)
    rv2dist.record_activations(tmp_path / "c.zarr", plain, square, ["0"], channel_axis=1, progress=False)
    assert rv2dist.open_activations(tmp_path / "c.zarr")["0"].shape == (4, 6)
    # one module path as a string is one layer, not its letters
    assert list(rv2dist.compare_models(model, model, batches, "embed", progress=False).layer_a.values) == ["embed"]
    with pytest.raises(ValueError, match="layer 'embed' is named twice"):
        rv2dist.record_activations(tmp_path / "d.zarr", model, batches, ["embed", "embed"], progress=False)
    wrong = [{"input_ids": torch.zeros(4, 3, 2, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"the model \(TinyEncoder\) failed on a batch of \{'input_ids': "
                                         r"shape \(4, 3, 2\)\}: "):
        rv2dist.compare_models(model, model, wrong, LAYERS, progress=False)
    for options, message in [({"dtype": "int8"}, "dtype must be one of float16, float32, float64, not 'int8'"),
                             ({"names": "ab"}, "names must be two network names, got 'ab'"),
                             ({"memory_budget": 0}, "memory_budget must be a positive number of bytes"),
                             ({"device": "cuda:99"}, "device 'cuda:99': this machine has")]:
        with pytest.raises(ValueError, match=message):
            rv2dist.compare_models(model, TinyEncoder(seed=1), batches, LAYERS, progress=False, **options)
    half = rv2dist.compare_models(model, TinyEncoder(seed=1), batches, LAYERS, memory_budget="1MB", dtype="float16",
                                  progress=False)
    assert half.shape == (len(LAYERS), len(LAYERS))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_stay_on_the_device(rng):
    cupy = pytest.importorskip("cupy")
    tensor = torch.randn(300, 12, device="cuda")
    array = as_array("x", tensor)
    assert isinstance(array, cupy.ndarray) and array.data.ptr == tensor.data_ptr()
    layers = {"x": tensor, "y": torch.relu(tensor @ torch.randn(12, 5, device="cuda"))}
    got = rv2dist.similarity(layers, metric="rv2")
    want = rv2dist.similarity({k: v.cpu().numpy() for k, v in layers.items()}, metric="rv2", precision="float64")
    assert got.attrs["device"] == "gpu"
    np.testing.assert_allclose(got.values, want.values, atol=1e-6)


def test_import_reads_hdf5_and_netcdf_with_any_sample_dimension(rng, tmp_path):
    import h5py

    from test_hardening import _assert_clean_failure, _cli

    maps, fc = rng.standard_normal((40, 3, 4, 4)), rng.standard_normal((40, 8))
    with h5py.File(tmp_path / "acts.h5", "w") as handle:
        handle["fc"] = fc
        handle["block/conv"] = maps
        handle["obs"] = np.array([f"img{i}" for i in range(40)], dtype="S")
    done = _cli("import", tmp_path / "acts.h5", "--out", tmp_path / "h5.zarr", "--pool")
    assert done.returncode == 0, done.stderr
    stored = rv2dist.open_activations(tmp_path / "h5.zarr")
    assert list(stored.attrs["layers"]) == ["block.conv", "fc"] and stored.obs.values[3] == "img3"
    want = rv2dist.similarity({"block.conv": maps.mean(axis=(2, 3)), "fc": fc}, metric=METRICS)
    _same(rv2dist.similarity(tmp_path / "h5.zarr", metric=METRICS), want)

    xr.Dataset({"fc": (("sample", "unit"), fc), "conv": (("sample", "c", "h", "w"), maps)},
               coords={"sample": np.arange(100, 140)}).to_netcdf(tmp_path / "acts.nc", engine="h5netcdf")
    _assert_clean_failure(_cli("import", tmp_path / "acts.nc", "--out", tmp_path / "nc.zarr"),
                          "acts.nc: has no dimension 'obs'", "--obs-dim")
    done = _cli("import", tmp_path / "acts.nc", "--out", tmp_path / "nc.zarr", "--obs-dim", "sample",
                "--layers", "fc", "conv", "--pool")
    assert done.returncode == 0, done.stderr
    stored = rv2dist.open_activations(tmp_path / "nc.zarr")
    assert int(stored.obs.values[0]) == 100
    want = rv2dist.similarity({"fc": fc, "conv": maps.mean(axis=(2, 3))}, metric=METRICS)
    _same(rv2dist.similarity(tmp_path / "nc.zarr", metric=METRICS), want)
