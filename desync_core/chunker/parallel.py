"""Parallel chunking of a seekable input, with per-part processing (``chunking.md`` §8).

The input is split into *parts* of :func:`part_size` bytes (a multiple of ``max``, so
that long zero runs line up with part starts). Threads process the parts; each part:

1. reads its bytes plus one longest chunk (``max``) of overhang with ``preadv`` (the only read: the
   same buffer is later hashed and compressed);
2. chunks them *speculatively*, as if a chunk started at the part start;
3. waits for its *entry*: the first true boundary at or after the part start, which
   the previous part publishes as soon as it knows its own true boundaries;
4. re-synchronises: if the entry is one of its speculative cuts, everything after it
   is already right (chunking is memoryless per chunk, ``chunking.md`` §5); otherwise
   it chunks from the entry in small windows until a cut coincides with a speculative
   one, or to the end of the part if none ever does (periodic data);
5. publishes its *exit* (the first true cut at or beyond the part end: the next part's
   entry), then runs the caller's handler on its true chunks (hash, store) while the
   data is still in memory.

The result is identical to one sequential pass for every input and thread count. The
kernel releases the GIL (ctypes call into the cached numba code), as do ``preadv``,
hashlib and zstandard, so threads keep all cores busy without worker processes: no
fork, no pickling of cut lists, one read of every byte.

Low-entropy inputs whose parts never synchronise degrade to a sequential chunking
chain (each part re-chunks from its true entry) while handlers still run in parallel,
so they are not much slower than one thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from desync_core.chunker.params import ChunkerParams
from desync_core.fileio import pread_exact

R = TypeVar("R")

#: Target bytes per part. 8 MiB keeps ~50 parts in a 400 MB input (load balance at
#: the end of the run) while the per-part overhead (a few kernel and Python calls)
#: stays negligible; memory is ``(threads + 1) * (part + max)``.
PART_BYTES = 8 * 1024 * 1024
#: Largest window chunked at once while re-synchronising.
MAX_RESYNC_WINDOW = 8 * 1024 * 1024

#: ``handler(data, base, entry, ends)``: ``data`` holds the input from offset ``base``;
#: the part's chunks are ``[entry, ends[0]), [ends[0], ends[1]), ...`` (absolute).
Handler = Callable[[memoryview, int, int, np.ndarray], R]


def longest_chunk(params: ChunkerParams) -> int:
    """See :attr:`ChunkerParams.longest_chunk`."""
    return params.longest_chunk


def part_size(params: ChunkerParams, target: int = PART_BYTES) -> int:
    """Bytes per part: ``target`` rounded up to a multiple of ``max``, at least one chunk."""
    size = max(-(-target // params.max), 1) * params.max
    longest = longest_chunk(params)
    return size if size >= longest else -(-longest // params.max) * params.max


class PartAbortedError(Exception):
    """A part stopped because an earlier part failed (that failure is the real error)."""


@dataclass
class PartResult(Generic[R]):
    """What one part produced."""

    entry: int
    ends: np.ndarray
    result: R | None
    produced: int
    """Chunks computed, including speculative ones that were discarded."""


def read_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from the input ``fd`` at ``offset``.

    Raises:
        OSError: the input ended early (it shrank while being read).
    """
    try:
        pread_exact(fd, view, offset)
    except EOFError as exc:
        raise OSError(f"{exc} (did the file shrink while it was read?)") from None


