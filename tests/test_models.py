"""Bring your own model: every input kind, sequence models with padded batches, two
models in one call (skipped without torch)."""

import re

import numpy as np
import pytest
import xarray as xr

import rv2dist
from conftest import relu_network
from reference import dense_matrix
from rv2dist.io.inputs import as_array

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

    def forward(self, input_ids, attention_mask=None):
        padding = None if attention_mask is None else attention_mask == 0
        hidden = self.encoder(self.embed(input_ids), src_key_padding_mask=padding)
        return self.head(hidden)


LAYERS = ["embed", "encoder.layers.0", "encoder.layers.1", "head"]


def _padded_batches(seed=1, n=37, batch=8, longest=11):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, longest + 1, (n,), generator=generator)
    ids = torch.randint(1, 30, (n, longest), generator=generator)
    mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # padding token 0
    return [{"input_ids": ids[i:i + batch], "attention_mask": mask[i:i + batch]} for i in range(0, n, batch)]


def _forward_outputs(model, batches):
    """Each layer's full output of each batch, (N, T, C), by plain forward hooks."""
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
    return outputs


def _plain_outputs(model, batches):
    """Each layer's full output (N, T, C), and the masks."""
    masks = np.concatenate([b["attention_mask"].numpy() for b in batches]).astype(bool)
    return {name: np.concatenate(parts) for name, parts in _forward_outputs(model, batches).items()}, masks


def _real_tokens(model, batches):
    """Each layer's real (unmasked) tokens in order, (tokens, C) float64."""
    masks = [b["attention_mask"].numpy().astype(bool) for b in batches]
    return {name: np.concatenate([part[mask] for part, mask in zip(parts, masks)]).astype(np.float64)
            for name, parts in _forward_outputs(model, batches).items()}


def _per_batch_padding(batches):
    """Batches padded each to its own longest sequence, as a tokenizer pads them."""
    trimmed = []
    for batch in batches:
        longest = int(batch["attention_mask"].sum(dim=1).max())
        trimmed.append({key: value[:, :longest] for key, value in batch.items()})
    return trimmed


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


def _tuples(batches):
    return [(batch["input_ids"], batch["attention_mask"]) for batch in batches]


CALL_LINE = "call=lambda model, batch: model(input_ids=batch[0], attention_mask=batch[1])"
CALL = lambda model, batch: model(input_ids=batch[0], attention_mask=batch[1])  # noqa: E731
SECOND = lambda batch: batch[1]  # noqa: E731


def test_tuple_batches_with_a_mask_run_as_told_or_are_refused(tmp_path):
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=5)
    batches = _padded_batches()
    tuples = _tuples(batches)
    want = rv2dist.compare_models(a, b, batches, LAYERS, metric=METRICS, progress=False)
    got = rv2dist.compare_models(a, b, tuples, LAYERS, metric=METRICS, call=CALL, mask=SECOND, progress=False)
    _same(got, want, tol=1e-6)
    # run as model(batch[0]), the model and the pooling would see the padding: refused,
    # with the call= line (the channel_axis advice would make that wrong run succeed)
    for options in ({}, {"mask": SECOND}, {"mask": SECOND, "channel_axis": -1}):
        with pytest.raises(ValueError, match=re.escape(CALL_LINE)) as refused:
            rv2dist.compare_models(a, b, tuples, LAYERS, progress=False, **options)
        assert "channel_axis" not in str(refused.value)
    with pytest.raises(ValueError, match=r"pool='mean' needs to know the padding: pass mask=lambda batch: batch\[1\]"):
        rv2dist.record_activations(tmp_path / "t.zarr", a, tuples, LAYERS, call=CALL, progress=False)
    assert not (tmp_path / "t.zarr").exists()
    for pool, mask in (("mean", SECOND), ("cls", None), ("cls", lambda batch: None)):
        rv2dist.record_activations(tmp_path / "map.zarr", a, batches, LAYERS, pool=pool, progress=False, overwrite=True)
        rv2dist.record_activations(tmp_path / "tuple.zarr", a, tuples, LAYERS, pool=pool, call=CALL, mask=mask,
                                   progress=False, overwrite=True)
        mapped, tupled = (rv2dist.open_activations(tmp_path / f"{n}.zarr") for n in ("map", "tuple"))
        for name in LAYERS:
            np.testing.assert_array_equal(tupled[name].values, mapped[name].values)


