"""Hash (and store) the chunks of a file at known boundaries, in worker processes.

This is the engine behind ``chop`` and ``verify-index`` (``make`` hashes while it
chunks, in threads: :mod:`desync_core.ops.make`). The chunk list is
cut into tasks of about :data:`TASK_BYTES`; each worker reads its task's ranges with
``preadv`` into a reused buffer (memory stays bounded whatever the file size), hashes
every chunk, checks it against the expected id if there is one, and stores chunks the
store lacks. Chunks already present are never compressed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from desync_core.digest import Digest, get_digest
from desync_core.errors import ChunkInvalidError, SeedInvalidError, StoreError
from desync_core.fileio import pread_exact
from desync_core.stores.chunk import Chunk
from desync_core.stores.presence import presence_for

#: Bytes of chunks per worker task (load balancing vs. overhead).
TASK_BYTES = 32 * 1024 * 1024
#: Bytes read per preadv call inside a task.
READ_BYTES = 4 * 1024 * 1024


@dataclass
class RangeResult:
    """What one task did."""

    ids: bytes
    stored: int = 0
    stored_bytes: int = 0


class _WorkerState:
    store: Any = None
    digest: Digest | None = None
    io_pool: ThreadPoolExecutor | None = None
    presence: Any = None


_state = _WorkerState()


def init_worker(store: Any, digest_name: str, io_threads: int,
                expected_chunks: int | None = None) -> None:
    """Pool initializer: the store and digest every task of this process uses.

    ``expected_chunks`` (about how many chunks this process looks up) lets a remote
    store be listed once instead (:func:`desync_core.stores.presence.presence_for`).
    """
    _state.store = store
    _state.presence = presence_for(store, expected_chunks) if store is not None else None
    _state.digest = get_digest(digest_name)
    threaded = store is not None and io_threads > 1
    _state.io_pool = ThreadPoolExecutor(io_threads) if threaded else None


def iter_ranges(fd: int, starts: np.ndarray, ends: np.ndarray,
                read_bytes: int = READ_BYTES) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(i, data)`` for each range, reading contiguous runs in large preads.

    The views stay valid only until the next item is requested.
    """
    n = len(starts)
    biggest = int((ends - starts).max()) if n else 0
    buf = bytearray(max(read_bytes, biggest))
    view = memoryview(buf)
    i = 0
    while i < n:
        base = int(starts[i])
        j = i
        # Group consecutive, adjacent ranges that fit into the buffer.
        while j < n and int(starts[j]) == (int(ends[j - 1]) if j > i else base) and \
                int(ends[j]) - base <= len(buf):
            j += 1
        j = max(j, i + 1)
        total = int(ends[j - 1]) - base
        try:
            pread_exact(fd, view[:total], base)
        except EOFError as exc:
            raise SeedInvalidError(f"{exc} (the file is shorter than the index)") from None
        for k in range(i, j):
            yield k, view[int(starts[k]) - base : int(ends[k]) - base]
        i = j


def _store_one(store: Any, chunk_id: bytes, data: bytes | bytearray | memoryview) -> int:
    if _state.presence.has_chunk(chunk_id):
        return 0
    store.store_chunk(Chunk(chunk_id, data))
    return len(data)


def hash_range(path: str, starts: np.ndarray, ends: np.ndarray, expected: bytes | None,
               skip: frozenset[bytes] | None, store_enabled: bool = True) -> RangeResult:
    """Worker task: hash chunks ``[starts[i], ends[i])`` of ``path``, store missing ones.

    Args:
        path: the input file or device.
        starts, ends: the chunk ranges.
        expected: concatenated expected ids (``chop``, ``verify-index``), or None.
        skip: ids never to store (``--ignore``).
        store_enabled: store chunks (False: only hash).
    """
    digest = _state.digest
    assert digest is not None
    store = _state.store if store_enabled else None
    sha = digest.sum
    ids = bytearray()
    result = RangeResult(b"")
    seen: set[bytes] = set()
    pending: list[Future[int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for k, data in iter_ranges(fd, starts, ends):
            chunk_id = sha(data)
            if expected is not None:
                want = expected[32 * k : 32 * k + 32]
                if chunk_id != want:
                    raise ChunkInvalidError(want, chunk_id)
            ids += chunk_id
            if store is None or chunk_id in seen or (skip and chunk_id in skip):
                continue
            seen.add(chunk_id)
            if _state.io_pool is not None:
                pending.append(_state.io_pool.submit(_store_one, store, chunk_id, bytes(data)))
            else:
                stored = _store_one(store, chunk_id, data)
                if stored:
                    result.stored += 1
                    result.stored_bytes += stored
        for f in pending:
            stored = f.result()
            if stored:
                result.stored += 1
                result.stored_bytes += stored
    except OSError as exc:
        raise StoreError(f"reading {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    result.ids = bytes(ids)
    return result


def split_tasks(ends: np.ndarray, task_bytes: int = TASK_BYTES) -> list[tuple[int, int]]:
    """Cut chunk indexes ``0..n`` into consecutive ``(lo, hi)`` runs of ~task_bytes."""
    n = len(ends)
    if n == 0:
        return []
    bounds = np.searchsorted(ends, np.arange(task_bytes, int(ends[-1]), task_bytes), side="left")
    cuts = sorted({0, *(int(b) + 1 for b in bounds if 0 <= b < n - 1), n})
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def run_tasks(
    path: str,
    starts: np.ndarray,
    ends: np.ndarray,
    *,
    executor: Executor | None,
    expected: bytes | None = None,
    skip: frozenset[bytes] | None = None,
    store_enabled: bool = True,
    on_done: Callable[[int, int], None] | None = None,
) -> list[RangeResult]:
    """Run :func:`hash_range` over every chunk, in order; ``on_done(chunks, bytes)``.

    With ``executor=None`` the tasks run in this process (after :func:`init_worker`).
    """
    tasks = split_tasks(ends)
    results: list[RangeResult] = []

    def args(lo: int, hi: int) -> tuple[Any, ...]:
        exp = expected[32 * lo : 32 * hi] if expected is not None else None
        return (path, starts[lo:hi], ends[lo:hi], exp, skip, store_enabled)

    if executor is None:
        for lo, hi in tasks:
            results.append(hash_range(*args(lo, hi)))
            if on_done:
                on_done(hi - lo, int(ends[hi - 1] - starts[lo]))
        return results
    futures = [executor.submit(hash_range, *args(lo, hi)) for lo, hi in tasks]
    try:
        for (lo, hi), fut in zip(tasks, futures):
            results.append(fut.result())
            if on_done:
                on_done(hi - lo, int(ends[hi - 1] - starts[lo]))
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return results


__all__ = ["RangeResult", "hash_range", "init_worker", "iter_ranges", "run_tasks", "split_tasks"]
