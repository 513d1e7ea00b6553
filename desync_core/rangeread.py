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

Its two building blocks are public (through :mod:`desync_core.plugin_api`) because the
FUSE mount reads the same way with its own fetching (batched verification, readahead,
a swappable source): :class:`ChunkLayout` (which chunks hold a byte range, which are
null) and :class:`ChunkCache` (the LRU of decoded chunks with fetches in flight
shared).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from desync_core.index import Index
from desync_core.stores.wrappers import read_sized, unexpected_size

#: Default bound of the decoded-chunk cache (a few average chunks, or one large read).
DEFAULT_CACHE_BYTES = 32 << 20

T = TypeVar("T", bound=Sized)


class ChunkLayout:
    """Where the chunks of an index sit in its blob.

    Attributes:
        index: the index.
        ends: end offset of each chunk (the index's array, for binary search).
        starts, sizes: start offset and size of each chunk (lists: fast to index).
        length: bytes in the blob.
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self.ends = index.ends
        self.starts: list[int] = index.starts().tolist()
        self.sizes: list[int] = index.sizes().tolist()
        self.length = index.length
        self._null_id = index.digest.null_chunk_id(index.chunk_size_max)
        self._null_size = index.chunk_size_max

    def __len__(self) -> int:
        return len(self.sizes)

    def is_null(self, i: int) -> bool:
        """Whether chunk ``i`` is the index's null chunk (all zeros: never fetched)."""
        return self.sizes[i] == self._null_size and self.index.chunk_id(i) == self._null_id

    def chunk_range(self, offset: int, size: int) -> tuple[int, int]:
        """``(first, stop)``: the chunks holding blob bytes ``[offset, offset+size)``
        (``size`` at least 1)."""
        first = int(np.searchsorted(self.ends, offset, side="right"))
        stop = int(np.searchsorted(self.ends, offset + size - 1, side="right")) + 1
        return first, min(stop, len(self.sizes))


class Claim(NamedTuple, Generic[T]):
    """What :meth:`ChunkCache.claim` found, by the caller's chunk numbers.

    Attributes:
        hits: cached data.
        waiting: futures of the chunks not cached (the caller's own and those another
            reader is fetching); each gets the data or the fetch's exception.
        owned: ``(chunk number, id)`` the caller must fetch, then hand to
            :meth:`ChunkCache.fill` or :meth:`ChunkCache.fail`.
    """

    hits: dict[int, T]
    waiting: dict[int, Future[T]]
    owned: list[tuple[int, bytes]]


class ChunkCache(Generic[T]):
    """Decoded chunks by id: an LRU bounded in bytes, plus the fetches in flight.

    Thread-safe. A chunk two readers want at once is fetched once (the second waits on
    the first's future); a failed fetch is not cached, so the next read tries again.
    Keyed by chunk id, so content repeated in a blob is fetched once.

    Args:
        capacity: bound in bytes (at least one chunk is kept, whatever its size).

    Attributes:
        filled: chunks handed to :meth:`fill` so far (fetches, for diagnostics).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.filled = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, T] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, Future[T]] = {}

    @property
    def cached_bytes(self) -> int:
        """Bytes of the chunks cached now."""
        return self._bytes

    def claim(self, wanted: Iterable[tuple[int, bytes]]) -> Claim[T]:
        """Look up ``(chunk number, id)`` pairs: cached ones are returned (and become
        the most recent), the rest are waited for; those nobody is fetching yet become
        the caller's to fetch."""
        claim: Claim[T] = Claim({}, {}, [])
        with self._lock:
            for i, key in wanted:
                data = self._cache.get(key)
                if data is not None:
                    self._cache.move_to_end(key)
                    claim.hits[i] = data
                    continue
                future = self._inflight.get(key)
                if future is None:
                    future = self._inflight[key] = Future()
                    claim.owned.append((i, key))
                claim.waiting[i] = future
        return claim

    def fill(self, fetched: Sequence[tuple[bytes, T]]) -> None:
        """Store fetched ``(id, data)`` and wake their waiters."""
        futures = []
        with self._lock:  # cached and no longer in flight in one step: no second fetch
            self.filled += len(fetched)
            for key, data in fetched:
                futures.append(self._inflight.pop(key, None))
                if key not in self._cache:
                    self._cache[key] = data
                    self._bytes += len(data)
            while self._bytes > self.capacity and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= len(old)
        for future, (_, data) in zip(futures, fetched):
            if future is not None:
                future.set_result(data)

    def fail(self, keys: Iterable[bytes], exc: BaseException) -> None:
        """The fetch of ``keys`` failed: hand ``exc`` to their waiters, cache nothing."""
        with self._lock:
            futures = [self._inflight.pop(key, None) for key in keys]
        for future in futures:
            if future is not None:
                future.set_exception(exc)


