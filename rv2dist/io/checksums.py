"""The CRC-32C of every row chunk, as :class:`~rv2dist.io.writer.ActivationWriter`
records it (of the decoded values) in the store's attr ``rv2dist_checksums``: what
opening a store checks is there, and what every read of a chunk checks it against
(:mod:`rv2dist.io.chunks`)."""

from __future__ import annotations

import json
import os

import numpy as np

from rv2dist.io.errors import StoreError
from rv2dist.io.schema import CHECKSUMS_ATTR

MISMATCH = "does not match the checksum written with it (changed on disk since, or by another tool)"


def checksum(block) -> int:
    """CRC-32C of a chunk's values: the bytes of numbers, the texts of ids.

    The ``crc32c`` package's hardware CRC runs at about 20 GB/s and releases the GIL
    (measured on the developer VM: google-crc32c, zarr's own, 3 to 5 GB/s), so checking
    every chunk on every read costs next to its decoding."""
    from crc32c import crc32c

    block = np.ascontiguousarray(block)
    if block.dtype.kind in "OSUT":
        return crc32c("\x00".join(map(str, block.tolist())).encode())
    return crc32c(block.view(np.uint8).reshape(-1))


def chunk_fault(path, what, index, low, high, reason):
    """The error for row chunk ``index`` (rows ``low:high``) of ``what`` in store ``path``."""
    return StoreError(f"{path}: {what}, chunk {index} (rows {low:,} to {high - 1:,}), {reason}: "
                      "the store is damaged; write it again")


def row_chunk_file(path, name, array, index):
    """The file of stored row chunk ``index`` of layer ``name`` (a zarr array) in the store
    at ``path`` (the first chunk along the other axes)."""
    return os.path.join(path, name, array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1)))


def verified_checksums(path):
    """The checksums the writer recorded in the store at ``path`` (absolute), after
    checking that they describe its arrays, that every chunk they list is on disk (a
    directory listing) and that the observation ids match theirs; None for a store
    without them.

    Returns
    -------
    dict or None
        ``{array name: [CRC-32C per row chunk]}``.

    Raises
    ------
    StoreError
        Naming the store and the attribute, array or chunk at fault.
    """
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        recorded = group.attrs.get(CHECKSUMS_ATTR)
    except Exception:
        return None  # not a zarr group: opening the store says why
    if recorded is None:
        return None
    sums = _parsed(path, recorded)
    for name, values in sums.items():
        what = "observation ids" if name == "obs" else f"layer {name!r}"
        try:
            array = group[name]
        except KeyError:
            raise StoreError(f"{path}: {what} missing from the store: the store is damaged; write it again") from None
        chunks = -(-array.shape[0] // array.chunks[0]) if array.ndim else -1
        if chunks != len(values):
            raise malformed(path, f"it lists {len(values)} chunks of {name!r}, which has {chunks}")
        if array.nchunks_initialized < len(values):
            _check_present(path, what, name, array, len(values))
    if "obs" in sums:
        _check_ids(path, group["obs"], sums["obs"])
    return sums


def _parsed(path, recorded):
    """``{array name: [CRC-32C per row chunk]}`` from the attribute's value."""
    try:
        sums = json.loads(recorded) if isinstance(recorded, str) else recorded
    except ValueError as error:
        raise malformed(path, f"not JSON: {error}") from None
    if not isinstance(sums, dict) or not sums:
        raise malformed(path, f"{_short(sums)} is no table of arrays")
    for name, values in sums.items():
        if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in values):
            raise malformed(path, f"the entry of {name!r} is {_short(values)}, not a list of CRC-32C values")
    return sums


def malformed(path, why):
    """The error for a checksums attribute that does not describe the store."""
    return StoreError(f"{path}: attribute {CHECKSUMS_ATTR!r} is malformed ({why}); the store is damaged, "
                      "write it again")


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_present(path, what, name, array, count):
    rows = array.chunks[0]
    for index in range(count):
        if not os.path.exists(row_chunk_file(path, name, array, index)):
            raise chunk_fault(path, what, index, index * rows, min(array.shape[0], (index + 1) * rows), "is missing")


def _check_ids(path, array, sums):
    """Read the observation ids chunk by chunk and check each against its checksum."""
    if "units" in array.attrs:
        return  # CF-encoded times (an older rv2dist wrote such ids): stored as other numbers than written
    rows = array.chunks[0]
    for index, expected in enumerate(sums):
        low, high = index * rows, min(array.shape[0], (index + 1) * rows)
        try:
            values = array[low:high]
        except Exception as error:
            raise chunk_fault(path, "observation ids", index, low, high,
                              f"cannot be read ({type(error).__name__}: {error})") from None
        if checksum(values) != expected:
            raise chunk_fault(path, "observation ids", index, low, high, MISMATCH)