def test_a_mapping_whose_inputs_entry_would_run_without_its_mask_is_refused(tmp_path):
    """{'x': ids, 'attention_mask': mask} ran as model(batch['x']): the model saw the
    padding while the pooling skipped it; with call= it runs as told."""
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=5)
    batches = _padded_batches()
    keyed = [{"x": batch["input_ids"], "attention_mask": batch["attention_mask"]} for batch in batches]
    line = "call=lambda model, batch: model(batch['x'], attention_mask=batch['attention_mask'])"
    with pytest.raises(ValueError, match=re.escape(line)):
        rv2dist.record_activations(tmp_path / "x.zarr", a, keyed, LAYERS, progress=False)
    assert not (tmp_path / "x.zarr").exists()
    call = lambda model, batch: model(input_ids=batch["x"], attention_mask=batch["attention_mask"])  # noqa: E731
    want = rv2dist.compare_models(a, b, batches, LAYERS, metric=METRICS, progress=False)
    _same(rv2dist.compare_models(a, b, keyed, LAYERS, metric=METRICS, call=call, progress=False), want, tol=1e-6)


def test_an_output_field_leaves_tensor_outputs_whole(tmp_path):
    """output=0 picks a tuple's first element; on a tensor it would take the batch's
    first observation, its tokens recorded as observations."""
    model = TinyEncoder()
    batches = _padded_batches()
    rv2dist.record_activations(tmp_path / "a.zarr", model, batches, LAYERS, progress=False)
    rv2dist.record_activations(tmp_path / "b.zarr", model, batches, LAYERS, output=0, progress=False)
    whole, field = rv2dist.open_activations(tmp_path / "a.zarr"), rv2dist.open_activations(tmp_path / "b.zarr")
    assert field.sizes["obs"] == 37
    for name in LAYERS:
        np.testing.assert_array_equal(field[name].values, whole[name].values)


def test_tokens_are_observations_with_ids_that_align(tmp_path):
    a, b = TinyEncoder(seed=0), TinyEncoder(seed=5)
    batches = _per_batch_padding(_padded_batches(n=30))
    assert len({batch["input_ids"].shape[1] for batch in batches}) > 1
    got = rv2dist.compare_models(a, b, batches, LAYERS, metric=METRICS, pool="tokens", progress=False)
    tokens_a, tokens_b = _real_tokens(a, batches), _real_tokens(b, batches)
    lengths = [int(n) for batch in batches for n in batch["attention_mask"].sum(dim=1)]
    assert got.attrs["n_obs"] == sum(lengths) == len(tokens_a["embed"])
    for metric in METRICS:
        want = dense_matrix(tokens_a, tokens_b, metric)
        np.testing.assert_allclose(got[metric].values, want, rtol=0, atol=1e-6)
    # in a store: an id per token, sentence and rank, which survives the store and aligns
    rv2dist.record_activations(tmp_path / "a.zarr", a, batches, LAYERS, pool="tokens", progress=False)
    stored = rv2dist.open_activations(tmp_path / "a.zarr")
    ids = [f"s{i}:t{k}" for i, length in enumerate(lengths) for k in range(length)]
    assert list(stored.obs.values) == ids
    for name in LAYERS:
        np.testing.assert_allclose(stored[name].values, tokens_a[name], rtol=1e-6, atol=1e-6)
    order = np.random.default_rng(0).permutation(len(ids))
    rv2dist.write_activations(tmp_path / "b.zarr", {name: value[order] for name, value in tokens_b.items()},
                              obs=np.array(ids, dtype=object)[order])
    _same(rv2dist.similarity(tmp_path / "a.zarr", tmp_path / "b.zarr", metric=METRICS, align_obs=True), got, 1e-6)
    named = [f"doc{i}" for i in range(30)]
    rv2dist.record_activations(tmp_path / "n.zarr", a, batches, ["embed"], pool="tokens", obs=named, progress=False)
    assert list(rv2dist.open_activations(tmp_path / "n.zarr").obs.values[:2]) == ["doc0:t0", "doc0:t1"]


def test_outputs_that_cannot_be_stacked_name_the_layer(tmp_path):
    model = TinyEncoder()
    batches = _per_batch_padding(_padded_batches())
    ragged = r"layer 'embed' gave \(\d+, 16\) per observation in this batch but \(\d+, 16\) before.*pool='tokens'"
    with pytest.raises(ValueError, match=ragged):
        rv2dist.record_activations(tmp_path / "r.zarr", model, batches, LAYERS, pool=False, progress=False)
    assert not (tmp_path / "r.zarr").exists()
    with pytest.raises(ValueError, match=ragged):
        rv2dist.compare_models(model, TinyEncoder(seed=1), batches, LAYERS, pool=False, progress=False)
    flat = torch.nn.Sequential(torch.nn.Embedding(30, 4), torch.nn.Flatten())
    ids = [batch["input_ids"] for batch in _padded_batches()]
    with pytest.raises(ValueError, match=r"layer '1' returned \(8, 44\), one vector per observation: no positions"):
        rv2dist.record_activations(tmp_path / "f.zarr", flat, ids, ["0", "1"], pool="tokens", progress=False)


