"""Archive operations behind ``tar``, ``untar`` and ``mtree`` (``catar.md``).

Everything is a node stream (:mod:`desync_core.archive.base`) flowing from a source
format to a destination:

* ``tar``: a readable format (``disk``, ``tar``...) -> the ``catar`` format (a file),
  or -> catar stream -> streaming chunker -> store + ``.caidx``;
* ``untar``: catar file or ``.caidx`` chunks -> catar decoder -> a writable format
  (``disk``, ``gnu-tar``...);
* ``mtree``: catar, ``.caidx`` or directory -> mtree text.

Formats are looked up in the archive-format registry that plugins fill, so the
built-in ``catar``/``disk`` and the ``format_tar`` plugin are used the same way.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, cast

from desync_core import flags as ff
from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    ArchiveFormat,
    ArchiveOptions,
    NodeStream,
    PlainNodeStream,
)
from desync_core.archive.catar import CatarDecoder, CatarEncoder, open_input
from desync_core.archive.mtree import write_mtree
from desync_core.digest import Digest
from desync_core.engine.forks import can_fork
from desync_core.engine.threads import Threads
from desync_core.errors import UsageError
from desync_core.progress import Progress
from desync_core.stores.wrappers import read_sized

if TYPE_CHECKING:  # numpy comes with these; untar of a catar file does not need it
    from desync_core.chunker import ChunkerParams
    from desync_core.index import Index



def archive_flags(digest: Digest, base: int = DEFAULT_FEATURE_FLAGS) -> int:
    """The ENTRY feature flags for an archive: ``base`` plus the digest bit in use."""
    return (base & ~ff.SHA512_256) | digest.flag


def get_format(name: str, *, direction: str) -> ArchiveFormat:
    """The archive format registered as ``name`` that can be read or written.

    Args:
        name: e.g. ``disk``, ``catar``, ``tar``, ``gnu-tar``.
        direction: ``"input"`` (must be readable) or ``"output"`` (must be writable).

    Raises:
        UsageError: nobody registered the name (``invalid input format 'x'``) or the
            format cannot be used in that direction.
        UnknownSchemeError: the name belongs to a plugin that is not installed (the
            message says which package to install).
    """
    from desync_core.plugins import get_registries
    from desync_core.registry import KNOWN_PLUGINS

    registry = get_registries().archive_formats
    if name not in registry and name not in KNOWN_PLUGINS.get(registry.kind, {}):
        raise UsageError(f"invalid {direction} format '{name}'")
    fmt = registry.get(name, what=f"{direction} format '{name}'").load()()
    if not (fmt.can_read if direction == "input" else fmt.can_write):
        raise UsageError(f"invalid {direction} format '{name}'")
    return fmt


# -- tar -----------------------------------------------------------------------------------


class BlockReader:
    """``readinto`` over an iterator of byte blocks (feeds the streaming chunker)."""

    def __init__(self, blocks: Iterable[bytes | bytearray | memoryview]) -> None:
        self._blocks = iter(blocks)
        self._current = memoryview(b"")

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill ``buffer`` as far as possible; 0 at the end."""
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view):
            if not self._current:
                block = next(self._blocks, None)
                if block is None:
                    break
                self._current = memoryview(block).cast("B")
                continue
            k = min(len(view) - n, len(self._current))
            view[n:n + k] = self._current[:k]
            self._current = self._current[k:]
            n += k
        return n


#: ``tar -i`` hands the hashing threads this many bytes of chunks at a time.
RUN_BYTES = 1 << 20


def _counting(readinto: Any, progress: Progress) -> Any:
    """``readinto`` that reports the bytes it reads to ``progress``."""
    def read(view: memoryview) -> int:
        n = readinto(view)
        progress.update(n)
        return n

    return read


