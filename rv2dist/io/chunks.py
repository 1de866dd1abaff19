"""Verified reads of an activation store's chunks.

:class:`~rv2dist.io.store.ActivationWriter` records a CRC-32C of every row chunk as written
(decoded values) in the store's attr ``rv2dist_checksums``.  Every read of such a store
checks the chunk it decodes against that record before anything looks at the values, in
the task that reads it, so a damaged chunk (cut short, garbled, rewritten by other means)
is an error naming the store, layer, chunk and rows, never other numbers.  A store
without the record (written by another tool) is read through xarray and zarr's own
decoding.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import weakref

import numpy as np

from rv2dist.engine.buffers import KEPT_BUFFERS
from rv2dist.io.store import CHECKSUMS_ATTR, StoreError


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


MISMATCH = "does not match the checksum written with it (changed on disk since, or by another tool)"


def verified_checksums(path):
    """The checksums the writer recorded in the store at ``path`` (absolute), after
    checking that they describe its arrays, that every chunk they list is on disk (a
    directory listing) and that the observation ids match theirs; None for a store
    without them.

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
            raise _malformed(path, f"it lists {len(values)} chunks of {name!r}, which has {chunks}")
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
        raise _malformed(path, f"not JSON: {error}") from None
    if not isinstance(sums, dict) or not sums:
        raise _malformed(path, f"{_short(sums)} is no table of arrays")
    for name, values in sums.items():
        if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in values):
            raise _malformed(path, f"the entry of {name!r} is {_short(values)}, not a list of CRC-32C values")
    return sums


def _malformed(path, why):
    return StoreError(f"{path}: attribute {CHECKSUMS_ATTR!r} is malformed ({why}); the store is damaged, "
                      "write it again")


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_present(path, what, name, array, count):
    rows = array.chunks[0]
    for index in range(count):
        if not os.path.exists(_row_chunk_file(path, name, array, index)):
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


