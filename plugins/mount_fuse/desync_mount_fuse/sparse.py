"""Copy-on-read: ``--cor-file``, ``--cor-state-save``, ``--cor-state-init`` (``extract.md``
§6.8).

The cache is a sparse file of the blob's length. A read first writes every chunk it
touches that is not loaded yet (null chunks excepted: the file starts all zero) into the
file at the chunk's offset, then reads the file. Which chunks are loaded is a bitmap of
``ceil(chunks/8)`` bytes, chunk ``i`` being bit ``i % 8`` (least significant first) of
byte ``i // 8``; it is saved to ``--cor-state-save`` on SIGHUP and at unmount.
"""

from __future__ import annotations

import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from desync_core.plugin_api import DesyncError, IndexFormatError
from desync_mount_fuse.blob import Blob, ChunkLoader


def state_size(chunks: int) -> int:
    """Bytes of the state bitmap of an index with ``chunks`` chunks."""
    return (chunks + 7) // 8


def read_state(path: str, chunks: int) -> bytearray:
    """A state file's bitmap.

    Raises:
        OSError: it cannot be read.
        IndexFormatError: its length does not fit the index.
    """
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if len(data) != state_size(chunks):
        raise IndexFormatError("sparse state file does not match the index")
    return data


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class SparseBlob(Blob):
    """A :class:`Blob` whose chunks are kept in a copy-on-read file.

    Args:
        loader: fetches chunks.
        path: the ``--cor-file`` (created 0755 if needed).
        state_save: ``--cor-state-save``: reused at start when it fits and the file has
            the blob's length; written on :meth:`save_state` and :meth:`close`.
        state_init: ``--cor-state-init``: otherwise, chunks marked in it are loaded in
            the background by ``init_workers`` threads.

    Raises:
        DesyncError: the file or the init state cannot be used.
    """

    def __init__(self, loader: ChunkLoader, path: str, *, state_save: str = "",
                 state_init: str = "", init_workers: int = 10) -> None:
        super().__init__(loader)
        self.path = path
        self.state_save = state_save
        self._lock = threading.Lock()
        self._inflight: dict[int, Future[None]] = {}
        self._preload: ThreadPoolExecutor | None = None
        chunks = len(loader)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o755)
        except OSError as exc:
            raise DesyncError(f"{path}: {exc.strerror}") from None
        try:
            if self._reuse(state_save, chunks):
                return
            self.loaded = bytearray(state_size(chunks))
            # Empty it first: the null chunks are never written, so the file must be all
            # zero wherever nothing was loaded, whatever it held before.
            os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, self.length)
            if state_init:
                try:
                    wanted = read_state(state_init, chunks)
                except OSError as exc:
                    raise DesyncError(f"{state_init}: {exc.strerror}") from None
                self._start_preload(wanted, init_workers)
        except BaseException:
            os.close(self.fd)
            raise

    def _reuse(self, state_save: str, chunks: int) -> bool:
        if not state_save or os.fstat(self.fd).st_size != self.length:
            return False
        try:
            self.loaded = read_state(state_save, chunks)
        except (OSError, IndexFormatError):
            return False
        return True

    # -- state ---------------------------------------------------------------------------

    def is_loaded(self, i: int) -> bool:
        """Whether chunk ``i`` is in the file."""
        return bool(self.loaded[i >> 3] >> (i & 7) & 1)

    def loaded_count(self) -> int:
        """How many chunks are marked loaded."""
        return sum(bin(b).count("1") for b in self.loaded)

    def save_state(self) -> None:
        """Write the bitmap to ``--cor-state-save`` (atomically); nothing without one."""
        if not self.state_save:
            return
        with self._lock:
            data = bytes(self.loaded)
        write_atomic(self.state_save, data)

    # -- loading -------------------------------------------------------------------------

    def _start_preload(self, wanted: bytearray, workers: int) -> None:
        pool = self._preload = ThreadPoolExecutor(max(1, workers),
                                                  thread_name_prefix="desync-cor-init")
        for i in range(len(self.loader)):
            if wanted[i >> 3] >> (i & 7) & 1:
                pool.submit(self._preload_one, i)

    def _preload_one(self, i: int) -> None:
        if self.is_loaded(i) or self.loader.is_null(i):
            return
        try:
            self._store(i)
        except Exception:  # reported by the loader; a read will try again
            pass

    def _store(self, i: int) -> None:
        data = self.loader.fetch(i)
        view = memoryview(data)
        offset = self.loader.starts[i]
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        with self._lock:
            self.loaded[i >> 3] |= 1 << (i & 7)

    def chunk_future(self, i: int) -> Future[Any] | None:
        if self.is_loaded(i) or self.loader.is_null(i):
            return None
        with self._lock:
            future = self._inflight.get(i)
            if future is None:
                future = self._inflight[i] = self.loader.pool.submit(self._load, i)
            return future

    def _load(self, i: int) -> None:
        try:
            if not self.is_loaded(i):
                self._store(i)
        finally:
            with self._lock:
                self._inflight.pop(i, None)

    def assemble(self, offset: int, size: int, first: int, stop: int,
                 results: dict[int, Any]) -> bytes:
        parts = []
        while size:
            data = os.pread(self.fd, size, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            size -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Stop loading, save the state, close the file."""
        if self._preload is not None:
            self._preload.shutdown(wait=True, cancel_futures=True)
        self.loader.close(wait=True)  # no write may land after the file is closed
        try:
            self.save_state()
        finally:
            os.close(self.fd)


__all__ = ["SparseBlob", "read_state", "state_size", "write_atomic"]