def tar_to_index(nodes: NodeStream, feature_flags: int, params: ChunkerParams,
                 digest: Digest, store: Any, *, workers: int, io_threads: int = 10,
                 store_is_local: bool = True, progress: Progress | None = None) -> Index:
    """Chunk the catar stream of ``nodes`` into ``store``; return the archive index.

    The stream is encoded in this thread and fed to the streaming chunker; chunks are
    hashed, compressed and stored by ``workers`` threads (remote stores get
    ``io_threads`` concurrent requests), at most a bounded number in flight. The index
    carries the archive's ENTRY feature flags with the digest bit of the digest in
    use, as casync writes ``.caidx`` files (``index.md`` §2).
    """
    import numpy as np

    from desync_core.archive.pipeline import ChunkWorkers
    from desync_core.chunker import iter_chunks
    from desync_core.index import Index
    from desync_core.ops.make import ChunkSink, index_flags_for

    progress = progress or Progress()
    stream = BlockReader(CatarEncoder(feature_flags).encode(nodes))
    if can_fork():
        def make_sink() -> ChunkSink:
            pool = None
            if store is not None and not store_is_local:
                pool = Threads(io_threads, name="desync-store")
            return ChunkSink(store, digest, pool)

        if digest.hashlib_name == "sha512_256":
            from desync_core.batchhash import native_kernel

            native_kernel()  # loaded (or built) once, before the workers are forked
        chunk_workers = ChunkWorkers(make_sink, workers, params)
        chunk_workers.start()
        try:
            run_ends, joined, first = chunk_workers.run(_counting(stream.readinto, progress))
        finally:
            chunk_workers.close()
        return Index.from_chunks(run_ends, joined, params, index_flags_for(first, digest))
    io_pool = None
    if store is not None and not store_is_local:
        io_pool = Threads(io_threads, name="desync-store")
    sink = ChunkSink(store, digest, io_pool)
    ends: list[int] = []
    ids: list[bytes] = []
    first = b""
    pending: deque[Future[bytes]] = deque()

    def process(run: list[tuple[int, memoryview]]) -> bytes:
        return b"".join([sink.process(data, offset, offset,
                                      np.array([offset + len(data)], dtype=np.int64))
                         for offset, data in run])

    try:
        with Threads(workers, name="desync-hash") as pool:
            try:
                # Chunks go to the threads in runs of about RUN_BYTES: handing over
                # every chunk costs more than hashing it (thread wake-ups).
                run: list[tuple[int, memoryview]] = []
                run_bytes = 0
                for offset, data in iter_chunks(stream.readinto, params):
                    if not first:
                        first = bytes(data[:64])
                    ends.append(offset + len(data))
                    run.append((offset, data))
                    run_bytes += len(data)
                    if run_bytes >= RUN_BYTES:
                        pending.append(pool.submit(process, run))
                        progress.update(run_bytes)
                        run = []
                        run_bytes = 0
                        while len(pending) > 2 * max(1, workers):
                            ids.append(pending.popleft().result())
                if run:
                    pending.append(pool.submit(process, run))
                    progress.update(run_bytes)
                while pending:
                    ids.append(pending.popleft().result())
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    finally:
        if io_pool is not None:
            io_pool.shutdown(wait=True, cancel_futures=True)
    return Index.from_chunks(ends, b"".join(ids), params, index_flags_for(first, digest))


# -- untar / mtree -------------------------------------------------------------------------


