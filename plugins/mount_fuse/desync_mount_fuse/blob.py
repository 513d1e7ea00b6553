"""Random access to the stream of an index: the reading engine behind every mount.

* :class:`SourceHolder` — the chunk source, replaceable while reads run (``--store-file``
  + SIGHUP); each load finishes on the source it started with, which is closed once its
  last load is done.
* :class:`ChunkLoader` — fetches chunk ``i`` of the index through the current source
  (verified: the source comes from ``ctx.open_source``) on a pool of ``-n`` threads;
  null chunks are never fetched.
* :class:`MemoryBlob` — a bounded LRU cache of decoded chunks in memory;
  :class:`~desync_mount_fuse.sparse.SparseBlob` keeps them in a copy-on-read file.
  Both share :class:`Blob`'s read path: a read fetches only the chunks it touches, all
  at once, and a :class:`ReadStream` that reads sequentially gets a growing readahead
  window fetched in the background.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from desync_core.plugin_api import (
    ChunkCache,
    ChunkLayout,
    Index,
    IntegrityError,
    SwappableStore,
    chunk_digests,
    error_text,
)

#: First readahead window of a sequential stream, and its limit (it doubles per read).
READAHEAD_START = 1 << 20
READAHEAD_MAX = 32 << 20
#: Reads closer than this to where the stream's last read ended count as sequential
#: (the kernel issues readahead requests concurrently, slightly out of order).
SEQUENTIAL_SLACK = 4 << 20
#: Largest batch of consecutive chunks fetched and verified by one task.
BATCH_BYTES = 1 << 20
#: Default bound of the in-memory chunk cache.
DEFAULT_CACHE_BYTES = 256 << 20

Report = Callable[[str], None]


def report_stderr(message: str) -> None:
    """Print one diagnostic line on stderr."""
    print(message, file=sys.stderr, flush=True)


class Source(NamedTuple):
    """A chunk source in two forms: ``fast`` does not hash what it returns (the loader
    verifies in batches), ``careful`` verifies every chunk itself (and repairs caches).
    """

    fast: Any
    careful: Any

    def close(self) -> None:
        """Close both."""
        self.fast.close()
        self.careful.close()


#: The chunk source, replaceable while loads run (the core's SwappableStore).
SourceHolder = SwappableStore


class ChunkLoader(ChunkLayout):
    """Fetches the chunks of one index through a :class:`SourceHolder`.

    The chunk table (offsets, sizes, null test, ``chunk_range``) is the core's
    :class:`~desync_core.plugin_api.ChunkLayout`, as the fsspec reader's; the fetching
    is the mount's own: batches verified in one call, a source swappable on SIGHUP.

    Args:
        index: the index whose stream is read.
        holder: where chunks come from.
        workers: fetch threads (``-n``).
        report: where a failed fetch is reported (one line each).
    """

    def __init__(self, index: Index, holder: SourceHolder, workers: int,
                 report: Report = report_stderr) -> None:
        super().__init__(index)
        self.holder = holder
        self.report = report
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="desync-fetch")
        self.fetches = 0  # chunks fetched from the source (diagnostics, tests)

    def fetch(self, i: int) -> bytes | memoryview:
        """The decoded, verified data of chunk ``i`` (blocking; zeros for the null
        chunk).

        Raises:
            DesyncError, OSError: the store failed (reported here, once).
        """
        return self.fetch_batch([i])[0]

    def fetch_batch(self, indexes: list[int]) -> list[memoryview]:
        """The data of several chunks, decoded into one buffer and verified in one call
        (:func:`chunk_digests` hashes eight chunks at a time).

        Chunks come unverified from the source's fast side; one whose digest is wrong is
        read again through the careful side, which verifies it (and repairs a cache).

        Raises:
            DesyncError, OSError: the store failed (reported here, once).
        """
        sizes = [self.sizes[i] for i in indexes]
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        buf = bytearray(offsets[-1] + sizes[-1])
        view = memoryview(buf)
        real = [k for k, i in enumerate(indexes) if not self.is_null(i)]
        try:
            with self.holder.use() as source:
                for k in real:
                    chunk_id = self.index.chunk_id(indexes[k])
                    data = source.fast.get_chunk(chunk_id).data()
                    if len(data) == sizes[k]:
                        view[offsets[k]:offsets[k] + sizes[k]] = data
                    else:  # let the careful side name the problem
                        self._careful(source, chunk_id, sizes[k], view[offsets[k]:])
                if real:
                    sums = chunk_digests(buf, np.array([offsets[k] for k in real], np.int64),
                                         np.array([sizes[k] for k in real], np.int64),
                                         self.index.digest)
                    for n, k in enumerate(real):
                        chunk_id = self.index.chunk_id(indexes[k])
                        if sums[32 * n:32 * n + 32] != chunk_id:
                            self._careful(source, chunk_id, sizes[k], view[offsets[k]:])
        except Exception as exc:
            self.report(f"Error: {error_text(exc)}")
            raise
        self.fetches += len(real)
        return [view[o:o + n] for o, n in zip(offsets, sizes)]

    @staticmethod
    def _careful(source: Any, chunk_id: bytes, size: int, out: memoryview) -> None:
        data = source.careful.get_chunk(chunk_id).data()
        if len(data) != size:
            raise IntegrityError(f"chunk {chunk_id.hex()} has {len(data)} bytes, the "
                                 f"index says {size}")
        out[:size] = data

    def close(self, wait: bool = False) -> None:
        """Stop the fetch threads: queued fetches are dropped; with ``wait``, running
        ones are waited for."""
        self.pool.shutdown(wait=wait, cancel_futures=True)


class ReadStream:
    """Readahead state of one reader (an open file handle).

    A read that starts near where the previous one ended doubles the window (up to
    :data:`READAHEAD_MAX`); any other read resets it.
    """

    __slots__ = ("lock", "next_offset", "scheduled", "window")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_offset = -1
        self.window = 0
        self.scheduled = 0  # chunks below this index were already requested

    def advance(self, offset: int, end: int) -> int:
        """Record a read of ``[offset, end)``; the readahead window in bytes (0: none)."""
        with self.lock:
            if self.next_offset >= 0 and abs(offset - self.next_offset) <= SEQUENTIAL_SLACK:
                self.window = min(max(self.window * 2, READAHEAD_START), READAHEAD_MAX)
            else:
                self.window = 0
                self.scheduled = 0
            self.next_offset = max(end, self.next_offset) if self.window else end
            return self.window


class Blob:
    """Random-access reads of an index's stream; subclasses say where chunks are kept."""

    def __init__(self, loader: ChunkLoader) -> None:
        self.loader = loader
        self.length = loader.length

    # -- what subclasses provide ---------------------------------------------------------

    def chunk_future(self, i: int) -> Future[Any] | None:
        """A future for chunk ``i`` being available (None: it already is)."""
        raise NotImplementedError

    def futures(self, indexes: range) -> dict[int, Future[Any] | None]:
        """:meth:`chunk_future` of each chunk of ``indexes``."""
        return {i: self.chunk_future(i) for i in indexes}

    def assemble(self, offset: int, size: int, first: int, stop: int,
                 results: dict[int, Any]) -> bytes:
        """The bytes of ``[offset, offset+size)`` once chunks ``first..stop-1`` are
        available (``results`` holds what their futures returned)."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------

    def read(self, offset: int, size: int, stream: ReadStream | None = None,
             limit: int | None = None) -> bytes:
        """Stream bytes ``[offset, offset+size)`` (shorter at the end of the stream).

        ``stream`` is the reader's readahead state (None: no readahead); readahead stops
        at ``limit`` (the end of the file being read; default the end of the stream).

        Raises:
            DesyncError, OSError: a chunk could not be fetched.
        """
        size = min(size, self.length - offset)
        if size <= 0:
            return b""
        first, stop = self.loader.chunk_range(offset, size)
        futures = self.futures(range(first, stop))
        if stream is not None:
            self._read_ahead(stream, offset, offset + size, stop,
                             self.length if limit is None else min(limit, self.length))
        results = {i: (f.result() if f is not None else None) for i, f in futures.items()}
        return self.assemble(offset, size, first, stop, results)

    def _read_ahead(self, stream: ReadStream, offset: int, end: int, stop: int,
                    limit: int) -> None:
        window = min(stream.advance(offset, end), limit - end)
        if window <= 0:
            return
        _, ahead_stop = self.loader.chunk_range(end, window)
        with stream.lock:
            start = max(stop, stream.scheduled)
            stream.scheduled = max(stream.scheduled, ahead_stop)
        if start < ahead_stop:  # started in the background; failures surface on read
            self.futures(range(start, ahead_stop))

    def close(self) -> None:
        """Release the loader's threads."""
        self.loader.close()


