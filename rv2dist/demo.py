"""Synthetic networks shaped like the seed study's, for ``rv2dist demo``."""

from __future__ import annotations

import numpy as np

SEED_LAYERS = ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "fc1", "fc2")
# channels after average pooling: a small stand-in for the study's 11-layer CNN
DEMO_WIDTHS = (16, 16, 32, 32, 64, 64, 64, 128, 128, 256, 256)


def related_networks(n_obs, *, widths=DEMO_WIDTHS, input_units=32, drift=0.6, seed=0, batch=4096):
    """Activations of two random ReLU networks of one architecture on the same inputs.

    The second network's weights are the first's plus ``drift`` times fresh noise, so
    each of its layers resembles the same-depth layer of the first, less so with depth.

    Returns
    -------
    (dict, dict)
        ``{layer: float32 array (n_obs, width)}`` for each network, layers in depth order.
    """
    rng = np.random.default_rng(seed)
    fan_in = (input_units,) + tuple(widths[:-1])
    weights_a = [rng.standard_normal((f, w)) * np.sqrt(2.0 / f) for f, w in zip(fan_in, widths)]
    weights_b = [w + drift * rng.standard_normal(w.shape) * np.sqrt(2.0 / w.shape[0]) for w in weights_a]
    bias = [0.1 * rng.standard_normal(w) for w in widths]
    out_a = {name: np.empty((n_obs, w), np.float32) for name, w in zip(SEED_LAYERS, widths)}
    out_b = {name: np.empty((n_obs, w), np.float32) for name, w in zip(SEED_LAYERS, widths)}
    for start in range(0, n_obs, batch):
        stop = min(n_obs, start + batch)
        inputs = rng.standard_normal((stop - start, input_units))
        for weights, out in ((weights_a, out_a), (weights_b, out_b)):
            h = inputs
            for name, w, b in zip(SEED_LAYERS, weights, bias):
                h = np.maximum(h @ w + b, 0.0)
                out[name][start:stop] = h
    return out_a, out_b