class IndexStream:
    """The bytes an index describes, fetched with bounded concurrency, in order.

    At most ``concurrency`` chunks are requested ahead of the reader, so memory stays
    bounded by ``concurrency`` x the largest chunk. Every chunk is hash-verified by the
    store chain and size-checked against the index; null chunks come from memory.
    """

    def __init__(self, index: Index, source: Any, concurrency: int = 10) -> None:
        self.index = index
        self.source = source
        self._null_id = index.digest.null_chunk_id(index.chunk_size_max)
        self._pool = Threads(concurrency, name="desync-fetch")
        self._window = max(1, concurrency)
        self._chunks = iter(index)
        self._pending: deque[Future[bytes]] = deque()
        self._current = memoryview(b"")

    def _fetch(self, chunk: Any) -> bytes:
        if chunk.id == self._null_id and chunk.size == self.index.chunk_size_max:
            return bytes(chunk.size)
        return bytes(read_sized(self.source, chunk.id, chunk.size))

    def _top_up(self) -> None:
        while len(self._pending) < self._window:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._pending.append(self._pool.submit(self._fetch, chunk))

    def read(self, size: int = -1) -> bytes | memoryview:
        """Up to ``size`` bytes of the stream (b"" at the end)."""
        if not self._current:
            self._top_up()
            if not self._pending:
                return b""
            self._current = memoryview(self._pending.popleft().result())
            self._top_up()
        k = len(self._current) if size < 0 else min(size, len(self._current))
        out, self._current = self._current[:k], self._current[k:]
        return out

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the next bytes of the stream; 0 at the end."""
        view = memoryview(buffer).cast("B")
        n = 0
        total = len(view)
        while n < total:
            current = self._current
            if not current:
                self._top_up()
                if not self._pending:
                    break
                current = self._current = memoryview(self._pending.popleft().result())
                self._top_up()
            k = min(total - n, len(current))
            view[n:n + k] = current[:k]
            self._current = current[k:]
            n += k
        return n

    def close(self) -> None:
        """Stop fetching."""
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def open_archive(ctx: Any, location: str, *, index: bool = False,
                 stores: list[str] | None = None, cache: str | None = None,
                 ring: Any = None, plain_files: bool = False) -> Iterator[PlainNodeStream]:
    """The node stream of a catar file, or of a ``.caidx`` whose chunks are in ``stores``.

    Args:
        ctx: the run context (opens the index and the store chain).
        location: catar path, or index location (``-`` = stdin for either).
        index: ``location`` is an archive index.
        stores, cache: ``-s``/``-c`` locations for an index.
        ring: a started :class:`~desync_core.archive.pipeline.ForkedWriter`: the
            archive is read into its shared ring (an index's chunks are fetched there by
            a forked process where that is safe), so it can send contents by offset.
        plain_files: the stream may contain :data:`~desync_core.archive.base.PlainFile`
            tuples (for consumers that accept them).

    Everything opened (file, stores, fetch threads) is closed when the block exits.
    """
    if not index:
        read, close = open_input(location, readinto=ring is not None)
        if ring is not None:
            read = ring.reader(read)
        nodes = CatarDecoder(read, name=location).nodes(plain_files=plain_files)
        try:
            yield nodes
        finally:
            nodes.close()
            close()
        return
    idx = ctx.read_index(location)
    source = ctx.open_source(stores or [], cache or None, idx.digest,
                             max_chunk_size=idx.chunk_size_max)
    stream = None
    if ring is None:
        stream = IndexStream(idx, source, ctx.concurrency)
        read = stream.read
    else:
        if can_fork():
            read = ring.fetcher(idx, source, ctx.concurrency)
        else:
            stream = IndexStream(idx, source, ctx.concurrency)
            read = ring.reader(stream.readinto)
    nodes = CatarDecoder(read, name=location).nodes(plain_files=plain_files)
    try:
        yield nodes
    finally:
        nodes.close()
        if stream is not None:
            stream.close()
        source.close()


def untar(ctx: Any, location: str, target: str, fmt: ArchiveFormat,
          options: ArchiveOptions, *, index: bool = False, stores: list[str] | None = None,
          cache: str | None = None, fork: bool = True) -> None:
    """Extract a catar file or a ``.caidx`` (chunks from ``stores``) with ``fmt``.

    A format that declares ``forked_writer`` (the ``disk`` format: into a directory)
    is written by a forked process (:mod:`desync_core.archive.pipeline`) while this
    one reads and decodes the archive straight into the memory it shares with it;
    other formats, or where forking is not safe (other threads running) or not wanted
    (``fork=False``), run in this process.
    """
    from desync_core.archive.pipeline import ForkedWriter

    parts = fmt.forked_writer(target, options) if fork and can_fork() else None
    if parts is None:
        with open_archive(ctx, location, index=index, stores=stores, cache=cache,
                          plain_files=fmt.accepts_plain_files) as nodes:
            # (plain files are in the stream only for a format that accepts them)
            fmt.write(cast(NodeStream, nodes), target, options)
        return
    writer = ForkedWriter(parts.write, director=parts.director)
    writer.start()  # before any thread exists (index fetching starts threads)
    try:
        with open_archive(ctx, location, index=index, stores=stores, cache=cache,
                          ring=writer, plain_files=True) as nodes:
            writer.run(nodes)
    finally:
        writer.close()
        parts.close()


def mtree(nodes: NodeStream, digest: Digest, out: TextIO | None = None) -> int:
    """Print a node stream in mtree format; returns the number of entries."""
    return write_mtree(nodes, out or sys.stdout, digest)


__all__ = [
    "BlockReader",
    "IndexStream",
    "archive_flags",
    "get_format",
    "mtree",
    "open_archive",
    "tar_to_index",
    "untar",
]
