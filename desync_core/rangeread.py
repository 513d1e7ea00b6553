"""Random access to the blob of an index: read any byte range, fetching only its chunks.

:class:`RangeReader` is the core's reader for consumers that seek (the ``desync``
fsspec filesystem, anything that wants ``pread`` over a store): a read finds its first
chunk by binary search over the chunk end offsets, fetches just the chunks the range
touches (missing ones concurrently), and keeps recently decoded chunks in a small LRU so
that neighbouring small reads do not fetch the same chunk twice. Chunks come from a
source opened with :meth:`~desync_core.context.Context.open_source` (hash-verified by
its ``VerifyingStore``) and are size-checked against the index with
:func:`~desync_core.stores.wrappers.read_sized`, as ``cat`` does; null chunks are never
fetched.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from desync_core.index import Index
from desync_core.stores.wrappers import read_sized, unexpected_size

#: Default bound of the decoded-chunk cache (a few average chunks, or one large read).
DEFAULT_CACHE_BYTES = 32 << 20


class RangeReader:
    """Reads byte ranges of an index's blob through a (verified) chunk source.

    Thread-safe: concurrent readers share the cache, and a chunk two of them want at
    once is fetched once.

    Args:
        index: the index whose blob is read.
        source: a chunk reader (``get_chunk``), e.g. from ``Context.open_source``.
        cache_bytes: bound of the decoded-chunk LRU (at least one chunk is kept).
        concurrency: chunks of one read fetched in parallel (1: one after another).

    Attributes:
        fetches: chunks fetched from the source so far (diagnostics, tests).
    """

    def __init__(self, index: Index, source: Any, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 concurrency: int = 8) -> None:
        self.index = index
        self.source = source
        self.length = index.length
        self.cache_bytes = cache_bytes
        self.concurrency = max(1, concurrency)
        self.fetches = 0
        self._ends = index.ends
        self._starts: list[int] = index.starts().tolist()
        self._sizes: list[int] = index.sizes().tolist()
        self._null_id = index.digest.null_chunk_id(index.chunk_size_max)
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cached = 0
        self._inflight: dict[bytes, Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._zeros: bytes | None = None

    def chunk_range(self, offset: int, size: int) -> tuple[int, int]:
        """``(first, stop)``: the chunks holding blob bytes ``[offset, offset+size)``."""
        first = int(np.searchsorted(self._ends, offset, side="right"))
        last = int(np.searchsorted(self._ends, offset + size - 1, side="right"))
        return first, min(last + 1, len(self._sizes))

    def read(self, offset: int, size: int) -> bytes:
        """Blob bytes ``[offset, offset+size)``; shorter at the end, ``b""`` past it.

        Raises:
            ValueError: a negative offset or size.
            DesyncError, OSError: a chunk could not be fetched or failed verification.
        """
        buf = bytearray(max(0, min(size, self.length - offset)))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf) if n == len(buf) else bytes(buf[:n])

    def readinto(self, offset: int, out: memoryview) -> int:
        """Fill ``out`` with blob bytes from ``offset``; returns how many were read."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        view = memoryview(out).cast("B")
        size = min(len(view), self.length - offset)
        if size <= 0:
            return 0
        first, stop = self.chunk_range(offset, size)
        datas = self._chunks(range(first, stop))
        pos = 0
        end = offset + size
        for i in range(first, stop):
            data = datas[i]
            lo = max(offset, self._starts[i]) - self._starts[i]
            hi = min(end, self._starts[i] + self._sizes[i]) - self._starts[i]
            view[pos:pos + hi - lo] = memoryview(data)[lo:hi]
            pos += hi - lo
        return pos

    # -- chunks --------------------------------------------------------------------------

    def _chunks(self, indexes: range) -> dict[int, bytes]:
        """The data of each chunk of ``indexes``: from the cache (by chunk id, so
        repeated content is fetched once), else fetched."""
        out: dict[int, bytes] = {}
        waiting: dict[int, Future[bytes]] = {}
        mine: list[tuple[bytes, int, Future[bytes]]] = []
        with self._lock:
            for i in indexes:
                if self._is_null(i):  # never fetched, never cached
                    if self._zeros is None:
                        self._zeros = bytes(self.index.chunk_size_max)
                    out[i] = self._zeros
                    continue
                key = self.index.chunk_id(i)
                data = self._cache.get(key)
                if data is not None:
                    self._cache.move_to_end(key)
                    out[i] = data
                    continue
                future = self._inflight.get(key)
                if future is None:  # else another read is fetching it: share that
                    future = self._inflight[key] = Future()
                    mine.append((key, i, future))
                waiting[i] = future
        if mine:
            self._fetch_all(mine)
        for i, future in waiting.items():
            out[i] = future.result()
        for i, data in out.items():  # an index giving one id two sizes is refused here
            if len(data) != self._sizes[i]:
                raise unexpected_size(self.index.chunk_id(i), len(data), self._sizes[i])
        return out

    def _fetch_all(self, fetches: list[tuple[bytes, int, Future[bytes]]]) -> None:
        """Fetch each ``(id, chunk number, future)``, in parallel when there are several."""
        if len(fetches) == 1 or self.concurrency == 1:
            for item in fetches:
                self._fetch_one(*item)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency,
                                                thread_name_prefix="desync-range")
            pool = self._pool
        for item in fetches:
            pool.submit(self._fetch_one, *item)

    def _fetch_one(self, key: bytes, i: int, future: Future[bytes]) -> None:
        try:
            data = bytes(read_sized(self.source, key, self._sizes[i]))
        except BaseException as exc:  # a failed fetch is not cached: the next read retries
            with self._lock:
                self._inflight.pop(key, None)
            future.set_exception(exc)
            return
        with self._lock:  # cached and no longer in flight in one step: no second fetch
            self.fetches += 1
            self._inflight.pop(key, None)
            if key not in self._cache:
                self._cache[key] = data
                self._cached += len(data)
            while self._cached > self.cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        future.set_result(data)

    def _is_null(self, i: int) -> bool:
        return (self._sizes[i] == self.index.chunk_size_max
                and self.index.chunk_id(i) == self._null_id)

    def close(self) -> None:
        """Stop the fetch threads (the source stays open: its owner closes it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["DEFAULT_CACHE_BYTES", "RangeReader"]
