import numpy as np
import pytest


def relu_network(rng, n, widths, dtype=np.float64, offset=0.5):
    """Layers shaped like a ReLU network's: each a noisy mix of the previous layer,
    rectified, with positive means."""
    layers = {}
    previous = rng.standard_normal((n, 8))
    for i, width in enumerate(widths):
        weights = rng.standard_normal((previous.shape[1], width)) / np.sqrt(previous.shape[1])
        current = np.maximum(previous @ weights + offset + 0.3 * rng.standard_normal((n, width)), 0)
        layers[f"l{i}"] = current.astype(dtype)
        previous = current
    return layers


@pytest.fixture
def rng():
    return np.random.default_rng(20261126)


def write_unchecked(path, layers, **options):
    """A store holding what the writer refuses (NaN, Inf), as another tool or an older
    rv2dist could leave one: the comparisons must refuse it too."""
    from rv2dist.io import writer

    check = writer.check_finite
    writer.check_finite = lambda *args: None
    try:
        writer.write_activations(path, layers, **options)
    finally:
        writer.check_finite = check
