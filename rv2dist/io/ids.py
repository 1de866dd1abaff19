"""Observation ids: the kinds a store keeps, the ids no observation can have (NaN,
repeats), and two networks' ids matched or aligned."""

from __future__ import annotations

import hashlib

import numpy as np

from rv2dist.io.errors import StoreError

# what a store keeps as observation ids, by numpy dtype kind (bytes are kept as text)
ID_KINDS = {"i": "integers", "u": "integers", "f": "floats", "b": "booleans", "U": "strings", "T": "strings"}


def id_array(path, obs):
    """Observation ids as a 1-d numpy array of one kind (:data:`ID_KINDS`); ids mixing
    kinds, which numpy would turn into text or objects, are refused by name.  Bytes
    become text: zarr would keep them at the width of the first chunk's longest."""
    ids = np.asarray(obs)
    if ids.ndim != 1:
        raise StoreError(f"{path}: observation ids must be one value per observation, not an array of "
                         f"shape {ids.shape}")
    if not isinstance(obs, np.ndarray) or ids.dtype.kind == "O":
        kinds = {_id_kind(value) for value in ids.tolist()}
        if len(kinds) > 1:
            raise StoreError(f"{path}: observation ids mix {', '.join(sorted(kinds))}; give every id as an "
                             "integer or every id as a string")
        ids = np.asarray(ids.tolist()) if ids.dtype.kind == "O" and ids.size else ids
    if ids.dtype.kind == "S":
        try:
            ids = np.char.decode(ids, "utf-8")
        except UnicodeDecodeError as error:
            raise StoreError(f"{path}: observation ids are bytes that are not UTF-8 text ({error}); give them "
                             "as strings or integers") from None
    if ids.dtype.kind not in ID_KINDS:
        raise StoreError(f"{path}: observation ids of dtype {ids.dtype} cannot be stored; give them as "
                         "integers or strings")
    return ids


def _id_kind(value):
    """The kind of one id, by the name :data:`ID_KINDS` gives it (else its type's)."""
    if isinstance(value, (bool, np.bool_)):
        return "booleans"
    for kinds, name in (((int, np.integer), "integers"), ((float, np.floating), "floats"), (str, "strings"),
                        (bytes, "bytes")):
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def check_id_values(ids, where, first=0):
    """``ids`` when every one can identify an observation: NaN equals nothing, not
    even itself, so no NaN (or NaT) id is taken.  ``first``: the position of ``ids[0]``
    among all observations, for the message."""
    values = np.asarray(ids) if ids is not None else None
    if values is not None and values.dtype.kind in "fcmM":
        missing = np.flatnonzero(np.isnan(values))
        if missing.size:
            raise ValueError(f"{where}: the observation id at position {first + missing[0]:,} is "
                             f"{'NaT' if values.dtype.kind in 'mM' else 'NaN'}, which identifies nothing; "
                             "give every observation its own id")
    return ids


def first_repeated_id(where, ids):
    """Refuse ``ids`` (an array or a pandas Index) when an id repeats, naming it."""
    import pandas as pd

    index = ids if isinstance(ids, pd.Index) else pd.Index(np.asarray(ids))
    if not index.is_unique:
        repeated = index[index.duplicated()].tolist()[0]
        raise StoreError(f"{where}: observation id {repeated!r} repeats; each observation needs its own id")


def check_ids(ids_a, ids_b, align_obs=False, labels=("a", "b")):
    """None when the ids match in order; with ``align_obs``, the permutation that puts
    b's rows in a's order when both hold the same ids; otherwise a ValueError naming
    the first mismatch, and the networks by ``labels``."""
    if ids_a is None or ids_b is None:
        return None
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    label_a, label_b = labels
    if len(ids_a) != len(ids_b):
        raise ValueError(f"{label_a} holds {len(ids_a)} observations and {label_b} {len(ids_b)}; "
                         "the two must hold the same observations")
    mismatch = np.flatnonzero(ids_a != ids_b)
    if not mismatch.size:
        return None
    if align_obs:
        order_b = np.argsort(ids_b, kind="stable")
        position = np.searchsorted(ids_b, ids_a, sorter=order_b)
        position = np.minimum(position, len(ids_b) - 1)
        found = ids_b[order_b[position]] == ids_a
        if found.all():
            return order_b[position]
        i = int(np.flatnonzero(~found)[0])
        raise ValueError(f"cannot align by id: observation {ids_a[i].item()!r} of {label_a} is not in {label_b}")
    i = int(mismatch[0])
    raise ValueError(
        f"observation ids differ first at position {i}: {ids_a[i].item()!r} against {ids_b[i].item()!r}"
        f" ({label_a} against {label_b}; pass align_obs=True to reorder b when both hold the same ids)"
    )


def ids_digest(ids) -> str:
    """A digest of observation ids in their order: equal for the same ids whatever
    their integer width or string dtype."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iub":
        data = ids.astype(np.int64).tobytes()
    elif ids.dtype.kind == "f":
        data = ids.astype(np.float64).tobytes()
    else:
        data = "\0".join(map(str, ids.ravel().tolist())).encode()
    return hashlib.sha256(repr(ids.shape).encode() + data).hexdigest()
