"""Opening activation stores: checked against the schema and their checksums, read
lazily through :mod:`rv2dist.io.chunks`; a store's summary and content fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rv2dist.io.atomic import leftovers, partials, set_aside
from rv2dist.io.checksums import verified_checksums
from rv2dist.io.chunks import checked_layers
from rv2dist.io.errors import StoreError
from rv2dist.io.schema import layer_arrays, layer_order, network_name, validate_dataset

# zarr's metadata files: all a fingerprint reads of a store with checksums
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def open_activations(path):
    """Open an activation store lazily (dask-backed) and validate it.

    Raises
    ------
    StoreError
        Naming the path and the fault: missing, not a zarr store, incomplete, or not in
        the schema (no ``obs``, layers of different length, unknown layers).
    """
    path = Path(path)
    if not path.exists():
        raise _absent(path)
    if not path.is_dir():
        raise StoreError(f"{path}: not an activation store (a zarr store is a directory)")
    # the tasks that read it may run in other folders (workers of a cluster started elsewhere)
    path = path.absolute()
    checksums = verified_checksums(path)
    try:
        dataset = _open_zarr(path)
    except Exception as error:  # zarr raises several types for a non-store
        raise _unreadable(path, error) from None
    dataset = validate_dataset(dataset, source=str(path))
    return checked_layers(dataset, path, checksums, layer_order(dataset, str(path)))


def _open_zarr(path):
    """xarray's lazy view of the store at ``path``: from its consolidated metadata, or,
    for a store another tool wrote without them, from each array's own (where xarray's
    own fallback would warn about the store's layout)."""
    import xarray as xr

    try:
        return xr.open_zarr(path, chunks={}, consolidated=True)
    except Exception:  # no consolidated metadata (zarr raises several types)
        return xr.open_zarr(path, chunks={}, consolidated=False)


def _absent(path):
    """The error for a store not at ``path``, saying what an interrupted write left."""
    aside = set_aside(path)
    if aside:
        return StoreError(f"{path}: its replacement was interrupted; the previous store is whole at "
                          f"{aside[0]} (rename it back, or write the store again)")
    left = partials(path)
    if left:
        return StoreError(f"{path}: its write was interrupted ({left[0].name} is left); write it again")
    return StoreError(f"{path}: no such activation store")


@dataclass(frozen=True)
class _ArrayMetadata:
    """An array's metadata as a store's file describes it."""

    name: str
    file: str
    metadata: dict


def _unreadable(path, error):
    """The error for a store zarr cannot open, naming the array and attribute at fault
    where an array's metadata declares complex numbers (whose fill value zarr then
    cannot read)."""
    for found in _array_metadata(path):
        declared = found.metadata.get("data_type", found.metadata.get("dtype"))
        with contextlib.suppress(TypeError):
            if np.dtype(declared).kind == "c":
                return StoreError(f"{path}: array {found.name!r} declares data_type {declared!r} in {found.file} "
                                  "(complex); activations must be real numbers (float, integer or boolean)")
    return StoreError(f"{path}: not a zarr store ({type(error).__name__}: {error})")


def _array_metadata(path):
    """Every array the store's metadata files describe (the consolidated ones and each
    array's own), as :class:`_ArrayMetadata`."""
    found = []
    for file in (path / "zarr.json", path / ".zmetadata"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            document = json.loads(file.read_text())
            entries = (document.get("consolidated_metadata") or {}).get("metadata") or document.get("metadata", {})
            found += [_ArrayMetadata(key.split("/")[0], file.name, value) for key, value in entries.items()
                      if isinstance(value, dict) and (value.get("node_type") == "array" or key.endswith(".zarray"))]
    for file in sorted(path.glob("*/zarr.json")) + sorted(path.glob("*/.zarray")):
        with contextlib.suppress(OSError, ValueError):
            found.append(_ArrayMetadata(file.parent.name, f"{file.parent.name}/{file.name}",
                                        json.loads(file.read_text())))
    return [entry for entry in found if isinstance(entry.metadata, dict)]


def _megabytes(path):
    """MiB that ``path`` (a file, or a folder and all below it) takes on disk."""
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files) / 2**20


def describe(path) -> str:
    """A readable summary of a store: network, layers with units, n_obs, chunks, size,
    and what interrupted writes left beside it."""
    dataset = open_activations(path)
    path = Path(path)
    n = dataset.sizes["obs"]
    lines = [
        f"store      {path}",
        f"network    {network_name(dataset)}",
        f"n_obs      {n:,}",
        f"size       {_megabytes(path):.1f} MiB on disk",
    ]
    layers = layer_arrays(dataset)
    width = max(11, *(len(name) for name, _ in layers))  # the longest name sets the column
    lines.append(f"layers     {'name':<{width}} units     dtype     row chunks")
    for name, array in layers:
        units = int(np.prod(array.shape[1:], dtype=np.int64))
        chunks = array.chunks[0] if hasattr(array, "chunks") else (n,)
        lines.append(f"           {name:<{width}} {units:<9,} {str(array.dtype):<9} {len(chunks)} x <= {max(chunks):,}")
    recorded = verified_checksums(path.absolute()) is not None
    lines.append("chunks     " + ("all present; each checked against its checksum when read" if recorded
                                  else "no checksums (written by another tool or an older rv2dist)"))
    lines += [f"leftover   {leftover} ({_megabytes(leftover):.1f} MiB) from an interrupted write or replace; "
              "no store uses it: delete it" for leftover in leftovers(path)]
    return "\n".join(lines)


def store_fingerprint(path) -> str:
    """A digest of a store's content: its metadata (with the writer's per-chunk
    checksums, so no data is read) or, for a store without checksums, every file's
    bytes.  Copies, touches and restored times leave it alone; any rewrite with other
    data changes it."""
    path = Path(path)
    recorded = verified_checksums(path.absolute()) is not None
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        if recorded and file.name not in _METADATA_FILES:
            continue
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(2**24), b""):
                digest.update(block)
    return digest.hexdigest()
