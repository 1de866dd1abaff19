"""The activation store: the only module that reads or writes files.

One network is one zarr store written through xarray: a dimension ``obs`` with a
coordinate of observation ids, one data variable per layer with dims ``("obs", ...)``,
and dataset attrs ``network``, ``layers`` (depth order) and free-form provenance.
Every layer shares one row chunking.  A store is written into a hidden sibling and
moved into place when complete (an atomic exchange over an old one), so an interrupted
write never looks finished.  The writer records a CRC-32C of every chunk in the attr
``rv2dist_checksums``: opening checks that every chunk is on disk, every read checks the
chunk it decodes (:mod:`rv2dist.chunks`), and jobs fingerprint the store by these
(content, not file times).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rv2dist.io.inputs import check_id_values, first_repeated

COMPLETE_ATTR = "rv2dist_complete"
# per array (layers and "obs"), the CRC-32C of each row chunk as written: what the store
# holds, checked on every read, and its content fingerprint
CHECKSUMS_ATTR = "rv2dist_checksums"
# a row chunk of 8,192 rows of a 1,024-unit float32 layer: whole chunks fit a job's tasks
# on 2 GB workers, which then need no rechunk (measured 16 % faster than 64 MiB chunks)
DEFAULT_CHUNK_BYTES = 32 * 2**20
RESERVED_NAMES = frozenset({"obs"})


class StoreError(ValueError):
    """An activation store is missing, malformed or incomplete."""


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def _leftover_partials(path: Path):
    return sorted(path.parent.glob(f".{path.name}.partial-*"))


def _set_aside_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")


def _set_aside(path: Path):
    return sorted(path.parent.glob(f".{path.name}.replaced-*"))


def chunk_rows(layers, chunk_bytes=DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that the widest layer's chunk holds about ``chunk_bytes``."""
    widest = max(int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in layers.values())
    return max(1, int(chunk_bytes // max(1, widest)))


def _unit_dims(name, array):
    extra = array.ndim - 1
    if extra == 1:
        return (f"{name}_unit",)
    return tuple(f"{name}_dim{i}" for i in range(1, extra + 1))


def write_activations(path, layers, *, obs=None, attrs=None, network=None,
                      chunk_bytes=DEFAULT_CHUNK_BYTES, zarr_format=3, overwrite=False) -> None:
    """Write one network's activations as an activation store.

    Parameters
    ----------
    path : str or Path
        Directory of the zarr store to create.
    layers : mapping of str to array
        ``{layer name: array (n_obs, ...)}`` in depth order (numpy, memory-mapped or
        dask arrays, or nested lists; a dask array is computed one row chunk at a time).
    obs : sequence, optional
        Observation ids, one per row, all integers, all floats or all strings (bytes
        are kept as UTF-8 text); default ``0 .. n_obs - 1``.
    attrs : mapping, optional
        Free-form provenance stored in the dataset attrs (JSON-serialisable values).
    network : str, optional
        Network name; default: the store's file name without suffix.
    chunk_bytes : int
        Target bytes of the widest layer's row chunk; all layers share its rows.
    zarr_format : {3, 2}
        Zarr format to write.
    overwrite : bool
        Replace an existing store at ``path``.

    Raises
    ------
    StoreError
        When ``path`` exists (without ``overwrite``, also when another writer put a store
        there meanwhile), layers disagree on n_obs, or ``obs`` has the wrong length,
        mixes kinds of ids or repeats an id.
    TypeError
        When ``layers`` is not a mapping.
    """
    path = Path(path)
    layers = _layer_mapping(path, layers)
    if not layers:
        raise StoreError(f"{path}: no layers to write")
    n = None
    for name, array in layers.items():
        if array.ndim < 1 or (n is not None and array.shape[0] != n):
            raise StoreError(f"{path}: layer {name!r} has shape {tuple(array.shape)}, expected {n} observations")
        n = array.shape[0]
    obs = np.arange(n) if obs is None else _id_array(path, obs)
    if obs.shape != (n,):
        raise StoreError(f"{path}: {len(obs)} observation ids for {n} observations")
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, (int, np.integer)) or chunk_bytes < 1:
        raise StoreError(f"{path}: chunk_bytes must be a positive whole number, not {chunk_bytes!r}")
    rows = chunk_rows(layers, chunk_bytes)
    with ActivationWriter(path, network=network, attrs=attrs, rows_per_chunk=rows,
                          zarr_format=zarr_format, overwrite=overwrite) as writer:
        for start in range(0, n, rows):
            block = {name: array[start:start + rows] for name, array in layers.items()}
            if any(_is_lazy(a) for a in block.values()):
                import dask

                block = dict(zip(block, dask.compute(*block.values())))
            writer.append(block, obs=obs[start:start + rows])


def _is_lazy(array):
    return type(array).__module__.startswith("dask.")


def _layer_mapping(path, layers):
    """``layers`` as ``{name: array}``, a value without a shape (nested lists) as a numpy array."""
    if not isinstance(layers, Mapping):
        raise TypeError(f"{path}: layers must be a mapping {{layer name: array}}, not a {type(layers).__name__} "
                        "(a list of arrays: dict(zip(names, arrays)))")
    arrays = {}
    for name, value in layers.items():
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            try:
                value = np.asarray(value)
            except ValueError as error:  # ragged nested lists
                raise StoreError(f"{path}: layer {name!r} is not an array of one shape ({error})") from None
        arrays[name] = value
    return arrays


# what a store keeps as observation ids, by numpy dtype kind (bytes are kept as text)
ID_KINDS = {"i": "integers", "u": "integers", "f": "floats", "b": "booleans", "U": "strings", "T": "strings"}


def _id_array(path, obs):
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


class ActivationWriter:
    """Stream batches of observations into a new activation store.

    Batches are copied into one row chunk per layer and written when the chunk is
    full, so memory stays at one chunk per layer whatever the number of observations.
    The store is built in a hidden sibling and renamed into place by :meth:`close`;
    an interrupted write leaves no store at ``path`` (and :func:`open_activations`
    says the write was interrupted).  Use as a context manager: leaving the block by
    an exception discards the partial store.

    Parameters
    ----------
    path : str or Path
        Directory of the zarr store to create.
    network : str, optional
        Network name; default: the store's file name without suffix.
    attrs : mapping, optional
        Free-form provenance stored in the dataset attrs (JSON-serialisable values).
    chunk_bytes : int
        Target bytes of the widest layer's row chunk (used when ``rows_per_chunk`` is None).
    rows_per_chunk : int, optional
        Rows per chunk for every layer; default from ``chunk_bytes`` and the first batch.
    zarr_format : {3, 2}
        Zarr format to write.
    overwrite : bool
        Replace an existing store at ``path`` when the new one is complete.

    Examples
    --------
    >>> with ActivationWriter("net.zarr", network="net") as writer:  # doctest: +SKIP
    ...     for batch in batches:
    ...         writer.append({"c1": batch_c1, "fc1": batch_fc1})
    """

    def __init__(self, path, *, network=None, attrs=None, chunk_bytes=DEFAULT_CHUNK_BYTES,
                 rows_per_chunk=None, zarr_format=3, overwrite=False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path} already exists; pass overwrite=True to replace it "
                             "(--overwrite on the command line)")
        if self.path.exists() and not (self.path.is_dir() and _is_zarr(self.path)):
            raise StoreError(f"{self.path}: exists and is not a store; rv2dist replaces only stores")
        if not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        if zarr_format not in (2, 3):
            raise StoreError(f"{self.path}: zarr_format must be 2 or 3, not {zarr_format!r}")
        for option, value in (("chunk_bytes", chunk_bytes), ("rows_per_chunk", rows_per_chunk)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise StoreError(f"{self.path}: {option} must be a positive whole number, not {value!r}")
        self.network = network or self.path.name.split(".")[0]
        self.attrs = dict(attrs or {})
        self.chunk_bytes = chunk_bytes
        self.rows = rows_per_chunk
        self.zarr_format = zarr_format
        self.overwrite = overwrite
        self.n_obs = 0
        self._partial = _partial_path(self.path)
        self._layout = None
        self._buffers = None
        self._ids = None
        self._ids_given = None
        self._filled = 0
        self._written = 0
        self._checksums = {}
        self._state = "open"  # then "closed" (the store is in place) or "discarded"

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            self.abort()
        elif self._state == "open":
            self.close()

    def _check_open(self):
        if self._state != "open":
            done = "closed: the store was written" if self._state == "closed" else "discarded: nothing was kept"
            raise StoreError(f"{self.path}: this writer is {done}; write with a new ActivationWriter "
                             "(overwrite=True replaces a store)")

    def append(self, layers, obs=None) -> None:
        """Add a batch: ``{layer: array (batch, ...)}`` with the same layers, order and
        unit shapes every time; ``obs`` the batch's ids (given for every batch or none, of
        one kind: see :func:`write_activations`)."""
        self._check_open()
        layers = {name: np.asarray(array) for name, array in _layer_mapping(self.path, layers).items()}
        obs = None if obs is None else _id_array(self.path, obs)
        rows = self._check_batch(layers, obs)
        if rows == 0:
            return
        ids = np.arange(self.n_obs, self.n_obs + rows) if obs is None else obs
        for name, array in layers.items():
            self._check_finite(name, array, ids)
        offset = 0
        while offset < rows:
            take = min(self.rows - self._filled, rows - offset)
            for name, array in layers.items():
                self._buffers[name][self._filled:self._filled + take] = array[offset:offset + take]
            self._ids[self._filled:self._filled + take] = ids[offset:offset + take]
            self._filled += take
            offset += take
            if self._filled == self.rows:
                self._flush()
        self.n_obs += rows

    def _check_batch(self, layers, obs):
        if not layers:
            raise StoreError(f"{self.path}: a batch holds no layers")
        sizes = {name: array.shape[0] if array.ndim else None for name, array in layers.items()}
        rows = next(iter(sizes.values()))
        for name, size in sizes.items():
            if size != rows:
                raise StoreError(f"{self.path}: layer {name!r} has {size} rows in a batch of {rows}")
        layout = {name: (array.shape[1:], array.dtype) for name, array in layers.items()}
        if self._layout is None:
            self._start(layers, layout, obs)
        elif layout != self._layout:
            changed = next((name for name in set(layout) | set(self._layout)
                            if layout.get(name) != self._layout.get(name)), None)
            raise StoreError(
                f"{self.path}: layer {changed!r} changed between batches: "
                f"{self._layout.get(changed)} then {layout.get(changed)} (unit shape, dtype)"
            )
        elif list(layout) != list(self._layout):
            raise StoreError(f"{self.path}: layers came in another order: {list(layout)}")
        if (obs is not None) != self._ids_given:
            raise StoreError(f"{self.path}: give observation ids with every batch or with none")
        if obs is not None and len(obs) != rows:
            raise StoreError(f"{self.path}: {len(obs)} observation ids for a batch of {rows}")
        if obs is not None and rows and ID_KINDS[obs.dtype.kind] != ID_KINDS[self._id_dtype.kind]:
            raise StoreError(f"{self.path}: this batch's observation ids are {ID_KINDS[obs.dtype.kind]}, the "
                             f"first batch's {ID_KINDS[self._id_dtype.kind]}; give every id as one kind")
        check_id_values(obs, self.path, first=self.n_obs)
        return rows

    def _check_finite(self, name, array, ids):
        """NaN or Inf in a layer is an error naming it and the first observation holding
        one: no comparison could use the store."""
        if array.dtype.kind != "f" or not array.size:
            return
        # one float64 sum (no temporary) decides for finite data; the exact check runs
        # only when it is not finite, which huge finite float64 values can also make it
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(array, dtype=np.float64)):
                return
            finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        if finite.all():
            return
        row = int(np.argmin(finite))
        values = array[row].ravel()
        ident = ids[row].item() if hasattr(ids[row], "item") else ids[row]
        raise StoreError(f"{self.path}: layer {name!r} holds {values[~np.isfinite(values)][0]} at observation "
                         f"{self.n_obs + row:,} (id {ident!r}); activations must be finite")

    def _start(self, layers, layout, obs):
        _check_layer_names(self.path, layers)
        for name, array in layers.items():
            if array.ndim < 1:
                raise StoreError(f"{self.path}: layer {name!r} is a scalar, not (observations, ...)")
            if array.dtype.kind not in "fiub":
                raise StoreError(f"{self.path}: layer {name!r} has dtype {array.dtype}, not a number type")
        self._layout = layout
        self._ids_given = obs is not None
        if self.rows is None:
            self.rows = chunk_rows(layers, self.chunk_bytes)
        self._buffers = {name: np.empty((self.rows,) + shape, dtype) for name, (shape, dtype) in layout.items()}
        self._id_dtype = obs.dtype if obs is not None else np.dtype(np.int64)
        self._ids = np.empty(self.rows, object if self._id_dtype.kind in "UT" else self._id_dtype)

    def _flush(self):
        import xarray as xr

        count = self._filled
        variables = {
            name: xr.Variable(("obs",) + _unit_dims(name, buffer), buffer[:count],
                              encoding=self._encoding(buffer) if not self._written else {})
            for name, buffer in self._buffers.items()
        }
        # string ids stay objects (variable-length strings): fixed-width ones could not append longer ids
        ids = self._ids[:count]
        meta = dict(self.attrs)
        meta.update(network=self.network, layers=list(self._buffers))
        meta[COMPLETE_ATTR] = 0
        # every write sets the attrs: xarray's append replaces them
        dataset = xr.Dataset(variables, coords={"obs": ids}, attrs=_json_attrs(meta))
        from rv2dist.io.chunks import checksum

        for name, buffer in self._buffers.items():
            self._checksums.setdefault(name, []).append(checksum(buffer[:count]))
        self._checksums.setdefault("obs", []).append(checksum(ids))
        # every chunk is written, even one of fill values, so that a missing one is a fault
        with _quiet_zarr(), _naming(self.path, "cannot write the store"):
            if self._written:
                dataset.to_zarr(self._partial, append_dim="obs", consolidated=False, write_empty_chunks=True)
            else:
                dataset.to_zarr(self._partial, mode="w-", zarr_format=self.zarr_format, consolidated=False,
                                write_empty_chunks=True)
        self._written += count
        self._filled = 0

    def _encoding(self, buffer):
        """A layer's chunks and codec: LZ4 after bit shuffling decodes at 1.6x the speed
        of zarr's default (zstd) for 26-31 % more disk on ReLU activations, and jobs read
        every chunk once per comparison."""
        if self.zarr_format == 2:
            from numcodecs import Blosc

            codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
        else:
            from zarr.codecs import BloscCodec

            codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
        return {"chunks": (self.rows,) + buffer.shape[1:], "compressors": [codec]}

    def close(self) -> None:
        """Write what is buffered, check the ids, mark the store complete and move it
        into place (without ``overwrite``, never over a store another writer put there
        meanwhile).  Closing a closed writer does nothing."""
        import zarr

        if self._state == "closed":
            return
        self._check_open()
        try:
            if self._filled:
                self._flush()
            if not self._written:
                raise StoreError(f"{self.path}: no observations were written")
            group = zarr.open_group(self._partial, mode="r+")
            ids = np.asarray(group["obs"][:])
            if len(np.unique(ids)) != len(ids):
                values, counts = np.unique(ids, return_counts=True)
                raise StoreError(f"{self.path}: observation id {values[counts > 1].tolist()[0]!r} repeats")
            with _quiet_zarr(), _naming(self.path, "cannot write the store"):
                group.attrs[CHECKSUMS_ATTR] = json.dumps(self._checksums)
                group.attrs[COMPLETE_ATTR] = 1
                zarr.consolidate_metadata(self._partial)
                _commit(self._partial, self.path, replace=self.overwrite)
            self._state = "closed"
        finally:
            if self._state != "closed":
                self._state = "discarded"
            self._discard_partial()

    def abort(self) -> None:
        """Discard everything written so far (after :meth:`close`, nothing)."""
        if self._state != "closed":
            self._state = "discarded"
            self._discard_partial()

    def _discard_partial(self):
        """Remove the hidden partial store, once zarr's own writes into it have ended
        (after Ctrl-C they go on in zarr's thread, and would recreate files); a second
        Ctrl-C meanwhile takes effect after."""
        with _deferred_interrupts():
            _wait_for_zarr_writes()
            _discard(self._partial)


