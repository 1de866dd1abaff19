"""The PyTorch recorder against a plain forward pass (skipped without torch)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rv2dist

torch = pytest.importorskip("torch")


class SmallCNN(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
        )
        self.fc1 = torch.nn.Linear(6 * 8 * 8, 16)
        self.drop = torch.nn.Dropout(0.5)
        self.fc2 = torch.nn.Linear(16, 10)

    def forward(self, x):
        h = self.features(x).flatten(1)
        return self.fc2(self.drop(torch.relu(self.fc1(h))))


LAYERS = ["features.1", "features.3", "fc1", "fc2"]


def _plain_forward(model, inputs):
    model.eval()
    with torch.no_grad():
        c1 = torch.relu(model.features[0](inputs))
        c2 = torch.relu(model.features[2](c1))
        fc1 = model.fc1(c2.flatten(1))
        fc2 = model.fc2(torch.relu(fc1))
    return {"features.1": c1, "features.3": c2, "fc1": fc1, "fc2": fc2}


def _loader(inputs, batch):
    labels = torch.zeros(len(inputs))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=batch)


@pytest.mark.parametrize("method", ["stride", "mean"])
def test_recorded_activations_equal_forward_pass(tmp_path, method):
    model = SmallCNN()
    model.train()
    inputs = torch.randn(103, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ids = [f"img{i}" for i in range(103)]
    rv2dist.record_activations(tmp_path / "net.zarr", model, _loader(inputs, 10), LAYERS, obs=ids,
                               downsample_by=3, method=method, progress=False, network="cnn")
    assert model.training  # mode restored
    store = rv2dist.open_activations(tmp_path / "net.zarr")
    assert list(store.attrs["layers"]) == LAYERS and store.attrs["network"] == "cnn"
    assert store.attrs["downsample_method"] == method
    want = _plain_forward(model, inputs)
    for name, tensor in want.items():
        array = tensor.numpy().astype(np.float64)
        if array.ndim == 4:
            array = array.mean(axis=(2, 3))
        if method == "stride":
            array, kept = array[::3], ids[::3]
        else:
            array, kept = array[:102].reshape(34, 3, -1).mean(axis=1), ids[:102:3]
        assert store[name].shape == array.shape
        assert np.allclose(store[name].values, array, rtol=1e-5, atol=1e-6), name
    assert list(store.obs.values) == kept
    self_rv2 = rv2dist.similarity(tmp_path / "net.zarr")
    assert np.allclose(np.diag(self_rv2.values), 1, atol=1e-10)
    assert np.allclose(self_rv2.values, self_rv2.values.T, atol=1e-12)


def test_unpooled_feature_maps_keep_their_shape(tmp_path):
    model = SmallCNN()
    inputs = torch.randn(20, 1, 8, 8)
    rv2dist.record_activations(tmp_path / "raw.zarr", model, [inputs[:7], inputs[7:]], ["features.1", "fc1"],
                               pool=False, progress=False)
    store = rv2dist.open_activations(tmp_path / "raw.zarr")
    assert store["features.1"].shape == (20, 4, 8, 8)
    assert np.allclose(store["features.1"].values, _plain_forward(model, inputs)["features.1"].numpy(), atol=1e-6)


def test_recorder_errors_name_the_fault(tmp_path):
    model = SmallCNN()
    inputs = torch.randn(8, 1, 8, 8)
    with pytest.raises(ValueError, match="no module 'conv9'.*features, fc1, drop, fc2"):
        rv2dist.record_activations(tmp_path / "a.zarr", model, [inputs], ["fc1", "conv9"], progress=False)

    def crashing_loader():
        yield inputs
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        rv2dist.record_activations(tmp_path / "b.zarr", model, crashing_loader(), ["fc1"], progress=False)
    assert not list(tmp_path.iterdir())  # no store, no partial left behind


STREAM_SCRIPT = textwrap.dedent("""
    import resource, sys, torch, rv2dist
    n, out = int(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 512))
    batch = 2000
    loader = (torch.randn(batch, 32) for _ in range(n // batch))
    rv2dist.record_activations(out, model, loader, ["1", "3", "4"], progress=False, chunk_bytes=8 * 2**20)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


@pytest.mark.slow
def test_recording_memory_does_not_grow_with_observations(tmp_path):
    """200,000 observations of three layers (1,024 units: 820 MB as float32) against
    20,000 (82 MB): the peak resident memory grows by far less than the data."""
    peaks = {}
    for n in (20_000, 200_000):
        done = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(n), str(tmp_path / f"n{n}.zarr")],
                              capture_output=True, text=True, check=True)
        peaks[n] = int(done.stdout.split()[-1])
    growth = peaks[200_000] - peaks[20_000]
    print(f"peak RSS: {peaks[20_000] / 2**20:.0f} MiB (20k) / {peaks[200_000] / 2**20:.0f} MiB (200k)")
    assert growth < 100 * 2**20, f"peak RSS grew {growth / 2**20:.0f} MiB for 738 MiB more data"
    assert rv2dist.open_activations(tmp_path / "n200000.zarr").sizes["obs"] == 200_000
