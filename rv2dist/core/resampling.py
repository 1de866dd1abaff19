"""Seeded resampling: Poisson bootstrap counts and permutations that depend on the seed
and the observation index only, never on the chunking or the number of workers."""

from __future__ import annotations

import numpy as np

from rv2dist.core.xp import concat, namespace


# observations per stream of bootstrap counts: the counts of an observation depend on
# the seed and its index only, never on the chunking
WEIGHT_BLOCK = 4096


def poisson_weights(seed, start, stop, replicates):
    """Poisson(1) counts of observations ``start:stop`` for every bootstrap replicate.

    Returns
    -------
    numpy.ndarray
        ``(stop - start, replicates)`` float64; block ``j`` of WEIGHT_BLOCK observations
        draws from its own stream keyed ``(seed, 1, j)``.
    """
    first, last = start // WEIGHT_BLOCK, (stop - 1) // WEIGHT_BLOCK
    counts = np.concatenate([np.random.default_rng([seed, 1, block]).poisson(1.0, size=(WEIGHT_BLOCK, replicates))
                             for block in range(first, last + 1)])
    offset = first * WEIGHT_BLOCK
    return counts[start - offset : stop - offset].astype(np.float64)


def permutation(seed, index, n):
    """The ``index``-th random permutation of ``n`` observations for ``seed``."""
    return np.random.default_rng([seed, 0, index]).permutation(n)


def gather_rows(chunks, indices):
    """Rows ``indices`` (global positions) of a layer laid out as consecutive row
    ``chunks``, in that order: one take (a scatter chunk by chunk costs four times more)."""
    xp = namespace(*chunks)
    whole = chunks[0] if len(chunks) == 1 else concat(xp, list(chunks))
    return xp.take(whole, xp.asarray(indices), axis=0)