def test_long_jobs_say_what_they_cost_and_plan_models_says_it_before(tmp_path, capsys, monkeypatch):
    from rv2dist.planning.plan import cost_line

    a, b = TinyEncoder(seed=0), TinyEncoder(seed=5)
    batches = _padded_batches(n=40)  # five batches of 8: the extrapolation is exact
    options = dict(metric=["rv2", "cka"], bootstrap=50, seed=1)
    planned = rv2dist.plan_models(a, b, batches, LAYERS, **options)
    rv2dist.compare_models(a, b, batches, LAYERS, **options)
    assert "this job computes" not in capsys.readouterr().err  # small jobs stay quiet
    for side, model in (("a", a), ("b", b)):
        rv2dist.record_activations(tmp_path / f"{side}.zarr", model, batches, LAYERS, progress=False)
    arrays = [{name: array.values for name, array in rv2dist.open_activations(tmp_path / f"{side}.zarr").items()}
              for side in "ab"]
    recorded = rv2dist.plan(*arrays, **options)
    for field in ("route", "n_obs", "widths", "flops", "n_tasks", "input_dtype"):
        assert getattr(planned, field) == getattr(recorded, field), field
    assert [(sub.kind, sub.count, sub.plan.flops) for sub in planned.resampling] == [
        (sub.kind, sub.count, sub.plan.flops) for sub in recorded.resampling]
    monkeypatch.setattr(rv2dist.api, "COST_LINE_FLOP", 0)
    rv2dist.compare_models(a, b, batches, LAYERS, **options, progress=False)
    rv2dist.similarity(*arrays, metric="rv2", progress=False)
    assert "this job computes" not in capsys.readouterr().err
    rv2dist.compare_models(a, b, batches, LAYERS, **options)
    lines = [line for line in capsys.readouterr().err.splitlines() if "this job computes" in line]
    assert lines == [cost_line(planned)] and "50 bootstrap replicates" in lines[0]
    rv2dist.similarity(*arrays, metric="rv2")
    assert "this job computes" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"plan_models needs a loader with len\(\)"):
        rv2dist.plan_models(a, b, iter(batches), LAYERS)


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

    from conftest import run_cli
    from test_hardening import _assert_clean_failure

    maps, fc = rng.standard_normal((40, 3, 4, 4)), rng.standard_normal((40, 8))
    with h5py.File(tmp_path / "acts.h5", "w") as handle:
        handle["fc"] = fc
        handle["block/conv"] = maps
        handle["obs"] = np.array([f"img{i}" for i in range(40)], dtype="S")
    done = run_cli("import", tmp_path / "acts.h5", "--out", tmp_path / "h5.zarr", "--pool")
    assert done.returncode == 0, done.stderr
    stored = rv2dist.open_activations(tmp_path / "h5.zarr")
    assert list(stored.attrs["layers"]) == ["block.conv", "fc"] and stored.obs.values[3] == "img3"
    want = rv2dist.similarity({"block.conv": maps.mean(axis=(2, 3)), "fc": fc}, metric=METRICS)
    _same(rv2dist.similarity(tmp_path / "h5.zarr", metric=METRICS), want)

    xr.Dataset({"fc": (("sample", "unit"), fc), "conv": (("sample", "c", "h", "w"), maps)},
               coords={"sample": np.arange(100, 140)}).to_netcdf(tmp_path / "acts.nc", engine="h5netcdf")
    _assert_clean_failure(run_cli("import", tmp_path / "acts.nc", "--out", tmp_path / "nc.zarr"),
                          "acts.nc: has no dimension 'obs'", "--obs-dim")
    done = run_cli("import", tmp_path / "acts.nc", "--out", tmp_path / "nc.zarr", "--obs-dim", "sample",
                "--layers", "fc", "conv", "--pool")
    assert done.returncode == 0, done.stderr
    stored = rv2dist.open_activations(tmp_path / "nc.zarr")
    assert int(stored.obs.values[0]) == 100
    want = rv2dist.similarity({"fc": fc, "conv": maps.mean(axis=(2, 3))}, metric=METRICS)
    _same(rv2dist.similarity(tmp_path / "nc.zarr", metric=METRICS), want)
