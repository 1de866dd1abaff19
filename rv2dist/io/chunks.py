"""Verified reads of an activation store's chunks.

Every read of a store with the writer's checksums (:mod:`rv2dist.io.checksums`) checks
the chunk it decodes against them before anything looks at the values, in the task that
reads it, so a damaged chunk (cut short, garbled, rewritten by other means) is an error
naming the store, layer, chunk and rows, never other numbers.  A store without them
(written by another tool) is read through xarray and zarr's own decoding.

A layer read from a store as it is (no operation since
:func:`~rv2dist.io.reader.open_activations`) is a dask array whose graph holds nothing
but the reads of its chunks from one :class:`StoredLayer`; :func:`stored_rows` finds that
object there and gives its rows as :class:`StoredRows`, which the task using them reads
itself (no read task, no chunk moved between workers).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass

import numpy as np

from rv2dist.io.checksums import (
    MISMATCH,
    checksum,
    chunk_fault,
    malformed,
    row_chunk_file,
)
from rv2dist.io.errors import StoreError

# the start of the name of a dask array reading a stored layer as it is
_READ_NAME = "rv2dist-read-"


def checked_layers(dataset, path, checksums, layer_names):
    """``dataset`` (from xarray) with each layer read through a :class:`StoredLayer`, which
    checks every chunk against ``checksums`` and names the store, layer, chunk and rows of
    a fault.  In a store without checksums, a layer whose values xarray's decoding leaves
    as stored is read so too, unchecked, so that a chunk zarr cannot decode is named;
    another (scaled, or masking a fill value) stays as xarray reads it."""
    import dask.array as da
    from dask.base import tokenize

    # a store without checksums: its folder's time, as xarray's own names
    token = tokenize(str(path), checksums, os.path.getmtime(path) if checksums is None else None)
    for name in layer_names:
        variable = dataset[name]
        if checksums is None and not _decoded_as_stored(variable):
            continue
        if checksums is not None and name not in checksums:
            raise malformed(path, f"it records no checksums of layer {name!r}")
        reader = StoredLayer(str(path), name, variable.shape, variable.dtype, checksums and checksums[name])
        data = da.from_array(reader, chunks=(variable.chunks[0],) + variable.shape[1:], inline_array=False,
                             name=f"{_READ_NAME}{name}-{token}",
                             meta=np.empty((0,) * variable.ndim, dtype=variable.dtype))
        dataset[name] = variable.copy(data=data)
    return dataset


def _decoded_as_stored(variable):
    """Whether xarray gives a layer's values as zarr stores them: no scale or offset, no
    type change, and no fill value to mask other than NaN (which stays NaN)."""
    encoding = variable.encoding
    if any(key in encoding for key in ("scale_factor", "add_offset", "missing_value")):
        return False
    fill = encoding.get("_FillValue")
    if fill is not None and not (isinstance(fill, (float, np.floating)) and np.isnan(fill)):
        return False
    return np.dtype(encoding.get("dtype", variable.dtype)) == variable.dtype


def _stored_layer(array):
    """The :class:`StoredLayer` that dask array ``array`` reads as it is, else None: its
    graph is :func:`checked_layers`'s read, the layer object and nothing else."""
    name = getattr(array, "name", None)
    layers = getattr(getattr(array, "dask", None), "layers", None)
    if not (isinstance(name, str) and name.startswith(_READ_NAME) and layers is not None and len(layers) == 2
            and name in layers):
        return None
    (source,) = (layer for key, layer in layers.items() if key != name)
    reader = next(iter(source.values()), None) if len(source) == 1 else None
    return reader if isinstance(reader, StoredLayer) else None


def stored_rows(array, row_chunks):
    """Per row chunk of ``row_chunks``, a :class:`StoredRows` of ``array`` when it is a
    float layer read from a store as it is (no operation since
    :func:`~rv2dist.io.reader.open_activations`); None for any other array."""
    layer = _stored_layer(array)
    if layer is None or layer.dtype.kind != "f":
        return None
    return _row_sources(layer, row_chunks)