def checked_layers(dataset, path, checksums, layer_names):
    """``dataset`` (from xarray) with each layer read through :class:`_CheckedLayer`, which
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
            raise _malformed(path, f"it records no checksums of layer {name!r}")
        reader = _CheckedLayer(str(path), name, variable.shape, variable.dtype, checksums and checksums[name])
        data = da.from_array(reader, chunks=(variable.chunks[0],) + variable.shape[1:],
                             name=f"rv2dist-read-{name}-{token}",
                             meta=np.empty((0,) * variable.ndim, dtype=variable.dtype))
        _STORED_LAYERS[data.name] = reader
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


# dask array name -> the layer it reads as it is; an entry lives as long as its array
_STORED_LAYERS = weakref.WeakValueDictionary()


def row_ranges(array, row_chunks):
    """Per row chunk of ``row_chunks``, a :class:`RowRange` of ``array`` when it is a
    float layer read from a store as it is (no operation since
    :func:`~rv2dist.io.store.open_activations`); None for any other array."""
    layer = _STORED_LAYERS.get(getattr(array, "name", None))
    if layer is None or layer.dtype.kind != "f":
        return None
    bounds = np.cumsum((0,) + tuple(row_chunks))
    return [RowRange(layer, int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


def share_reads(dataset):
    """Have the layers of ``dataset`` (from :func:`~rv2dist.io.store.open_activations`) read
    by tasks of their own, as any dask array is, instead of by the tasks that use them:
    the graphs of several comparisons then share those reads, and each chunk is read once."""
    for name in dataset.data_vars:
        _STORED_LAYERS.pop(getattr(dataset[name].data, "name", None), None)


def chunk_checks(dataset):
    """Delayed tasks that read every stored chunk of ``dataset``'s layers (from
    :func:`~rv2dist.io.store.open_activations`), each verified against its checksum, and keep
    nothing: what a store holds, checked without using it (none for a store without
    checksums, whose fingerprint digests every byte)."""
    import dask

    tasks = []
    for name in dataset.data_vars:
        data = dataset[name].data
        layer = _STORED_LAYERS.get(getattr(data, "name", None))
        if layer is None or layer.sums is None:
            continue
        bounds = np.cumsum((0,) + tuple(data.chunks[0]))
        tasks += [dask.delayed(_read_and_drop, pure=True)(RowRange(layer, int(start), int(stop)))
                  for start, stop in zip(bounds[:-1], bounds[1:])]
    return tasks


def _read_and_drop(rows):
    RowRange.recycle(rows.read_rows())


class RowRange:
    """Rows ``start:stop`` of a stored layer, read by the task that uses them: a job whose
    chunk tasks read their own rows moves no row chunk between workers."""

    def __init__(self, layer, start, stop):
        self.layer, self.start, self.stop = layer, start, stop

    def first_rows(self, count):
        """The first ``count`` rows of this range, as a range."""
        return RowRange(self.layer, self.start, min(self.stop, self.start + count))

    def read_rows(self):
        """The rows as a ``(rows, units)`` array (a read failure as :class:`_CheckedLayer`'s),
        in an array lent by :data:`rv2dist.engine.buffers.KEPT_BUFFERS`; :meth:`recycle` gives it back."""
        block = KEPT_BUFFERS.lend((self.stop - self.start,) + self.layer.shape[1:], self.layer.dtype)
        try:
            self.layer.read_into(self.start, self.stop, block)
        except BaseException:
            KEPT_BUFFERS.give_back(block)
            raise
        return block.reshape(block.shape[0], -1)

    @staticmethod
    def recycle(rows):
        """Give back the array :meth:`read_rows` returned, once nothing uses it."""
        KEPT_BUFFERS.give_back(rows)


class _CheckedLayer:
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
        low, high, rows = _row_span(key[0] if key else slice(None), self.shape[0])
        block = np.empty((high - low,) + self.shape[1:], self.dtype)
        self.read_into(low, high, block)
        return block[(rows,) + key[1:]]

    def read_into(self, start, stop, out):
        """Read rows ``start:stop`` into ``out`` (a C-ordered array of their shape).

        Every stored chunk the range touches is decoded whole and checked (one at the
        range's edges into a lent buffer, the rows wanted copied from it).  A whole chunk
        compressed by Blosc alone is decoded from its file straight into ``out``: zarr
        would decode it into a fresh array first and copy that, and fresh memory costs
        page faults on every page."""
        array = self._open()
        step = array.chunks[0]
        for index in range(start // step, -(-stop // step)):
            low, high = index * step, min(self.shape[0], (index + 1) * step)
            first, last = max(start, low), min(stop, high)
            target = out[first - start : last - start]
            if (first, last) == (low, high):
                self._read_chunk(array, index, target)
            elif self.sums is None:
                self._read_rows(array, index, first, last, target)
            else:
                whole = KEPT_BUFFERS.lend((high - low,) + self.shape[1:], self.dtype)
                try:
                    self._read_chunk(array, index, whole)
                    target[...] = whole[first - low : last - low]
                finally:
                    KEPT_BUFFERS.give_back(whole)

    def _read_chunk(self, array, index, out):
        """Stored chunk ``index`` (all its rows) into ``out``, checked when sums are known."""
        low = index * array.chunks[0]
        full = out.shape[0] == array.chunks[0]
        if not (self.sums is not None and self._blosc_only and full and self._decode_chunk(array, index, out)):
            self._read_rows(array, index, low, low + out.shape[0], out)
        if self.sums is not None:
            self._verify(array, index, out)

    def _verify(self, array, index, out):
        """Check stored chunk ``index``, decoded into ``out``, against its checksum."""
        if checksum(out) != self.sums[index]:
            present = os.path.exists(_row_chunk_file(self.path, self.name, array, index))
            raise self._fault(array, index, MISMATCH if present else "is missing")

    def _read_rows(self, array, index, first, last, out):
        """Rows ``first:last`` of stored chunk ``index`` through zarr's decoding."""
        try:
            array.get_basic_selection((slice(first, last),) + (slice(None),) * (self.ndim - 1), out=_zarr_out(out))
        except Exception as error:
            raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None

    def _decode_chunk(self, array, index, target):
        """Decode stored chunk ``index`` (all of its rows) into ``target``; False where it
        has no file (zarr then gives its fill value)."""
        from numcodecs import blosc

        path = _row_chunk_file(self.path, self.name, array, index)
        try:
            file = open(path, "rb", buffering=0)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None
        with file:
            size = os.fstat(file.fileno()).st_size
            # rounded up, so that a thread keeps few of these between chunks of other sizes
            encoded = KEPT_BUFFERS.lend((-(-size // 2**22) * 2**22,), np.uint8)
            try:
                if file.readinto(encoded[:size]) != size:
                    raise self._fault(array, index, "cannot be read (the file ended early)")
                # a Blosc frame's header gives its decoded size in bytes 4 to 7
                decoded_bytes = int.from_bytes(encoded[4:8].tobytes(), "little") if size >= 16 else -1
                if decoded_bytes != target.nbytes:
                    raise self._fault(array, index, f"cannot be read (it decodes to {decoded_bytes:,} bytes, "
                                                    f"not {target.nbytes:,})")
                blosc.decompress(encoded[:size], target)
            except StoreError:
                raise
            except Exception as error:
                raise self._fault(array, index, f"cannot be read ({type(error).__name__}: {error})") from None
            finally:
                KEPT_BUFFERS.give_back(encoded)
        return True

    def _fault(self, array, index, reason):
        if not os.path.isdir(self.path):
            return self._unopened(FileNotFoundError(self.path))
        step = array.chunks[0]
        return chunk_fault(self.path, f"layer {self.name!r}", index, index * step,
                           min(self.shape[0], (index + 1) * step), reason)


def _row_span(rows, n):
    """``(low, high, local)``: the rows ``rows`` (a slice, an integer or an index array)
    selects of ``n`` lie in ``low:high``, and ``local`` selects them from those."""
    if isinstance(rows, (slice, int, np.integer)):
        picked = range(n)[rows]
        if isinstance(picked, int):
            return picked, picked + 1, 0
        if not picked:
            return 0, 0, slice(0, 0)
        low, high = min(picked[0], picked[-1]), max(picked[0], picked[-1]) + 1
        stop = picked.stop - low
        return low, high, slice(picked.start - low, stop if stop >= 0 else None, picked.step)
    positions = np.arange(n)[rows]
    if not positions.size:
        return 0, 0, positions
    low = int(positions.min())
    return low, int(positions.max()) + 1, positions - low


def _row_chunk_file(path, name, array, index):
    """The file of stored row chunk ``index`` of layer ``name`` (the first chunk along
    the other axes)."""
    return os.path.join(path, name, array.metadata.encode_chunk_key((index,) + (0,) * (array.ndim - 1)))


def _blosc_only(array):
    """Whether ``array``'s stored chunks are its rows (all of the other axes) as raw
    native-order bytes compressed by Blosc alone, one file per chunk (zarr v3, as
    :class:`ActivationWriter` writes them)."""
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
