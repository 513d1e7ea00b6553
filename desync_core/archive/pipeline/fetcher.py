"""The forked fetcher: an index's chunks, verified, into the shared ring, in order, within
the credit the decoder gives."""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from desync_core.archive.pipeline import limits
from desync_core.archive.pipeline.forking import LEN, PRODUCED
from desync_core.engine import Aborted, Threads
from desync_core.engine.forks import MSG
from desync_core.stores.wrappers import unexpected_size


def _fetch_into(source: Any, chunk_id: bytes, size: int, out: memoryview) -> None:
    """Fetch a verified chunk of ``size`` bytes into ``out`` (``size + 1`` long)."""
    into = getattr(source, "get_chunk_into", None)
    if into is not None:
        n = into(chunk_id, out)
    else:
        data = source.get_chunk(chunk_id).data()
        n = len(data)
        if n == size:
            out[:n] = data
    if n != size:
        raise unexpected_size(chunk_id, n, size)


class _Fetcher:
    """The fetcher process: the index's chunks into the ring, in order, within credit.

    Chunks are fetched in groups of consecutive chunks (about :data:`limits.GROUP_BYTES`), a
    group per task of a thread pool, ``-n`` groups at a time: handing every chunk to
    a thread and back costs more than fetching it (measured: twice the time).
    """

    def __init__(self, index: Any, source: Any, ring: memoryview, concurrency: int,
                 credit_fd: int, report_fd: int) -> None:
        self.index = index
        self.source = source
        self.ring = ring
        self.window = max(1, concurrency)
        self.credit_fd = credit_fd
        self.report_fd = report_fd
        self.credit = limits.RING_SIZE
        self.null_id = index.digest.null_chunk_id(index.chunk_size_max)
        self.null_size = index.chunk_size_max
        self.credit_buf = b""
        from desync_core.stores.wrappers import iter_members

        members = list(iter_members(source))
        self.local = bool(members) and all(getattr(m, "is_local", False) for m in members)
        #: chunk id -> (position, size) of its latest copy in the stream, to copy a
        #: chunk that comes again from the ring instead of fetching it again (only
        #: without threads: then nothing else writes the ring meanwhile).
        self.recent: dict[bytes, tuple[int, int]] | None = {} if self.local else None

    def _take_credit(self, *, block: bool) -> None:
        """Read credit updates; with ``block``, wait for one."""
        if block:
            select.select([self.credit_fd], [], [])
        while True:
            try:
                data = os.read(self.credit_fd, 1 << 12)
            except BlockingIOError:
                return
            if not data:
                raise Aborted  # the decoding process closed the pipe: stop
            buf = self.credit_buf + data
            usable = len(buf) - len(buf) % 8
            if usable:
                self.credit = max(self.credit, LEN.unpack_from(buf, usable - 8)[0])
            self.credit_buf = buf[usable:]

    def _groups(self) -> Iterator[tuple[list[Any], bool]]:
        """``(chunks, direct)``: runs of chunks decoded straight into the ring, or a
        single large chunk fetched into a buffer of its own (``direct`` False)."""
        group: list[Any] = []
        size = 0
        for chunk in self.index:
            if chunk.size > limits.DIRECT_MAX:
                if group:
                    yield group, True
                    group, size = [], 0
                yield [chunk], False
                continue
            group.append(chunk)
            size += chunk.size
            if size >= limits.GROUP_BYTES:
                yield group, True
                group, size = [], 0
        if group:
            yield group, True

    def _fetch(self, chunk: Any, out: memoryview) -> None:
        _, size, chunk_id = chunk
        if chunk_id == self.null_id and size == self.null_size:
            out[:size] = bytes(size)
        else:
            _fetch_into(self.source, chunk_id, size, out)

    def _fetch_group(self, group: list[Any]) -> None:
        """Decode a group into its place in the ring (credit covers it, plus a byte).

        Raises:
            _GroupError: a chunk failed; the chunks before it are in place.
        """
        ring = self.ring
        recent = self.recent
        for chunk in group:
            start, size, chunk_id = chunk
            pos = start % limits.RING_SIZE
            if recent is not None:
                seen = recent.get(chunk_id)
                # Fetched before, same size, and still in the ring (this chunk, and the
                # byte after it, end before that copy would be overwritten): copy it.
                if (seen is not None and seen[1] == size
                        and seen[0] + limits.RING_SIZE > start + size):
                    self._copy_within(seen[0], start, size)
                    recent[chunk_id] = (start, size)
                    continue
            try:
                if pos + size + 1 <= limits.RING_SIZE:
                    self._fetch(chunk, ring[pos:pos + size + 1])
                else:  # across the end of the ring
                    out = memoryview(bytearray(size + 1))
                    self._fetch(chunk, out)
                    k = limits.RING_SIZE - pos
                    ring[pos:] = out[:k]
                    ring[:size - k] = out[k:size]
            except Exception as exc:
                raise _GroupError(start, exc) from exc
            if recent is not None:
                recent[chunk_id] = (start, size)

    def _copy_within(self, src: int, dst: int, size: int) -> None:
        """Copy ``size`` bytes of the stream from position ``src`` to ``dst`` (both in
        the ring, either may wrap around its end)."""
        ring = self.ring
        while size:
            s = src % limits.RING_SIZE
            d = dst % limits.RING_SIZE
            k = min(size, limits.RING_SIZE - s, limits.RING_SIZE - d)
            ring[d:d + k] = ring[s:s + k]
            src += k
            dst += k
            size -= k

    def _fetch_large(self, chunk: Any) -> memoryview:
        out = memoryview(bytearray(chunk.size + 1))
        self._fetch(chunk, out)
        return out

    def _produced(self, offset: int) -> None:
        os.write(self.report_fd, MSG.pack(PRODUCED, offset))

    def run(self) -> None:
        """Fetch everything; errors are raised when their chunk's turn comes."""
        os.set_blocking(self.credit_fd, False)
        if self.local:
            self._run_here()
            return
        groups = self._groups()
        inflight: deque[tuple[list[Any], bool, Any]] = deque()
        nxt = next(groups, None)
        with Threads(self.window, name="desync-fetch") as pool:
            try:
                while nxt is not None or inflight:
                    while nxt is not None and len(inflight) < self.window:
                        group, direct = nxt
                        last = group[-1]
                        # a decode may write one byte past its chunk (when the chunk is
                        # too long, which fails): that byte must be free as well
                        if direct and last.start + last.size + 1 > self.credit:
                            break
                        task = self._fetch_group if direct else self._fetch_large
                        inflight.append((group, direct, pool.submit(
                            task, group if direct else group[0])))
                        nxt = next(groups, None)
                    if not inflight:
                        self._take_credit(block=True)
                        continue
                    group, direct, future = inflight.popleft()
                    try:
                        data = future.result()
                    except _GroupError as failed:
                        self._failed(failed)
                    self._done(group, direct, data)
            except BaseException:
                for _, _, future in inflight:
                    future.cancel()
                raise

    def _run_here(self) -> None:
        """The same, without threads: the chunks of a local store are computed on
        (decompressed, hashed), not waited for, and the other processes use the other
        cores; handing work to threads would only add switches."""
        for group, direct in self._groups():
            last = group[-1]
            if direct:
                while last.start + last.size + 1 > self.credit:
                    self._take_credit(block=True)
                try:
                    self._fetch_group(group)
                except _GroupError as failed:
                    self._failed(failed)
                self._done(group, direct, None)
            else:
                self._done(group, direct, self._fetch_large(last))

    def _failed(self, failed: _GroupError) -> None:
        """Report the chunks of a group before the one that failed, raise its error."""
        self._produced(failed.done)
        raise failed.error

    def _done(self, group: list[Any], direct: bool, data: memoryview | None) -> None:
        """A group is fetched: copy it into the ring if it is not there, report it."""
        last = group[-1]
        if not direct:  # copy in pieces, as credit allows
            assert data is not None
            start = last.start
            done = 0
            while done < last.size:
                room = self.credit - (start + done)
                if room <= 0:
                    self._take_credit(block=True)
                    continue
                pos = (start + done) % limits.RING_SIZE
                k = min(last.size - done, room, limits.RING_SIZE - pos, limits.BLOCK_MAX)
                self.ring[pos:pos + k] = data[done:done + k]
                done += k
                self._produced(start + done)
        else:
            self._produced(last.start + last.size)
        self._take_credit(block=False)


class _GroupError(Exception):
    """A chunk of a group failed with ``error``; the stream is complete up to ``done``."""

    def __init__(self, done: int, error: Exception) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


def fetcher_body(index: Any, source: Any, ring: memoryview, concurrency: int,
                 credit_fd: int, report_fd: int) -> Callable[[], None]:
    """What the fetcher process runs (:func:`desync_core.engine.fork`)."""
    return lambda: _Fetcher(index, source, ring, concurrency, credit_fd, report_fd).run()