def _row_sources(layer, row_chunks):
    bounds = np.cumsum((0,) + tuple(row_chunks))
    return [StoredRows(layer, int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


def chunk_checks(dataset):
    """Delayed tasks that read every stored chunk of ``dataset``'s layers (from
    :func:`~rv2dist.io.reader.open_activations`), each verified against its checksum, and
    keep nothing: what a store holds, checked without using it (none for a store without
    checksums, whose fingerprint digests every byte)."""
    import dask

    tasks = []
    for name in dataset.data_vars:
        data = dataset[name].data
        layer = _stored_layer(data)
        if layer is not None and layer.sums is not None:
            tasks += [dask.delayed(_read_and_drop, pure=True)(rows) for rows in _row_sources(layer, data.chunks[0])]
    return tasks


def _read_and_drop(rows):
    rows.read_into(np.empty(rows.shape, rows.dtype))


@dataclass(frozen=True)
class StoredRows:
    """Rows ``start:stop`` of a stored layer, read by the task that uses them: a job whose
    chunk tasks read their own rows moves no row chunk between workers."""

    layer: StoredLayer
    start: int
    stop: int

    @property
    def shape(self) -> tuple:
        """``(rows, units)``."""
        return self.stop - self.start, int(np.prod(self.layer.shape[1:], dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return self.layer.dtype

    def first_rows(self, count) -> StoredRows:
        """The first ``count`` rows of these, as stored rows."""
        return StoredRows(self.layer, self.start, min(self.stop, self.start + count))

    def read_into(self, out, pool=None) -> None:
        """Read the rows into ``out``, a C-ordered array of :attr:`shape` and :attr:`dtype`;
        scratch memory is lent by ``pool`` (an object with ``lend(shape, dtype)`` and
        ``give_back(array)``) when given.  A read failure is :class:`StoredLayer`'s."""
        if out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"rows of layer {self.layer.name!r} are read into a C-ordered {self.dtype} array of "
                             f"shape {self.shape}, not a {out.dtype} array of shape {out.shape}")
        self.layer.read_into(self.start, self.stop, out.reshape((out.shape[0],) + self.layer.shape[1:]), pool)


@contextlib.contextmanager
def _scratch(pool, shape, dtype):
    """An array of ``shape`` for the block's use: lent by ``pool`` and given back, or new."""
    if pool is None:
        yield np.empty(shape, dtype)
        return
    array = pool.lend(shape, dtype)
    try:
        yield array
    finally:
        pool.give_back(array)


class StoredLayer:
    """Read access to one layer of a store (also on a worker): every stored chunk read is
    decoded whole and checked against its checksum (``sums``, one per row chunk; None: a
    store without them, read through zarr unchecked), and any fault is a
    :class:`StoreError` naming the store, layer, chunk and rows."""

    def __init__(self, path, name, shape, dtype, sums=None):
        self.path, self.name, self.shape, self.dtype = str(path), name, tuple(shape), np.dtype(dtype)
        self.sums = None if sums is None else tuple(sums)
        self.ndim = len(self.shape)
        self._array = self._blosc_only = None

    def __getstate__(self):
        return {**self.__dict__, "_array": None, "_blosc_only": None}

    def _open(self):
        import zarr

        if self._array is None:
            try:
                array = zarr.open_array(os.path.join(self.path, self.name), mode="r")
            except Exception as error:
                raise self._unopened(error) from None
            self._array, self._blosc_only = array, _blosc_only(array)
        return self._array

    def _unopened(self, error):
        if not os.path.isdir(self.path):
            # a worker in another folder, or on a machine without the store: not damage
            return StoreError(f"{self.path}: no such store where this task runs (host {socket.gethostname()}); "
                              "every worker must see the store at this path")
        return StoreError(f"{self.path}: layer {self.name!r} cannot be opened ({type(error).__name__}: {error}); "
                          "the store is damaged")

    def __getitem__(self, key):
        """``layer[key]`` (dask's reads): the stored chunks the rows of ``key`` touch, read
        whole and checked, then indexed."""
        key = key if isinstance(key, tuple) else (key,)
        span = _RowSpan.of(key[0] if key else slice(None), self.shape[0])
        block = np.empty((span.high - span.low,) + self.shape[1:], self.dtype)
        self.read_into(span.low, span.high, block)
        return block[(span.local,) + key[1:]]

    def read_into(self, start, stop, out, pool=None):
        """Read rows ``start:stop`` into ``out`` (a C-ordered array of their shape);
        scratch memory lent by ``pool`` when given (see :meth:`StoredRows.read_into`).

        Every stored chunk the range touches is decoded whole and checked (one at the
        range's edges into scratch memory, the rows wanted copied from it).  A whole
        chunk compressed by Blosc alone is decoded from its file straight into ``out``:
        zarr would decode it into a fresh array first and copy that, and fresh memory
        costs page faults on every page."""
        array = self._open()
        step = array.chunks[0]
        for index in range(start // step, -(-stop // step)):
            low, high = index * step, min(self.shape[0], (index + 1) * step)
            first, last = max(start, low), min(stop, high)
            target = out[first - start : last - start]
            if (first, last) == (low, high):
                self._read_chunk(array, index, target, pool)
            elif self.sums is None:
                self._read_rows(array, index, first, last, target)
            else:
                with _scratch(pool, (high - low,) + self.shape[1:], self.dtype) as whole:
                    self._read_chunk(array, index, whole, pool)
                    target[...] = whole[first - low : last - low]

    def _read_chunk(self, array, index, out, pool):
        """Stored chunk ``index`` (all its rows) into ``out``, checked when sums are known."""
        low = index * array.chunks[0]
        full = out.shape[0] == array.chunks[0]
        if not (self.sums is not None and self._blosc_only and full and self._decode_chunk(array, index, out, pool)):
            self._read_rows(array, index, low, low + out.shape[0], out)
        if self.sums is not None:
            self._verify(array, index, out)

    def _verify(self, array, index, out):
        """Check stored chunk ``index``, decoded into ``out``, against its checksum."""
        if checksum(out) != self.sums[index]:
            present = os.path.exists(row_chunk_file(self.path, self.name, array, index))
            raise self._fault(array, index, MISMATCH if present else "is missing")

    def _read_rows(self, array, index, first, last, out):
        """Rows ``first:last`` of stored chunk ``index`` through zarr's decoding."""
        try:
            array.get_basic_selection((slice(first, last),) + (slice(None),) * (self.ndim - 1), out=_zarr_out(out))
        except Exception as error:
            raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None

    def _decode_chunk(self, array, index, target, pool):
        """Decode stored chunk ``index`` (all of its rows) into ``target``; False where it
        has no file (zarr then gives its fill value)."""
        path = row_chunk_file(self.path, self.name, array, index)
        try:
            file = open(path, "rb", buffering=0)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None
        with file:
            size = os.fstat(file.fileno()).st_size
            # rounded up, so that a thread keeps few of these between chunks of other sizes
            with _scratch(pool, (-(-size // 2**22) * 2**22,), np.uint8) as encoded:
                self._decode_file(file, encoded[:size], array, index, target)
        return True

    def _decode_file(self, file, encoded, array, index, target):
        """Read the Blosc frame of stored chunk ``index`` from ``file`` into ``encoded`` (of
        the file's size) and decode it into ``target``."""
        from numcodecs import blosc

        try:
            if file.readinto(encoded) != encoded.size:
                raise self._fault(array, index, "cannot be read (the file ended early)")
            # a Blosc frame's header gives its decoded size in bytes 4 to 7
            decoded_bytes = int.from_bytes(encoded[4:8].tobytes(), "little") if encoded.size >= 16 else -1
            if decoded_bytes != target.nbytes:
                raise self._fault(array, index, f"cannot be read (it decodes to {decoded_bytes:,} bytes, "
                                                f"not {target.nbytes:,})")
            blosc.decompress(encoded, target)
        except StoreError:
            raise
        except Exception as error:
            raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None

    def _fault(self, array, index, reason):
        if not os.path.isdir(self.path):
            return self._unopened(FileNotFoundError(self.path))
        step = array.chunks[0]
        return chunk_fault(self.path, f"layer {self.name!r}", index, index * step,
                           min(self.shape[0], (index + 1) * step), reason)


@dataclass(frozen=True)
class _RowSpan:
    """The rows a selection takes of ``n``: all lie in ``low:high``, and ``local``
    selects them from those."""

    low: int
    high: int
    local: object

    @classmethod
    def of(cls, rows, n):
        """The span of ``rows`` (a slice, an integer or an index array) of ``n``."""
        if isinstance(rows, (slice, int, np.integer)):
            picked = range(n)[rows]
            if isinstance(picked, int):
                return cls(picked, picked + 1, 0)
            if not picked:
                return cls(0, 0, slice(0, 0))
            low, high = min(picked[0], picked[-1]), max(picked[0], picked[-1]) + 1
            stop = picked.stop - low
            return cls(low, high, slice(picked.start - low, stop if stop >= 0 else None, picked.step))
        positions = np.arange(n)[rows]
        if not positions.size:
            return cls(0, 0, positions)
        low = int(positions.min())
        return cls(low, int(positions.max()) + 1, positions - low)


def _blosc_only(array):
    """Whether ``array``'s stored chunks are its rows (all of the other axes) as raw
    native-order bytes compressed by Blosc alone, one file per chunk (zarr v3, as
    :class:`~rv2dist.io.writer.ActivationWriter` writes them)."""
    metadata = getattr(array, "metadata", None)
    if getattr(metadata, "zarr_format", 2) != 3 or tuple(array.chunks[1:]) != tuple(array.shape[1:]):
        return False
    from zarr.codecs import BloscCodec, BytesCodec

    codecs = metadata.codecs
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        return False
    endian = codecs[0].endian
    return array.dtype.itemsize == 1 or (endian is not None and endian.value == sys.byteorder)


def _zarr_out(array):
    """``array`` as the ``out`` of a zarr read: zarr 3 takes its own buffer type."""
    try:
        from zarr.buffer.cpu import NDBuffer
    except ImportError:  # zarr 2 takes the array itself
        return array
    return NDBuffer.from_numpy_array(array)
