"""``make``: chunk a blob, store its chunks, write its index (``chunking.md`` §8).

Seekable inputs (files, block devices) go through two parallel phases in worker
processes: boundaries (:func:`desync_core.chunker.chunk_file`), then hashing and
storing (:mod:`desync_core.ops.chunkfile`). Pipes (``-``) are read once: the main
thread chunks (the numba kernel releases the GIL) while threads hash, compress and
store (hashlib and zstandard release it too).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from desync_core import flags as ff
from desync_core.chunker import ChunkerParams, chunk_file, iter_chunks
from desync_core.digest import Digest
from desync_core.errors import UsageError
from desync_core.index import Index, blob_index_flags
from desync_core.ops import chunkfile
from desync_core.progress import Progress
from desync_core.stores.chunk import Chunk
from desync_core.workers import default_workers, process_pool

CATAR_ENTRY = 0x1396FABCEA5BBB51
#: Inputs smaller than this are chunked and hashed in the calling process.
SMALL_INPUT = 16 * 1024 * 1024


@dataclass
class MakeStats:
    """Statistics of a ``make`` run."""

    chunks_accepted: int = 0
    chunks_produced: int = 0
    chunks_stored: int = 0
    bytes_stored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, int]:
        """desync's ``--print-stats`` form."""
        return {"ChunksAccepted": self.chunks_accepted, "ChunksProduced": self.chunks_produced}


def index_flags_for(first_bytes: bytes, digest: Digest) -> int:
    """Index flags: casync's blob flags, or an archive's ENTRY flags if the input is a catar."""
    if len(first_bytes) >= 64:
        size, kind, flags = struct.unpack_from("<QQQ", first_bytes)
        if size == 64 and kind == CATAR_ENTRY:
            return (flags & ~ff.SHA512_256) | digest.flag
    return blob_index_flags(digest)


def _check_input(path: str) -> bool:
    """Whether ``path`` is seekable (regular file or block device); errors are one line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory (use 'desync tar' for directories)")
    return stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)


def make_index(
    source: str,
    params: ChunkerParams,
    digest: Digest,
    *,
    store: Any = None,
    store_is_local: bool = True,
    workers: int | None = None,
    io_threads: int = 10,
    progress: Progress | None = None,
    stats: MakeStats | None = None,
) -> Index:
    """Chunk ``source`` (a path, or ``-`` for stdin) and return its index.

    Args:
        source: file, block device, FIFO, or ``-``.
        params: chunk sizes.
        digest: chunk id algorithm.
        store: a writable store (or None to only compute the index).
        store_is_local: the store is on this machine (no I/O threads needed).
        workers: worker processes (default: number of CPUs).
        io_threads: concurrent store requests per worker for remote stores.
        progress: receives byte counts.
        stats: filled with chunking statistics.
    """
    workers = workers or default_workers()
    stats = stats if stats is not None else MakeStats()
    progress = progress or Progress()
    if source == "-" or not _check_input(source):
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
        try:
            return _make_stream(stream, params, digest, store, workers, io_threads, progress, stats)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    threads = 1 if store is None or store_is_local else max(1, io_threads // workers)
    with open(source, "rb") as f:
        first = f.read(64)
        if f.seek(0, os.SEEK_END) < SMALL_INPUT:
            workers = 1  # not worth starting processes
    if workers <= 1:
        chunkfile.init_worker(store, digest.name, threads)
        return _make_seekable(source, params, digest, None, 1, first, progress, stats)
    with process_pool(workers, chunkfile.init_worker, (store, digest.name, threads)) as pool:
        return _make_seekable(source, params, digest, pool, workers, first, progress, stats)


def _make_seekable(path: str, params: ChunkerParams, digest: Digest, pool: Any, workers: int,
                   first: bytes, progress: Progress, stats: MakeStats) -> Index:
    chunk_stats: dict[str, int] = {}
    ends = chunk_file(path, params, workers=workers, executor=pool, stats=chunk_stats)
    starts = np.zeros(len(ends), dtype=np.int64)
    starts[1:] = ends[:-1]
    results = chunkfile.run_tasks(
        path, starts, ends, executor=pool, on_done=lambda _n, b: progress.update(b)
    )
    ids = b"".join(r.ids for r in results)
    stats.chunks_accepted = len(ends)
    stats.chunks_produced = chunk_stats.get("ChunksProduced", len(ends))
    stats.chunks_stored = sum(r.stored for r in results)
    stats.bytes_stored = sum(r.stored_bytes for r in results)
    return Index.from_chunks(ends, ids, params, index_flags_for(first, digest))


def _make_stream(stream: BinaryIO, params: ChunkerParams, digest: Digest, store: Any,
                 workers: int, io_threads: int, progress: Progress, stats: MakeStats) -> Index:
    sha = digest.sum
    seen: set[bytes] = set()

    def work(data: memoryview) -> tuple[bytes, int]:
        chunk_id = sha(data)
        stored = 0
        if store is not None and chunk_id not in seen:
            seen.add(chunk_id)
            if not store.has_chunk(chunk_id):
                store.store_chunk(Chunk(chunk_id, data))
                stored = len(data)
        return chunk_id, stored

    ends: list[int] = []
    ids: list[bytes] = []
    first = b""
    in_flight: deque[Future[tuple[bytes, int]]] = deque()
    limit = 4 * max(workers, io_threads if store is not None else workers)

    def drain(block: bool) -> None:
        while in_flight and (block or in_flight[0].done()):
            chunk_id, stored = in_flight.popleft().result()
            ids.append(chunk_id)
            if stored:
                stats.chunks_stored += 1
                stats.bytes_stored += stored

    with ThreadPoolExecutor(max(workers, io_threads if store is not None else 1)) as pool:
        for offset, data in iter_chunks(stream.readinto, params):  # type: ignore[arg-type]
            if not first:
                first = bytes(data[:64])
            ends.append(offset + len(data))
            in_flight.append(pool.submit(work, data))
            progress.update(len(data))
            if len(in_flight) >= limit:
                in_flight[0].result()
            drain(False)
        drain(True)
    stats.chunks_accepted = stats.chunks_produced = len(ends)
    return Index.from_chunks(np.array(ends, dtype=np.int64), b"".join(ids), params,
                             index_flags_for(first, digest))


__all__ = ["MakeStats", "index_flags_for", "make_index"]
