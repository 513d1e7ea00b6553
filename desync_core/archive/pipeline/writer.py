"""The forked writer: the node stream goes to a child that writes it, contents by ring
offset (:class:`ForkedWriter`)."""

from __future__ import annotations

import fcntl
import mmap
import os
import pickle
import select
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from desync_core.archive.base import DIR_END, DirEnd, Node, PlainFile
from desync_core.archive.pipeline import limits
from desync_core.archive.pipeline.fetcher import fetcher_body
from desync_core.archive.pipeline.forking import (
    ABORT,
    ACK,
    DONE,
    END,
    F_SETPIPE_SZ,
    LEN,
    NODE_FIELDS,
    PRODUCED,
    S_IFDIR,
    S_IFMT,
    S_IFREG,
)
from desync_core.archive.pipeline.receiver import writer_body
from desync_core.engine.errors import ChildError, died
from desync_core.engine.forks import MSG, Messages, fork, kill
from desync_core.errors import DesyncError, OperationCancelledError


class ForkedWriter:
    """Feed a node stream to ``consume`` running in a forked writer process.

    Args:
        consume: a sequential node-stream consumer that accepts
            :data:`~desync_core.archive.base.PlainFile` tuples, e.g.
            ``DiskWriter(...).write``. It runs in the child, on the state it has when
            :meth:`start` forks.

    Fork only where :func:`desync_core.engine.can_fork` says so. Use: :meth:`start`;
    build the node stream on :meth:`reader` (a file or stream read into the ring here)
    or :meth:`fetcher` (an index, fetched by another process); :meth:`run`;
    :meth:`close`. An interrupt stops both children at once; another error lets the
    writer finish what it was sent first.
    """

    def __init__(self, consume: Callable[[Iterable[Any]], None],
                 director: Callable[[Any, bool], Any] | None = None) -> None:
        self.consume = consume
        self.director = director
        self._taken = 0  # items the director handled
        self._map: mmap.mmap | None = None
        self._ring: memoryview | None = None
        self._pid = 0
        self._data_fd = -1
        self._status: Messages | None = None
        self._writer_done = False
        self._writer_error: BaseException | None = None
        # ring positions are virtual (ever increasing); ring offset = virtual % size
        self._alloc = 0  # reading here: the next free byte
        # unacknowledged batches: (seq, lowest ring position used)
        self._sent: deque[tuple[int, int]] = deque()
        self._seq = 0
        self._batch: list[Any] = []
        self._batch_low = 0  # lowest position the open batch may refer to
        self._batch_bytes = 0
        self._batch_limit = limits.FIRST_BATCH_RECORDS
        self._block: Any = None  # the block the decoder reads from now
        self._block_start = 0  # its position
        # the fetcher
        self._fetch_pid = 0
        self._credit_fd = -1
        self._fetched: Messages | None = None
        self._produced = 0
        self._credit_sent = 0
        self._fetch_error: BaseException | None = None
        self._fetch_done = False

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Make the ring and the pipes, fork the writer."""
        if self._pid:
            return
        self._map = mmap.mmap(-1, limits.RING_SIZE)
        self._ring = memoryview(self._map)
        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            fcntl.fcntl(data_w, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # the default size works too
        pid = fork(writer_body(self.consume, data_r, status_w, self._ring),
                   report_fd=status_w, close=[data_w, status_r], done=MSG.pack(DONE, 0))
        os.close(data_r)
        os.close(status_w)
        self._pid = pid
        self._data_fd = data_w
        self._status = Messages(status_r, b"", "the writing process")

    def run(self, nodes: Iterable[Node | DirEnd | PlainFile]) -> None:
        """Send every node to the writer; return once it has written them all.

        Raises:
            the writer's error if it failed, else the error ``nodes`` raised (e.g. the
            fetcher's), if any.
        """
        self.start()
        try:
            try:
                for node in nodes:
                    self._add(node)
                self._flush()
                self._send(LEN.pack(END))
            except ChildError as failed:
                raise failed.error from None
            except (KeyboardInterrupt, OperationCancelledError):
                raise  # interrupted: the children are stopped at once (close)
            except BaseException:
                # What was produced before the failure is written, as it would be by
                # the consumer alone (a content cut short by the failure in part).
                try:
                    self._flush()
                    self._send(LEN.pack(ABORT))
                except ChildError:
                    pass
                self._wait_writer()
                if self._writer_error is not None:
                    raise self._writer_error from None
                raise
            self._wait_writer()
            if self._writer_error is not None:
                raise self._writer_error from None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the children (if still running) and release everything."""
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        if self._credit_fd >= 0:
            os.close(self._credit_fd)  # tells the fetcher to stop
            self._credit_fd = -1
        for messages in (self._status, self._fetched):
            if messages is not None:
                messages.close()
        if self._pid:
            if not self._writer_done:
                kill(self._pid)
            os.waitpid(self._pid, 0)
            self._pid = 0
        if self._fetch_pid:
            # Nobody reads the ring any more: what the fetcher still does is wasted
            # (it may be waiting for a hung store).
            kill(self._fetch_pid)
            os.waitpid(self._fetch_pid, 0)
            self._fetch_pid = 0
        self._block = None
        self._batch = []
        # The decoder may still hold views of the ring: the mapping goes away with the
        # last of them.
        self._ring = None
        self._map = None

    def _wait_writer(self) -> None:
        """Wait for the writer's final word (done, error, or its end)."""
        try:
            while not self._writer_done:
                self._wait(writer=True)
        except ChildError:
            pass

    # -- events --------------------------------------------------------------------------

    def _wait(self, *, writer: bool = False, fetcher: bool = False) -> None:
        """Wait until a child says something; handle everything they said.

        Raises:
            ChildError: the writer failed or ended without a word.
        """
        fds = []
        if writer and self._status is not None and not self._status.eof:
            fds.append(self._status.fd)
        if fetcher and self._fetched is not None and not self._fetched.eof:
            fds.append(self._fetched.fd)
        if fds:
            select.select(fds, [], [])
        self._poll()

    def _poll(self) -> None:
        """Handle what the children said so far, without waiting."""
        status = self._status
        if status is not None:
            for tag, value in status.read():
                if tag == ACK:
                    sent = self._sent
                    while sent and sent[0][0] <= value:
                        sent.popleft()
                elif tag == DONE:
                    self._writer_done = True
                else:
                    self._writer_done = True
                    self._writer_error = value
            if status.eof and not self._writer_done:
                self._writer_done = True
                self._writer_error = died("the writing process", os.waitpid(self._pid, 0)[1])
                self._pid = 0  # reaped
            if self._writer_error is not None:
                raise ChildError(self._writer_error)
        fetched = self._fetched
        if fetched is not None:
            for tag, value in fetched.read():
                if tag == PRODUCED:
                    self._produced = max(self._produced, value)
                else:
                    self._fetch_error = value
            if fetched.eof:
                self._fetch_done = True
            self._give_credit()

    # -- sending -----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._data_fd, view):]
        except BrokenPipeError:
            self._wait_writer()
            raise ChildError(self._writer_error or DesyncError(
                "the writing process ended unexpectedly")) from None

    def _flush(self) -> None:
        """Send the open batch."""
        batch = self._batch
        if not batch:
            return
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        self._send(LEN.pack(len(data)) + data)
        self._sent.append((self._seq, self._batch_low))
        self._seq += 1
        self._batch = []
        self._batch_bytes = 0
        # What the next batch refers to is in the decoder's block or read later.
        self._batch_low = self._block_start if self._block is not None else self._alloc
        if self._batch_limit < limits.BATCH_RECORDS:
            self._batch_limit = min(limits.BATCH_RECORDS, self._batch_limit * 2)
        self._poll()

    def _low(self) -> int:
        """The lowest ring position still in use (by the writer, a batch, the decoder)."""
        if self._sent:
            return self._sent[0][1]
        if self._batch:
            return self._batch_low
        return self._block_start if self._block is not None else self._alloc

    def _ref(self, buf: Any, start: int, n: int) -> int | bytes:
        """How a record refers to ``buf[start:start + n]``: its ring offset if it is
        in the decoder's current ring block, else a copy."""
        if buf is self._block:
            return (self._block_start + start) % limits.RING_SIZE
        return bytes(buf[start:start + n])

    def _pieces(self, regions: Iterator[tuple[Any, int, int]], size: int,
                path: bytes) -> None:
        """Append a content as piece records."""
        got = 0
        for buf, start, n in regions:
            got += n
            ref = self._ref(buf, start, n)
            self._batch.append(ref if type(ref) is bytes else (ref, n))
            self._batch_bytes += n
            if self._batch_bytes >= limits.BATCH_BYTES or len(self._batch) >= limits.BATCH_RECORDS:
                self._flush()
        if got != size:
            raise DesyncError(f"{path.decode('utf-8', 'backslashreplace')}: content has "
                              f"{got} bytes instead of {size}")

    def _add(self, node: Node | DirEnd | PlainFile) -> None:
        """Append one node (and its content) to the open batch."""
        if self.director is not None:
            node = self.director(node, len(self._sent) >= limits.BUSY_BATCHES)
            if node is None:  # written here: meanwhile the writer may have caught up
                self._taken += 1
                if not self._taken % 4:
                    self._poll()
                return
        batch = self._batch
        if type(node) is tuple:
            name, path, mode, uid, gid, mtime, buf, start, size = node
            batch.append((name, path, mode, uid, gid, mtime, size,
                          self._ref(buf, start, size) if size else b""))
            self._batch_bytes += size
        elif node is DIR_END:
            batch.append(None)
        elif not isinstance(node, Node):  # something of the consumer's (see director)
            batch.append(node)
        else:
            kind = node.mode & S_IFMT
            payload = node.payload
            size = node.size if payload is not None and kind == S_IFREG else 0
            if (node.xattrs is None and node.acl is None and node.selinux is None
                    and node.fcaps is None and node.user is None and node.group is None
                    and not node.flags and not node.quota_projid
                    and kind in (S_IFREG, S_IFDIR)):
                batch.append((node.name, node.path, node.mode, node.uid, node.gid,
                              node.mtime, size, None if kind == S_IFDIR else b""
                              if not size else None))
            else:
                copy = Node(**{f: getattr(node, f) for f in NODE_FIELDS})
                copy.payload = None
                copy.size = size
                batch.append(copy)
            if size:
                self._pieces(payload.regions(), size, node.path)  # type: ignore[union-attr]
        if len(self._batch) >= self._batch_limit or self._batch_bytes >= limits.BATCH_BYTES:
            self._flush()

    # -- reading into the ring here ------------------------------------------------------

    def _reserve(self, n: int) -> int:
        """Ring offset of ``n`` contiguous free bytes (``n <= limits.BLOCK_MAX``)."""
        start = self._alloc
        pos = start % limits.RING_SIZE
        if pos + n > limits.RING_SIZE:  # not before the end of the ring: start over at 0
            start += limits.RING_SIZE - pos
            pos = 0
        if start + n - self._low() > limits.RING_SIZE:
            self._flush()  # the writer may be waiting for it
            while start + n - self._low() > limits.RING_SIZE:
                self._wait(writer=True)
        self._alloc = start + n
        return pos

    def reader(self, readinto: Callable[[memoryview], int | None]) -> Callable[[int], Any]:
        """A ``read(n)`` that reads with ``readinto`` straight into the ring.

        For a decoder that holds on to the last block it read only (like the catar
        decoder): contents it hands out as regions of that block are sent by offset,
        without a copy. Needs :meth:`start` first.
        """
        def read(n: int) -> memoryview:
            n = min(max(n, 1), limits.BLOCK_MAX)
            off = self._reserve(n)
            view = self._ring[off:off + n]  # type: ignore[index]
            got = readinto(view) or 0
            block = view[:got]
            self._block = block
            self._block_start = self._alloc - n
            return block

        return read

    # -- the fetcher ---------------------------------------------------------------------

    def fetcher(self, index: Any, source: Any, concurrency: int) -> Callable[[int], Any]:
        """Fork a process that fetches ``index``'s chunks from ``source`` into the ring;
        returns the ``read(n)`` of the stream for the decoder.

        ``-n`` (``concurrency``) requests are in flight; every chunk is verified by the
        store chain and size-checked against the index. A failure is raised by ``read``
        when the decoder reaches the chunk. Needs :meth:`start` first.
        """
        credit_r, credit_w = os.pipe()
        report_r, report_w = os.pipe()
        # Only the writer may hold the writer's pipes, or it would not see them end.
        writer_fds = [self._data_fd] + ([self._status.fd] if self._status is not None else [])
        assert self._ring is not None
        pid = fork(fetcher_body(index, source, self._ring, concurrency, credit_r, report_w),
                   report_fd=report_w, close=[*writer_fds, credit_w, report_r])
        os.close(credit_r)
        os.close(report_w)
        self._fetch_pid = pid
        self._credit_fd = credit_w
        self._credit_sent = limits.RING_SIZE
        self._fetched = Messages(report_r, b"", "the fetching process")
        total = int(index.length)
        pos = 0

        def read(n: int) -> memoryview | bytes:
            nonlocal pos
            if pos >= total:
                return b""
            ring = limits.RING_SIZE
            want = min(max(n, 1), limits.BLOCK_MAX, total - pos, ring - pos % ring)
            while self._produced < pos + want:
                if self._fetch_error is not None:
                    if self._produced > pos:
                        break  # hand out what was fetched before the failure
                    raise self._fetch_error
                if self._fetch_done:
                    if self._produced > pos:
                        break
                    status = os.waitpid(self._fetch_pid, 0)[1]
                    self._fetch_pid = 0  # reaped
                    raise died("the fetching process", status)
                self._flush()  # the writer may be waiting for it
                self._give_credit(force=True)
                if self._produced < pos + want:  # (flushing reads what the children said)
                    self._wait(writer=True, fetcher=True)
            k = min(want, self._produced - pos)
            off = pos % limits.RING_SIZE
            block = self._ring[off:off + k]  # type: ignore[index]
            self._block = block
            self._block_start = pos
            pos += k
            self._give_credit()
            return block

        return read

    def _give_credit(self, *, force: bool = False) -> None:
        """Tell the fetcher how far it may fill the ring (when that moved enough)."""
        if self._credit_fd < 0:
            return
        credit = self._low() + limits.RING_SIZE
        if credit > self._credit_sent and (
                force or credit - self._credit_sent >= limits.RING_SIZE // 16):
            try:
                os.write(self._credit_fd, LEN.pack(credit))
            except BrokenPipeError:
                return  # the fetcher is done (or failed: its report says so)
            self._credit_sent = credit