class RangeReader(ChunkLayout):
    """Reads byte ranges of an index's blob through a (verified) chunk source.

    Thread-safe: concurrent readers share the cache, and a chunk two of them want at
    once is fetched once.

    Args:
        index: the index whose blob is read.
        source: a chunk reader (``get_chunk``), e.g. from ``Context.open_source``.
        cache_bytes: bound of the decoded-chunk LRU (at least one chunk is kept).
        concurrency: chunks of one read fetched in parallel (1: one after another).
    """

    def __init__(self, index: Index, source: Any, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 concurrency: int = 8) -> None:
        super().__init__(index)
        self.source = source
        self.cache_bytes = cache_bytes
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._cache: ChunkCache[bytes] = ChunkCache(cache_bytes)
        self._pool: ThreadPoolExecutor | None = None
        self._zeros: bytes | None = None

    @property
    def fetches(self) -> int:
        """Chunks fetched from the source so far (diagnostics, tests)."""
        return self._cache.filled

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded chunks cached now (at most ``cache_bytes``, or one chunk)."""
        return self._cache.cached_bytes

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
        starts, sizes = self.starts, self.sizes
        for i in range(first, stop):
            data = datas[i]
            lo = max(offset, starts[i]) - starts[i]
            hi = min(end, starts[i] + sizes[i]) - starts[i]
            view[pos:pos + hi - lo] = memoryview(data)[lo:hi]
            pos += hi - lo
        return pos

    # -- chunks --------------------------------------------------------------------------

    def _chunks(self, indexes: range) -> dict[int, bytes]:
        """The data of each chunk of ``indexes``: zeros for null chunks (never fetched,
        never cached), else from the cache, else fetched."""
        out: dict[int, bytes] = {}
        wanted = []
        for i in indexes:
            if self.is_null(i):
                if self._zeros is None:
                    self._zeros = bytes(self.index.chunk_size_max)
                out[i] = self._zeros
            else:
                wanted.append((i, self.index.chunk_id(i)))
        claim = self._cache.claim(wanted)
        out.update(claim.hits)
        if claim.owned:
            self._fetch_all(claim.owned)
        for i, future in claim.waiting.items():
            out[i] = future.result()
        for i, data in out.items():  # an index giving one id two sizes is refused here
            if len(data) != self.sizes[i]:
                raise unexpected_size(self.index.chunk_id(i), len(data), self.sizes[i])
        return out

    def _fetch_all(self, fetches: list[tuple[int, bytes]]) -> None:
        """Fetch each ``(chunk number, id)``, in parallel when there are several."""
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

    def _fetch_one(self, i: int, key: bytes) -> None:
        try:
            data = bytes(read_sized(self.source, key, self.sizes[i]))
        except BaseException as exc:
            self._cache.fail([key], exc)
            return
        self._cache.fill([(key, data)])

    def close(self) -> None:
        """Stop the fetch threads (the source stays open: its owner closes it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


__all__ = ["DEFAULT_CACHE_BYTES", "ChunkCache", "ChunkLayout", "Claim", "RangeReader"]