def _wait_for_zarr_writes(timeout=60.0):
    """Wait (at most ``timeout`` seconds) until zarr's event loop has finished the work
    given to it: zarr 3 writes chunks in a thread of its own, where a write whose caller
    was interrupted goes on."""
    import asyncio
    import concurrent.futures

    try:
        from zarr.core.sync import loop
    except ImportError:  # zarr 2 writes in the calling thread
        return
    running = loop[0]
    if running is None or running.is_closed() or not running.is_running():
        return

    async def the_rest():
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others)

    with contextlib.suppress(concurrent.futures.TimeoutError):
        asyncio.run_coroutine_threadsafe(the_rest(), running).result(timeout)


@contextlib.contextmanager
def _deferred_interrupts():
    """Ctrl-C during the block takes effect when it ends (signals arrive in the main
    thread only): a clean-up does not stop halfway."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, caught[0])


@contextlib.contextmanager
def _quiet_zarr():
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is an extension of its format
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # string observation ids: zarr 3 stores them in a type its spec has not fixed yet
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


def _commit(partial: Path, path: Path, replace=True):
    """Put ``partial`` at ``path`` so that a crash at any instant leaves the old or the
    new version whole: a file by one rename; a folder by an atomic exchange where the
    OS has one, else old aside, new in, old deleted (an interrupted swap leaves the old
    version whole under a hidden name, and :func:`open_activations` says where).
    Without ``replace``, a StoreError when something is at ``path`` (checked and moved
    in one step where the OS can)."""
    if not replace:
        if not _move_new(partial, path):
            raise StoreError(f"{path} appeared while this store was written (another writer?) and is left as it "
                             "is; pass overwrite=True (--overwrite) to replace it")
        return
    if not os.path.lexists(path) or not path.is_dir():
        os.replace(partial, path)
        return
    if _exchange(partial, path):
        _discard(partial)  # now the old version
        return
    aside = _set_aside_path(path)
    os.replace(path, aside)
    os.replace(partial, path)
    _discard(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where
    the OS or file system cannot."""
    return _renameat2(a, b, _RENAME_EXCHANGE) == 0


