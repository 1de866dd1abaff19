"""Synthetic networks shaped like the seed study's, for ``rv2dist demo``."""

from __future__ import annotations

import numpy as np

SEED_LAYERS = ("c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "fc1", "fc2")
# channels after average pooling: a small stand-in for the study's 11-layer CNN
DEMO_WIDTHS = (16, 16, 32, 32, 64, 64, 64, 128, 128, 256, 256)


def related_networks(n_obs, *, widths=DEMO_WIDTHS, rank=8, carry=0.8, seed=0, batch=4096):
    """Synthetic activations that behave like two trained seeds of one architecture.

    Every layer reads a low-rank latent state that walks with depth (``carry`` of it
    kept from one layer to the next), so a layer resembles its neighbours and less the
    layers further away.  The two networks share that state; each adds a private one
    whose weight grows with depth, and network b's projections start as a's and drift
    with depth.  So corresponding layers are the most alike, early layers nearly
    identical, and the similarity falls off the diagonal and with depth.

    Returns
    -------
    (dict, dict)
        ``{layer: float32 array (n_obs, width)}`` for each network, layers in depth order.
    """
    rng = np.random.default_rng(seed)
    depth = len(widths)
    scale = 1.0 / np.sqrt(rank)
    projection_a = [rng.standard_normal((rank, w)) * scale for w in widths]
    drift = np.linspace(0.1, 0.9, depth)  # how far b's projections are from a's
    projection_b = [np.sqrt(1 - d**2) * p + d * rng.standard_normal(p.shape) * scale
                    for p, d in zip(projection_a, drift)]
    private_projection = {net: [rng.standard_normal((rank, w)) * scale for w in widths] for net in "ab"}
    private = np.linspace(0.1, 0.7, depth)  # weight of each network's own state
    projections = {"a": projection_a, "b": projection_b}
    out = {net: {name: np.empty((n_obs, w), np.float32) for name, w in zip(SEED_LAYERS, widths)} for net in "ab"}
    step = np.sqrt(1 - carry**2)
    for start in range(0, n_obs, batch):
        rows = min(n_obs, start + batch) - start
        shared = rng.standard_normal((rows, rank))
        own = {net: rng.standard_normal((rows, rank)) for net in "ab"}
        for k, name in enumerate(SEED_LAYERS[:depth]):
            shared = carry * shared + step * rng.standard_normal((rows, rank))
            for net in "ab":
                own[net] = carry * own[net] + step * rng.standard_normal((rows, rank))
                h = (np.sqrt(1 - private[k] ** 2) * shared @ projections[net][k]
                     + private[k] * own[net] @ private_projection[net][k]
                     + 0.05 * rng.standard_normal((rows, widths[k])) + 0.3)
                out[net][name][start:start + rows] = np.maximum(h, 0.0)
    return out["a"], out["b"]
