"""Every file rv2dist reads or writes: inputs, activation stores, results.

- :mod:`~rv2dist.io.inputs`: any input (mapping, arrays, Dataset, store path) as layers
- :mod:`~rv2dist.io.names`, :mod:`~rv2dist.io.ids`: layer names and selections; observation ids
- :mod:`~rv2dist.io.schema`: what an activation store holds, and its checks
- :mod:`~rv2dist.io.writer`: :class:`ActivationWriter`, :func:`write_activations`
- :mod:`~rv2dist.io.reader`: :func:`open_activations`, a store's summary and fingerprint
- :mod:`~rv2dist.io.checksums`: the CRC-32C of every chunk, as written
- :mod:`~rv2dist.io.chunks`: reads of chunks checked against them; stored rows read in tasks
- :mod:`~rv2dist.io.atomic`: crash-safe replacement of what is written
- :mod:`~rv2dist.io.foreign`, :mod:`~rv2dist.io.convert`: numpy, HDF5 and NetCDF files made stores
- :mod:`~rv2dist.io.results`: result files, and results in every form made one
- :mod:`~rv2dist.io.errors`: :class:`StoreError`

io imports no other rv2dist package but :mod:`rv2dist.core` (tests/test_architecture.py).
"""