def _move_new(partial: Path, path: Path) -> bool:
    """Move ``partial`` to ``path`` unless something is there: False then.  In one step
    where the OS can (Linux renameat2 with RENAME_NOREPLACE), else a check and a rename."""
    error = _renameat2(partial, path, _RENAME_NOREPLACE)
    if error in (0, errno.EEXIST):
        return error == 0
    if os.path.lexists(path):
        return False
    os.rename(partial, path)
    return True


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # renameat2's flags (linux/fs.h)


def _renameat2(a: Path, b: Path, flags: int) -> int:
    """Linux renameat2 on two paths: 0 when done, else the error number (ENOSYS where
    the C library has no such call)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return errno.ENOSYS
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), flags) == 0:
        return 0
    return ctypes.get_errno()


def _discard(partial: Path):
    if partial.is_dir():
        shutil.rmtree(partial)
    elif partial.exists():
        partial.unlink()


@contextlib.contextmanager
def _naming(path, what):
    """An OSError inside (a full disk, a read-only folder) as a StoreError naming ``path``."""
    try:
        yield
    except OSError as error:
        raise StoreError(f"{path}: {what} ({error.strerror or error})") from None


@contextlib.contextmanager
def _written_atomically(path: Path):
    """Yield a hidden sibling path to write into; on success it replaces ``path``, on
    failure it is removed, so no partial output is ever left under ``path``."""
    partial = _partial_path(path)
    try:
        yield partial
        _commit(partial, path)
    finally:
        _discard(partial)


def _json_attrs(meta):
    return {k: (v if isinstance(v, (str, int, float, list)) else json.dumps(v)) for k, v in meta.items()}


def open_activations(path):
    """Open an activation store lazily (dask-backed) and validate it.

    Raises
    ------
    StoreError
        Naming the path and the fault: missing, not a zarr store, incomplete, or not in
        the schema (no ``obs``, layers of different length, unknown layers).
    """
    import xarray as xr

    from rv2dist.io.chunks import checked_layers, verified_checksums

    path = Path(path)
    if not path.exists():
        aside = _set_aside(path)
        if aside:
            raise StoreError(f"{path}: its replacement was interrupted; the previous store is whole at "
                             f"{aside[0]} (rename it back, or write the store again)")
        partials = _leftover_partials(path)
        if partials:
            raise StoreError(f"{path}: its write was interrupted ({partials[0].name} is left); write it again")
        raise StoreError(f"{path}: no such activation store")
    if not path.is_dir():
        raise StoreError(f"{path}: not an activation store (a zarr store is a directory)")
    # the tasks that read it may run in other folders (workers of a cluster started elsewhere)
    path = path.absolute()
    checksums = verified_checksums(path)
    try:
        dataset = xr.open_zarr(path, chunks={}, consolidated=None)
    except Exception as error:  # zarr raises several types for a non-store
        raise _unreadable(path, error) from None
    dataset = validate_dataset(dataset, source=str(path))
    return checked_layers(dataset, path, checksums, _layer_order(dataset, str(path)))


def _unreadable(path, error):
    """The error for a store zarr cannot open, naming the array and attribute at fault
    where an array's metadata declares complex numbers (whose fill value zarr then
    cannot read)."""
    for name, where, metadata in _array_metadata(path):
        declared = metadata.get("data_type", metadata.get("dtype"))
        with contextlib.suppress(TypeError):
            if np.dtype(declared).kind == "c":
                return StoreError(f"{path}: array {name!r} declares data_type {declared!r} in {where} (complex); "
                                  "activations must be real numbers (float, integer or boolean)")
    return StoreError(f"{path}: not a zarr store ({type(error).__name__}: {error})")


def _array_metadata(path):
    """``(array name, file, metadata dict)`` of every array the store's metadata files
    describe (the consolidated ones and each array's own)."""
    found = []
    for file in (path / "zarr.json", path / ".zmetadata"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            document = json.loads(file.read_text())
            entries = (document.get("consolidated_metadata") or {}).get("metadata") or document.get("metadata", {})
            found += [(key.split("/")[0], file.name, value) for key, value in entries.items()
                      if isinstance(value, dict) and (value.get("node_type") == "array" or key.endswith(".zarray"))]
    for file in sorted(path.glob("*/zarr.json")) + sorted(path.glob("*/.zarray")):
        with contextlib.suppress(OSError, ValueError):
            found.append((file.parent.name, f"{file.parent.name}/{file.name}", json.loads(file.read_text())))
    return [entry for entry in found if isinstance(entry[2], dict)]


def validate_dataset(dataset, source="dataset"):
    """Check a Dataset against the store schema; return it with layers in depth order."""
    if "obs" not in dataset.dims:
        raise StoreError(f"{source}: has no 'obs' dimension")
    if dataset.attrs.get(COMPLETE_ATTR, 1) != 1:
        raise StoreError(f"{source}: the store is incomplete (its write did not finish)")
    layers = _layer_order(dataset, source)
    if not layers:
        raise StoreError(f"{source}: holds no layers")
    n = dataset.sizes["obs"]
    for name in layers:
        variable = dataset[name]
        if variable.dims[0] != "obs":
            raise StoreError(f"{source}: layer {name!r} has dims {variable.dims}; the first must be 'obs'")
        if variable.shape[0] != n:
            raise StoreError(f"{source}: layer {name!r} has {variable.shape[0]} observations, not {n}")
        if variable.dtype.kind not in "fiub":
            kind = "complex" if variable.dtype.kind == "c" else "not a real number type"
            raise StoreError(f"{source}: layer {name!r} has dtype {variable.dtype} ({kind}); "
                             "activations must be real numbers (float, integer or boolean)")
    if "obs" in dataset.indexes and not dataset.indexes["obs"].is_unique:
        ids = dataset.indexes["obs"]
        raise StoreError(f"{source}: observation id {np.asarray(ids[ids.duplicated()])[0].item()!r} repeats; "
                         "each observation needs its own id")
    return dataset


def _layer_order(dataset, source):
    declared = dataset.attrs.get("layers")
    if declared is None:
        return [name for name, v in dataset.data_vars.items() if v.dims and v.dims[0] == "obs"]
    if isinstance(declared, str):
        with contextlib.suppress(ValueError):
            declared = json.loads(declared)
    if not isinstance(declared, (list, tuple)) or not all(isinstance(name, str) for name in declared):
        raise StoreError(f"{source}: attribute 'layers' must list the layer names in depth order, "
                         f"not {declared!r:.60}")
    repeated = first_repeated(declared)
    if repeated is not None:
        raise StoreError(f"{source}: attribute 'layers' names layer {repeated!r} twice")
    missing = [name for name in declared if name not in dataset.data_vars]
    if missing:
        raise StoreError(f"{source}: attrs list layer {missing[0]!r}, which the store does not hold")
    return list(declared)


def layer_arrays(dataset):
    """``[(layer name, array (n_obs, ...))]`` in depth order, dask-backed when lazy."""
    return [(name, dataset[name].data) for name in _layer_order(dataset, "dataset")]


def observation_ids(dataset):
    """The observation ids of a store's Dataset (numpy; strings as a unicode array)."""
    ids = np.asarray(dataset["obs"].values)
    return np.array(ids.tolist(), dtype=str) if ids.dtype.kind in "OT" else ids  # object or numpy 2 StringDType


def read_numpy_layers(source, layers=None):
    """Layers saved with numpy: an ``.npz`` file (one array per layer) or a folder of
    ``.npy`` files (one per layer, named by the layer), read without loading ``.npy``
    files into memory.

    Parameters
    ----------
    source : str or Path
        The ``.npz`` file or the folder.
    layers : list of str, optional
        Layers to take, in depth order; default: all, in the ``.npz`` file's order or,
        for a folder, by natural sort of the file names (``c2`` before ``c10``).
        An array named ``obs`` holds observation ids, not a layer.

    Returns
    -------
    (dict, numpy.ndarray or None)
        ``{layer: array}`` (memory-mapped for ``.npy``) and the ids if saved.
    """
    source = Path(source)
    if not source.exists():
        raise StoreError(f"{source}: no such file or folder")
    if source.is_dir():
        files = {f.stem: f for f in source.glob("*.npy")}
        if not files:
            raise StoreError(f"{source}: holds no .npy files")
        arrays = {}
        for name, file in files.items():
            try:
                arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
            except Exception as error:
                raise StoreError(f"{file}: not a .npy array ({type(error).__name__}: {error})") from None
        names = sorted((n for n in arrays if n != "obs"), key=_natural_key)
    elif source.suffix == ".npz":
        try:
            archive = np.load(source, allow_pickle=False)
            arrays = {name: archive[name] for name in archive.files}
        except Exception as error:
            raise StoreError(f"{source}: not an .npz archive ({type(error).__name__}: {error})") from None
        names = [n for n in arrays if n != "obs"]
    else:
        raise StoreError(f"{source}: expected an .npz file or a folder of .npy files")
    return _selected(source, arrays, names, layers), arrays.get("obs")


def _selected(source, arrays, names, wanted):
    """``{name: array}`` of the ``wanted`` layers (default ``names``), in that order."""
    if wanted is not None:
        missing = [name for name in wanted if name not in arrays]
        if missing:
            raise StoreError(f"{source}: has no layer {missing[0]!r}; it has {', '.join(names)}")
        names = list(wanted)
    if not names:
        raise StoreError(f"{source}: holds no layers")
    return {name: arrays[name] for name in names}


def read_labelled_layers(source, layers=None, obs_dim=None):
    """Layers from an HDF5 file (one dataset per layer, the first axis observations; a
    dataset ``obs`` holds ids) or an xarray file (NetCDF, or a zarr store not in the
    activation-store schema) whose sample dimension is ``obs`` or ``obs_dim``.

    Returns
    -------
    (dict, numpy.ndarray or None)
        ``{layer: lazy array}`` in the file's order (or ``layers``'s) and the ids.
    """
    source = Path(source)
    if source.suffix in (".h5", ".hdf5"):
        arrays, ids = _read_hdf5(source)
    else:
        arrays, ids = _read_xarray(source, obs_dim)
    return _selected(source, arrays, [n for n in arrays if n != "obs"], layers), ids


def _read_hdf5(source):
    import dask.array as da
    import h5py

    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise StoreError(f"{source}: not an HDF5 file ({error})") from None
    found = {}

    def collect(name, item):  # visititems stops at the first value returned: return None
        if isinstance(item, h5py.Dataset):
            found[name] = item

    handle.visititems(collect)
    arrays, ids = {}, None
    for path, dataset in found.items():
        if path == "obs":
            ids = dataset[()]
            ids = ids.astype(str) if ids.dtype.kind in "OS" else ids
            continue
        if dataset.ndim == 0:
            raise StoreError(f"{source}: dataset {path!r} is a scalar, not (observations, ...)")
        rows = chunk_rows({path: dataset})
        # nested datasets become "group.name": a layer name holds no '/'
        arrays[path.replace("/", ".")] = da.from_array(dataset, chunks=(rows,) + dataset.shape[1:], lock=True)
    return arrays, ids


def _read_xarray(source, obs_dim):
    import xarray as xr

    try:
        if source.suffix == ".zarr" or source.is_dir():
            dataset = xr.open_zarr(source, chunks={})
        else:
            dataset = xr.open_dataset(source, engine="h5netcdf", chunks={})
    except Exception as error:
        raise StoreError(f"{source}: not a NetCDF file or zarr store ({type(error).__name__}: {error})") from None
    dim = obs_dim or "obs"
    if dim not in dataset.dims:
        raise StoreError(f"{source}: has no dimension {dim!r}; name its sample dimension with --obs-dim "
                         f"(obs_dim=); it has {', '.join(map(str, dataset.dims))}")
    arrays = {str(name): variable.transpose(dim, ...).data for name, variable in dataset.data_vars.items()
              if dim in variable.dims}
    ids = np.asarray(dataset[dim].values) if dim in dataset.coords else None
    return arrays, ids


def _natural_key(name):
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def network_name(dataset, default="network"):
    return str(dataset.attrs.get("network", default))


def describe(path) -> str:
    """A readable summary of a store: network, layers with units, n_obs, chunks, size."""
    dataset = open_activations(path)
    n = dataset.sizes["obs"]
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    lines = [
        f"store      {path}",
        f"network    {network_name(dataset)}",
        f"n_obs      {n:,}",
        f"size       {size / 2**20:.1f} MiB on disk",
    ]
    layers = layer_arrays(dataset)
    width = max(11, *(len(name) for name, _ in layers))  # the longest name sets the column
    lines.append(f"layers     {'name':<{width}} units     dtype     row chunks")
    for name, array in layers:
        units = int(np.prod(array.shape[1:], dtype=np.int64))
        chunks = array.chunks[0] if hasattr(array, "chunks") else (n,)
        lines.append(f"           {name:<{width}} {units:<9,} {str(array.dtype):<9} {len(chunks)} x <= {max(chunks):,}")
    from rv2dist.io.chunks import verified_checksums

    path = Path(path)
    recorded = verified_checksums(path.absolute()) is not None
    lines.append("chunks     " + ("all present; each checked against its checksum when read" if recorded
                                  else "no checksums (written by another tool or an older rv2dist)"))
    for leftover in _leftover_partials(path) + _set_aside(path):
        size = sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file()) if leftover.is_dir() else leftover.stat().st_size
        lines.append(f"leftover   {leftover} ({size / 2**20:.1f} MiB) from an interrupted write or replace; "
                     "no store uses it: delete it")
    return "\n".join(lines)


def store_fingerprint(path) -> str:
    """A digest of a store's content: its metadata (with the writer's per-chunk
    checksums, so no data is read) or, for a store without checksums, every file's
    bytes.  Copies, touches and restored times leave it alone; any rewrite with other
    data changes it."""
    import hashlib

    from rv2dist.io.chunks import verified_checksums

    path = Path(path)
    metadata = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
    recorded = verified_checksums(path.absolute()) is not None
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        if recorded and file.name not in metadata:
            continue
        digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(2**24), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_layer_names(path, layers):
    """Refuse layer names a store could not give back: empty, with a path separator,
    hidden, reserved, or equal to a dimension another layer creates."""
    dims = {dim for name, array in layers.items() for dim in _unit_dims(name, array)}
    for name in layers:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith((".", "__")):
            raise StoreError(f"{path}: layer name {name!r} cannot be stored (empty, a path separator, "
                             "or a leading '.' or '__'); rename the layer")
        if name in RESERVED_NAMES or name in dims:
            raise StoreError(f"{path}: layer name {name!r} is taken by the store's own dimensions; rename the layer")


def check_result_path(path) -> None:
    """Refuse a result path that would replace something not a result (a folder, an
    activation store), before any work is done."""
    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise StoreError(f"{path}: a result must end in .nc or .zarr")
    if not path.parent.exists():
        raise StoreError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir() and not (path.suffix == ".zarr" and _is_zarr(path)):
        raise StoreError(f"{path}: is a folder, not a result; choose another name")
    if path.is_dir() and (path / "obs").exists():
        raise StoreError(f"{path}: is an activation store; a result never replaces one, choose another name")


def write_result(result, path) -> None:
    """Write a result Dataset to ``.nc`` (netCDF) or ``.zarr``, atomically."""
    path = Path(path)
    check_result_path(path)
    with _written_atomically(path) as partial, _naming(path, "cannot write the result"):
        if path.suffix == ".nc":
            # netCDF is built in memory (a result is small) and written with plain file
            # I/O: h5py writing straight to a full disk can crash the process
            import dask

            # a small in-memory result: no distributed lock (xarray would ask the client
            # for one keyed by the in-memory file, which it cannot serve)
            with dask.config.set(scheduler="synchronous"):
                data = result.to_netcdf(engine="h5netcdf")
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            result.to_zarr(partial, mode="w-")


def write_text(path, text) -> None:
    """Write a text file (a report) atomically: the old file or the new one, whole."""
    path = Path(path)
    with _written_atomically(path) as partial, _naming(path, "cannot write"):
        partial.write_text(text, encoding="utf-8")


def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zarray"))


def read_result(path):
    """Read a result written by :func:`write_result` (fully loaded)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such result")
    try:
        if path.suffix == ".zarr":
            result = xr.open_zarr(path).load()
        else:
            result = xr.load_dataset(path, engine="h5netcdf")
    except Exception as error:
        raise StoreError(f"{path}: not a result file ({type(error).__name__}: {error})") from None
    matrices = [name for name, v in result.data_vars.items() if v.dims[-2:] == ("layer_a", "layer_b")]
    if not matrices:
        raise StoreError(f"{path}: not an rv2dist result (no layer_a x layer_b matrix in it)")
    return result