class _Entries:
    """Part entries, published by predecessors; a failure releases every waiter."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._values: dict[int, int] = {0: 0}
        self._failed = False

    def publish(self, k: int, value: int) -> None:
        with self._cond:
            self._values[k] = value
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()

    def take(self, k: int) -> int:
        with self._cond:
            while k not in self._values:
                if self._failed:
                    raise PartAbortedError("an earlier part failed")
                self._cond.wait()
            return self._values.pop(k)


def _chunk_through(find_cuts: Callable[..., np.ndarray], buf: np.ndarray, base: int,
                   eof: bool, pos: int, end: int, window: int,
                   params: ChunkerParams) -> Iterator[np.ndarray]:
    """Chunk ``buf`` (input from offset ``base``) from the boundary ``pos`` in windows.

    Yields arrays of absolute cuts, the first window being ``window`` bytes, until a
    cut at or beyond ``end`` has been yielded (or the buffer is exhausted). Each
    window spans at least two longest chunks, so every call cuts at least once.
    """
    n = len(buf)
    longest = longest_chunk(params)
    while pos < base + n:
        lo = pos - base
        hi = min(n, lo + max(window, 2 * longest))
        cuts = find_cuts(buf[lo:hi], params, eof=eof and hi == n) + pos
        if len(cuts) == 0:
            # Only possible at the end of a buffer that does not end the input, which
            # holds a longest chunk beyond ``end``.
            raise AssertionError("chunker made no progress")
        yield cuts
        pos = int(cuts[-1])
        if pos >= end:
            return
        # Near the end only the last chunk is missing; otherwise widen (resync runs).
        window = 2 * longest if pos + window >= end else min(2 * window, MAX_RESYNC_WINDOW)


def true_cuts(buf: np.ndarray, base: int, eof: bool, entry: int, spec: np.ndarray,
              end: int, params: ChunkerParams,
              find_cuts: Callable[..., np.ndarray]) -> tuple[np.ndarray, int]:
    """The true cuts of a part from its ``entry`` through the first cut at/after ``end``.

    Args:
        buf: the part's data, starting at offset ``base``; ``eof``: it ends the input.
        entry: the first true boundary at or after ``base`` (``entry < end``).
        spec: speculative cuts (absolute) of chunking from ``base``, or empty to chunk
            from ``entry`` directly.
        end: the part's end offset.
        params: chunk sizes.
        find_cuts: the kernel entry point.

    Returns:
        The cuts (absolute, int64) and how many chunks were computed for them.
    """
    if len(spec):
        if entry == base:
            return spec, 0
        i = int(np.searchsorted(spec, entry))
        if i < len(spec) and int(spec[i]) == entry:
            return spec[i + 1:], 0
        # Re-synchronise: chunk from the entry until a cut is also a speculative cut.
        window = 4 * longest_chunk(params)
    else:
        window = end - entry
    pieces = []
    produced = 0
    for cuts in _chunk_through(find_cuts, buf, base, eof, entry, end, window, params):
        produced += len(cuts)
        if len(spec):
            common = np.flatnonzero(np.isin(cuts, spec, assume_unique=True))
            if len(common):
                hit = int(common[0])
                j = int(np.searchsorted(spec, cuts[hit]))
                pieces.append(cuts[: hit + 1])
                pieces.append(spec[j + 1:])
                break
        pieces.append(cuts)
    return (np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)), produced


def speculative_cuts(buf: np.ndarray, base: int, eof: bool, end: int, params: ChunkerParams,
                     find_cuts: Callable[..., np.ndarray]) -> np.ndarray:
    """Cuts of chunking from ``base`` as if a chunk started there, through ``end``."""
    pieces = list(_chunk_through(find_cuts, buf, base, eof, base, end, end - base, params))
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)


class PartPipeline(Generic[R]):
    """Chunk a file or block device part by part and run ``handler`` on each part.

    Args:
        fd: an open file descriptor of the input (positional reads only).
        size: the input's size.
        params: chunk sizes.
        threads: parts processed concurrently (1: sequentially in the caller's thread).
        handler: called for each part in its thread, with the part's true chunks.
        part_bytes: target part size (rounded up to a multiple of ``max``).
    """

    def __init__(self, fd: int, size: int, params: ChunkerParams, *, threads: int,
                 handler: Handler[R] | None = None, part_bytes: int = PART_BYTES) -> None:
        from desync_core.chunker import cuts_function

        # The kernel is chosen (and loaded) once for the whole input, before threads
        # race to it; an unusable one fails here.
        find_cuts = cuts_function(size)
        self.fd = fd
        self.size = size
        self.params = params
        self.threads = max(1, threads)
        self.handler = handler
        self.part = part_size(params, part_bytes)
        self._longest = longest_chunk(params)
        self.count = -(-size // self.part)
        self._entries = _Entries()
        self._find_cuts = find_cuts
        # Part buffers are reused: a fresh 8 MiB array costs ~2000 page faults and
        # the kernel zeroing its pages (measured: chunking 25% slower without reuse).
        self._free: list[np.ndarray] = []
        self._free_lock = threading.Lock()

    def _buffer(self, n: int) -> np.ndarray:
        with self._free_lock:
            buf = self._free.pop() if self._free else None
        if buf is None:
            buf = np.empty(self.part + self._longest, dtype=np.uint8)
        return buf[:n]

    def _release(self, buf: np.ndarray) -> None:
        base = buf.base if isinstance(buf.base, np.ndarray) else buf
        with self._free_lock:
            self._free.append(base)

    def _run(self, k: int, speculate: bool) -> PartResult[R]:
        try:
            start = k * self.part
            end = min(start + self.part, self.size)
            stop = min(self.size, end + self._longest)
            eof = stop == self.size
            buf = self._buffer(stop - start)
            read_exact(self.fd, memoryview(buf), start)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
            spec = np.empty(0, dtype=np.int64)
            produced = 0
            if speculate and k > 0:
                spec = speculative_cuts(buf, start, eof, end, self.params, self._find_cuts)
                produced = len(spec)
            entry = self._entries.take(k)
            if entry >= end:
                ends = np.empty(0, dtype=np.int64)
                exit_ = entry
            else:
                ends, extra = true_cuts(buf, start, eof, entry, spec, end, self.params,
                                        self._find_cuts)
                produced += extra
                last = int(np.searchsorted(ends, end))  # first cut >= end
                ends = ends[: last + 1]
                exit_ = int(ends[-1])
            self._entries.publish(k + 1, exit_)
        except BaseException:
            self._entries.fail()
            raise
        result = None
        try:
            if self.handler is not None and len(ends):
                result = self.handler(memoryview(buf), start, entry, ends)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
        finally:
            self._release(buf)
        return PartResult(entry, ends, result, produced)

    def __iter__(self) -> Iterator[PartResult[R]]:
        """Yield each part's result, in order."""
        if self.threads <= 1 or self.count <= 1:
            for k in range(self.count):
                yield self._run(k, speculate=False)
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="desync-part")
        pending: deque[Future[PartResult[R]]] = deque()
        try:
            submitted = 0
            while submitted < self.count or pending:
                # One part queued beyond the running ones keeps every thread busy
                # while bounding memory to (threads + 1) part buffers.
                while submitted < self.count and len(pending) <= self.threads:
                    pending.append(pool.submit(self._run, submitted, True))
                    submitted += 1
                yield pending.popleft().result()
        except BaseException:
            self._entries.fail()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def chunk_fd(fd: int, size: int, params: ChunkerParams, *, threads: int,
             stats: dict[str, int] | None = None, part_bytes: int = PART_BYTES) -> np.ndarray:
    """All chunk ends of an open input (see :class:`PartPipeline`)."""
    pieces = [np.empty(0, dtype=np.int64)]
    produced = 0
    for part in PartPipeline[None](fd, size, params, threads=threads, part_bytes=part_bytes):
        pieces.append(part.ends)
        produced += part.produced
    if stats is not None:
        stats["ChunksProduced"] = produced
    return np.concatenate(pieces)


__all__ = [
    "PART_BYTES",
    "PartAbortedError",
    "PartPipeline",
    "PartResult",
    "chunk_fd",
    "longest_chunk",
    "part_size",
    "read_exact",
    "speculative_cuts",
    "true_cuts",
]
