"""Crash-safe replacement of user data: whatever rv2dist writes (a store, a result, a
report) is built under a hidden sibling name and moved into place when complete, so a
crash at any instant leaves the old version or the new one whole, never a mix.

Hidden names: ``.<name>.partial-<hex>`` for a write under way (left by an interrupted
write), ``.<name>.replaced-<hex>`` for an old folder moved aside during a replace (left,
whole, by an interrupted replace where the OS has no atomic exchange).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from rv2dist.io.errors import StoreError

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # renameat2's flags (linux/fs.h)


def partial_path(path: Path) -> Path:
    """A new hidden sibling of ``path`` to build its next version in."""
    return path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")


def partials(path: Path) -> list[Path]:
    """Partial versions of ``path`` left by interrupted writes."""
    return sorted(path.parent.glob(f".{path.name}.partial-*"))


def set_aside(path: Path) -> list[Path]:
    """Old versions of ``path`` left aside, whole, by interrupted replaces."""
    return sorted(path.parent.glob(f".{path.name}.replaced-*"))


def leftovers(path: Path) -> list[Path]:
    """Everything interrupted writes and replaces of ``path`` left behind."""
    return partials(path) + set_aside(path)


def commit(partial: Path, path: Path, replace=True):
    """Put ``partial`` at ``path`` so that a crash at any instant leaves the old or the
    new version whole: a file by one rename; a folder by an atomic exchange where the
    OS has one, else old aside, new in, old deleted (an interrupted swap leaves the old
    version whole under a hidden name, and :func:`rv2dist.io.reader.open_activations`
    says where).  Without ``replace``, a StoreError when something is at ``path``
    (checked and moved in one step where the OS can)."""
    if not replace:
        if not _move_new(partial, path):
            raise StoreError(f"{path} appeared while this store was written (another writer?) and is left as it "
                             "is; pass overwrite=True (--overwrite) to replace it")
        return
    if not os.path.lexists(path) or not path.is_dir():
        os.replace(partial, path)
        return
    if exchange(partial, path):
        discard(partial)  # now the old version
        return
    aside = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    os.replace(partial, path)
    discard(aside)


def exchange(a: Path, b: Path) -> bool:
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


def discard(partial: Path):
    """Remove ``partial`` (a folder or a file), if it is there."""
    if partial.is_dir():
        shutil.rmtree(partial)
    elif partial.exists():
        partial.unlink()


@contextlib.contextmanager
def naming(path, what):
    """An OSError inside (a full disk, a read-only folder) as a StoreError naming ``path``."""
    try:
        yield
    except OSError as error:
        raise StoreError(f"{path}: {what} ({error.strerror or error})") from None


@contextlib.contextmanager
def written_atomically(path: Path):
    """Yield a hidden sibling path to write into; on success it replaces ``path``, on
    failure it is removed, so no partial output is ever left under ``path``."""
    partial = partial_path(path)
    try:
        yield partial
        commit(partial, path)
    finally:
        discard(partial)


def write_text(path, text) -> None:
    """Write a text file (a report) atomically: the old file or the new one, whole."""
    path = Path(path)
    with written_atomically(path) as partial, naming(path, "cannot write"):
        partial.write_text(text, encoding="utf-8")


def discard_after_writes(partial: Path):
    """Remove ``partial``, once zarr's own writes into it have ended (after Ctrl-C they
    go on in zarr's thread, and would recreate files); a Ctrl-C meanwhile takes effect
    after."""
    with _deferred_interrupts():
        _wait_for_zarr_writes()
        discard(partial)


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