class MemoryBlob(Blob):
    """A :class:`Blob` with an LRU cache of decoded chunks, keyed by chunk id.

    The cache is the core's :class:`~desync_core.plugin_api.ChunkCache` (as the fsspec
    reader's): concurrent readers of one chunk share one fetch, and a failed fetch is
    not cached (the next read tries again). What differs is the mount's policy: chunks
    not cached are fetched in batches of consecutive chunks (one pool task and one
    verification call per batch), and the cache never holds less than two readahead
    windows, or readahead would evict what the reader is about to ask for.
    """

    def __init__(self, loader: ChunkLoader, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__(loader)
        self.capacity = max(cache_bytes, 2 * READAHEAD_MAX)
        self._cache: ChunkCache[memoryview] = ChunkCache(self.capacity)

    def chunk_future(self, i: int) -> Future[Any] | None:
        return self.futures(range(i, i + 1))[i]

    def futures(self, indexes: range) -> dict[int, Future[Any] | None]:
        index, sizes = self.loader.index, self.loader.sizes
        claim = self._cache.claim((i, index.chunk_id(i)) for i in indexes)
        out: dict[int, Future[Any] | None] = {}
        for i, data in claim.hits.items():
            done: Future[memoryview] = Future()
            done.set_result(data)
            out[i] = done
        out.update(claim.waiting)
        batch: list[tuple[int, bytes]] = []
        batch_bytes = 0
        for i, key in claim.owned:
            if batch and (batch_bytes + sizes[i] > BATCH_BYTES or batch[-1][0] != i - 1):
                self.loader.pool.submit(self._load, batch)
                batch, batch_bytes = [], 0
            batch.append((i, key))
            batch_bytes += sizes[i]
        if batch:
            self.loader.pool.submit(self._load, batch)
        return out

    def _load(self, batch: list[tuple[int, bytes]]) -> None:
        try:
            datas = self.loader.fetch_batch([i for i, _ in batch])
        except BaseException as exc:
            self._cache.fail([key for _, key in batch], exc)
            return
        self._cache.fill([(key, data) for (_, key), data in zip(batch, datas)])

    def assemble(self, offset: int, size: int, first: int, stop: int,
                 results: dict[int, Any]) -> bytes:
        starts = self.loader.starts
        if stop - first == 1:
            begin = offset - starts[first]
            return bytes(results[first][begin:begin + size])
        parts = []
        end = offset + size
        for i in range(first, stop):
            data = results[i]
            lo = max(offset, starts[i]) - starts[i]
            hi = min(end, starts[i] + len(data)) - starts[i]
            parts.append(data[lo:hi])
        return b"".join(parts)


__all__ = [
    "Blob",
    "ChunkLoader",
    "MemoryBlob",
    "ReadStream",
    "Source",
    "SourceHolder",
    "report_stderr",
]
