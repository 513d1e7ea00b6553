"""Extraction in two processes: nodes are produced here, a forked child writes them.

Unpacking a tree is two kinds of work of about equal size: decoding the archive
(Python, per element) and creating files (system calls, per file). One process does
them one after the other, and threads do not help, because every system call hands
the GIL back and forth. :class:`ForkedWriter` forks a child that runs an ordinary
sequential consumer (e.g. :meth:`DiskWriter.write
<desync_core.archive.disk.DiskWriter.write>`) on the node stream this process
produces, so both run at the same time.

Transport:

* nodes go through a pipe in pickled batches: a file or directory without metadata
  beyond owner, mode and mtime as a small tuple, anything else as its :class:`Node`
  (without the payload), :data:`DIR_END` as ``None``;
* file contents go through a shared memory ring (an anonymous shared mapping made
  before the fork); a record carries the ring offset. A producer that reads its input
  through :meth:`ForkedWriter.reader` has the input in the ring already, so contents it
  hands out (see :meth:`Payload.regions <desync_core.archive.base.Payload.regions>`)
  are sent by offset without copying; other contents are copied into the ring;
* the child acknowledges every batch once it has consumed it; ring space is reused
  only after that, so this process waits when the child falls behind.

The child consumes the records in order and stops at its first error, so the outcome
is that of sequential extraction: everything before the failing element is written,
nothing after it. An error of the child (a file that cannot be created...) is sent
back and raised here. An error here (a malformed archive...) lets the child finish
what it was sent, then it is raised, unless the child failed first.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import pickle
import signal
import struct
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from desync_core.archive.base import DIR_END, DirEnd, Node, Payload, PlainFile
from desync_core.errors import DesyncError

#: Size of the shared ring for file contents.
RING_SIZE = 32 << 20
#: Largest contiguous piece of the ring handed out at once (reads, payload pieces).
PIECE_MAX = 4 << 20
#: A batch is sent once it holds this many records or refers to this many bytes ...
BATCH_RECORDS = 128
BATCH_BYTES = 2 << 20
#: ... and the first batches are smaller, so that the child starts early.
FIRST_BATCH_RECORDS = 8

_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_LEN = struct.Struct("<Q")
_END = 0
_ABORT = (1 << 64) - 1
_STATUS = struct.Struct("<cQ")
_ACK, _DONE, _ERROR = b"A", b"D", b"E"
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_NODE_FIELDS = tuple(Node.__dataclass_fields__)  # type: ignore[attr-defined]


def can_fork() -> bool:
    """Whether a writer process can be forked safely (no other threads are running)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class _Aborted(BaseException):
    """The sending process stopped (it failed, or it is gone): the child just exits."""


# -- the child ---------------------------------------------------------------------------


class _RingPayload(Payload):
    """Content in the ring: one known piece, or pieces that follow in the record stream."""

    __slots__ = ("first", "receiver", "remaining", "size")

    def __init__(self, receiver: _Receiver, size: int, first: memoryview | None) -> None:
        self.receiver = receiver
        self.size = size
        self.remaining = size
        self.first = first

    def blocks(self) -> Iterator[memoryview]:
        first = self.first
        if first is not None:
            self.first = None
            self.remaining = 0
            yield first
            return
        while self.remaining:
            piece = self.receiver.piece()
            self.remaining -= len(piece)
            yield piece


class _Receiver:
    """Reads batches from the pipe and turns them back into a node stream."""

    def __init__(self, data_fd: int, status_fd: int, ring: memoryview) -> None:
        self.data = os.fdopen(data_fd, "rb", buffering=1 << 16)
        self.status_fd = status_fd
        self.ring = ring
        self.seq = -1
        self.records: Iterator[Any] = iter(())

    def next_batch(self) -> bool:
        """Acknowledge the batch consumed so far and load the next (False at the end)."""
        if self.seq >= 0:
            os.write(self.status_fd, _STATUS.pack(_ACK, self.seq))
        head = self.data.read(8)
        if len(head) < 8:
            raise _Aborted
        (n,) = _LEN.unpack(head)
        if n == _END:
            return False
        if n == _ABORT:
            raise _Aborted
        body = self.data.read(n)
        if len(body) < n:
            raise _Aborted
        self.seq += 1
        self.records = iter(pickle.loads(body))
        return True

    def piece(self) -> memoryview:
        """The next ``(offset, length)`` record, as a view of the ring."""
        for off, n in self.records:
            return self.ring[off:off + n]
        if not self.next_batch():
            raise _Aborted  # cannot end inside a file's content
        return self.piece()

    def nodes(self) -> Iterator[Node | DirEnd]:
        """The node stream that was sent."""
        ring = self.ring
        if not self.next_batch():
            return
        while True:
            records = self.records
            for record in records:
                payload = None
                if record is None:
                    yield DIR_END
                    continue
                if type(record) is tuple:
                    name, path, mode, uid, gid, mtime, size, off = record
                    if mode & _S_IFMT == _S_IFREG and (off >= 0 or not size):
                        # a plain file in one piece
                        yield (name, path, mode, uid, gid, mtime, ring, off, size)
                        continue
                    node = Node(mode, name, path, uid, gid, mtime)
                    node.size = size
                    payload = node.payload = _RingPayload(self, size, None)
                else:
                    node = record
                    if node.size and node.mode & _S_IFMT == _S_IFREG:
                        payload = node.payload = _RingPayload(self, node.size, None)
                yield node
                if payload is not None and payload.remaining:
                    for _ in payload.blocks():  # what the consumer left unread
                        pass
                if self.records is not records:
                    break  # the content continued into the next batch
            else:
                if not self.next_batch():
                    return


def _child(consume: Callable[[Iterable[Node | DirEnd]], None], data_fd: int,
           status_fd: int, ring: memoryview) -> None:
    """The writer process: consume what arrives, report, exit (never returns)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
        consume(_Receiver(data_fd, status_fd, ring).nodes())
        os.write(status_fd, _STATUS.pack(_DONE, 0))
    except _Aborted:
        try:
            os.write(status_fd, _STATUS.pack(_DONE, 0))
        except OSError:
            pass  # the parent is gone
    except BaseException as exc:  # everything goes to the parent
        code = 1
        try:
            os.write(status_fd, _STATUS.pack(_ERROR, 0) + _pack_error(exc))
        except BaseException:  # nothing left to tell it with
            pass
    finally:
        os._exit(code)


def _pack_error(exc: BaseException) -> bytes:
    """The exception, pickled for the parent to raise as it is."""
    if not isinstance(exc, (DesyncError, OSError)):
        # A bug: keep the child's traceback, the parent shows it.
        text = "".join(traceback.format_exception(exc))
        exc = RuntimeError(f"the extraction process failed:\n{text}")
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
    except Exception:  # e.g. an exception with a custom __init__
        data = pickle.dumps(DesyncError(str(exc)))
    return _LEN.pack(len(data)) + data


# -- the parent --------------------------------------------------------------------------


class _ChildError(Exception):
    """The child reported an error or died; ``error`` is what to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class ForkedWriter:
    """Feed a node stream to ``consume`` running in a forked child process.

    Args:
        consume: a sequential node-stream consumer, e.g. ``DiskWriter(...).write``. It
            runs in the child, on the state it has when :meth:`run` forks.

    Only fork where :func:`can_fork` says so (no other threads). To let a producer read
    its input straight into the shared ring, :meth:`start` first, build the producer
    with :meth:`reader`, then :meth:`run`.
    """

    def __init__(self, consume: Callable[[Iterable[Node | DirEnd]], None]) -> None:
        self.consume = consume
        self._map: mmap.mmap | None = None
        self._ring: memoryview | None = None
        self._pid = 0
        self._data_fd = -1
        self._status_fd = -1
        self._status_buf = b""
        self._child_done = False
        self._child_error: BaseException | None = None
        # Ring space in virtual (ever increasing) offsets; ring offset = virtual % size.
        self._alloc = 0  # the next free byte
        self._sent: deque[tuple[int, int]] = deque()  # unacknowledged (seq, lowest use)
        self._seq = 0
        self._batch: list[Any] = []
        self._batch_low = 0  # lowest virtual offset the open batch may refer to
        self._batch_bytes = 0
        self._batch_limit = FIRST_BATCH_RECORDS
        self._block: Any = None  # the block the producer reads from now
        self._block_start = 0  # its virtual offset

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Make the ring and the pipes, fork the child."""
        if self._pid:
            return
        self._map = mmap.mmap(-1, RING_SIZE)
        self._ring = memoryview(self._map)
        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            fcntl.fcntl(data_w, _F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # the default size works too
        pid = os.fork()
        if pid == 0:
            os.close(data_w)
            os.close(status_r)
            _child(self.consume, data_r, status_w, self._ring)
        os.close(data_r)
        os.close(status_w)
        self._pid = pid
        self._data_fd = data_w
        self._status_fd = status_r

    def run(self, nodes: Iterable[Node | DirEnd]) -> None:
        """Send every node to the child; return once it has written them all.

        Raises:
            the child's error if it failed, else the error ``nodes`` raised, if any.
        """
        self.start()
        try:
            try:
                for node in nodes:
                    self._add(node)
                self._flush()
                self._send(_LEN.pack(_END))
            except _ChildError as failed:
                raise failed.error from None
            except BaseException:
                try:
                    self._send(_LEN.pack(_ABORT))
                except _ChildError:
                    pass
                self._wait_child()
                if self._child_error is not None:
                    raise self._child_error from None
                raise
            self._wait_child()
            if self._child_error is not None:
                raise self._child_error from None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child (if still running) and release everything."""
        for fd in (self._data_fd, self._status_fd):
            if fd >= 0:
                os.close(fd)
        self._data_fd = self._status_fd = -1
        if self._pid:
            if not self._child_done:
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(self._pid, 0)
            self._pid = 0
        self._block = None
        self._batch = []
        # The producer may still hold views of the ring: the mapping goes away with the
        # last of them.
        self._ring = None
        self._map = None

    def _wait_child(self) -> None:
        """Wait for the child's final word (done, error, or its end)."""
        try:
            while not self._child_done:
                self._read_status(block=True)
        except _ChildError:
            pass

    # -- what the child reports --------------------------------------------------------

    def _read_status(self, *, block: bool) -> None:
        """Handle the child's messages; with ``block`` wait for at least one.

        Raises:
            _ChildError: the child reported an error or ended without a word.
        """
        if self._child_error is not None:
            raise _ChildError(self._child_error)
        try:
            if block:
                data = os.read(self._status_fd, 1 << 16)
            else:
                os.set_blocking(self._status_fd, False)
                try:
                    data = os.read(self._status_fd, 1 << 16)
                finally:
                    os.set_blocking(self._status_fd, True)
        except BlockingIOError:
            return
        if not data:
            if not self._child_done:
                self._child_done = True
                self._child_error = DesyncError("the extraction process ended unexpectedly")
            if self._child_error is not None:
                raise _ChildError(self._child_error)
            return
        buf = self._status_buf + data
        pos = 0
        head = _STATUS.size
        while len(buf) - pos >= head:
            tag, value = _STATUS.unpack_from(buf, pos)
            if tag == _ACK:
                sent = self._sent
                while sent and sent[0][0] <= value:
                    sent.popleft()
            elif tag == _DONE:
                self._child_done = True
            else:  # an error, its pickle follows
                while len(buf) - pos < head + 8:
                    buf += self._read_more()
                (n,) = _LEN.unpack_from(buf, pos + head)
                while len(buf) - pos < head + 8 + n:
                    buf += self._read_more()
                try:
                    error = pickle.loads(buf[pos + head + 8:pos + head + 8 + n])
                except Exception:
                    error = DesyncError("the extraction process failed")
                self._child_done = True
                self._child_error = error
                raise _ChildError(error)
            pos += head
        self._status_buf = buf[pos:]

    def _read_more(self) -> bytes:
        more = os.read(self._status_fd, 1 << 16)
        if not more:
            self._child_done = True
            self._child_error = DesyncError("the extraction process ended unexpectedly")
            raise _ChildError(self._child_error)
        return more

    # -- sending -----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._data_fd, view):]
        except BrokenPipeError:
            self._wait_child()
            raise _ChildError(self._child_error or DesyncError(
                "the extraction process ended unexpectedly")) from None

    def _flush(self) -> None:
        """Send the open batch."""
        batch = self._batch
        if not batch:
            return
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        self._send(_LEN.pack(len(data)) + data)
        self._sent.append((self._seq, self._batch_low))
        self._seq += 1
        self._batch = []
        # Whatever the next batch refers to is in the producer's current block or
        # reserved from now on.
        self._batch_low = self._block_start if self._block is not None else self._alloc
        self._batch_bytes = 0
        if self._batch_limit < BATCH_RECORDS:
            self._batch_limit = min(BATCH_RECORDS, self._batch_limit * 2)
        self._read_status(block=False)

    def _low(self) -> int:
        """The lowest virtual offset still in use (by the child, a batch or the reader)."""
        if self._sent:
            return self._sent[0][1]
        if self._batch:
            return self._batch_low
        return self._block_start if self._block is not None else self._alloc

    def _reserve(self, n: int) -> int:
        """Ring offset of ``n`` contiguous free bytes (``n <= PIECE_MAX``)."""
        start = self._alloc
        pos = start % RING_SIZE
        if pos + n > RING_SIZE:  # not before the end of the ring: start over at 0
            start += RING_SIZE - pos
            pos = 0
        if start + n - self._low() > RING_SIZE:
            self._flush()  # the child may be waiting for it
            while start + n - self._low() > RING_SIZE:
                self._read_status(block=True)
        self._alloc = start + n
        return pos

    def _place(self, payload: Payload, size: int) -> int:
        """Put a payload in the ring as one piece; its offset, or -1 if that cannot be
        done (then nothing was consumed)."""
        regions = payload.regions()
        region = next(regions, None)
        if region is None:
            return -1
        buf, start, n = region
        if n != size:
            raise _Split(region, regions)
        if buf is self._block:  # already in the ring
            self._batch_bytes += n
            return (self._block_start + start) % RING_SIZE
        if n > PIECE_MAX:
            raise _Split(region, regions)
        off = self._reserve(n)
        self._ring[off:off + n] = buf[start:start + n]  # type: ignore[index]
        self._batch_bytes += n
        return off

    def _pieces(self, first: tuple[Any, int, int] | None,
                regions: Iterator[tuple[Any, int, int]], size: int, path: bytes) -> None:
        """Append a payload as ``(offset, length)`` records."""
        got = 0
        region = first
        while region is not None:
            buf, start, n = region
            got += n
            while n:
                if buf is self._block:
                    off = (self._block_start + start) % RING_SIZE
                    k = n
                else:
                    k = min(n, PIECE_MAX)
                    off = self._reserve(k)
                    self._ring[off:off + k] = buf[start:start + k]  # type: ignore[index]
                self._batch.append((off, k))
                self._batch_bytes += k
                start += k
                n -= k
                if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_RECORDS:
                    self._flush()
            region = next(regions, None)
        if got != size:
            raise DesyncError(f"{path.decode('utf-8', 'backslashreplace')}: content has "
                              f"{got} bytes instead of {size}")

    def _add(self, node: Node | DirEnd | PlainFile) -> None:
        """Append one node (and its content) to the open batch."""
        if type(node) is tuple:
            name, path, mode, uid, gid, mtime, buf, start, size = node
            if not size:
                off = 0
            elif buf is self._block:  # already in the ring
                off = (self._block_start + start) % RING_SIZE
            elif size <= PIECE_MAX:
                off = self._reserve(size)
                self._ring[off:off + size] = buf[start:start + size]  # type: ignore[index]
            else:
                self._batch.append((name, path, mode, uid, gid, mtime, size, -1))
                self._pieces((buf, start, size), iter(()), size, path)
                self._maybe_flush()
                return
            self._batch.append((name, path, mode, uid, gid, mtime, size, off))
            self._batch_bytes += size
            if len(self._batch) >= self._batch_limit or self._batch_bytes >= BATCH_BYTES:
                self._flush()
            return
        if node is DIR_END:
            self._batch.append(None)
        else:
            assert isinstance(node, Node)
            kind = node.mode & _S_IFMT
            payload = node.payload
            size = node.size if payload is not None and kind == _S_IFREG else 0
            if (node.xattrs is None and node.acl is None and node.selinux is None
                    and node.fcaps is None and node.user is None and node.group is None
                    and not node.flags and not node.quota_projid
                    and kind in (_S_IFREG, _S_IFDIR)):
                off = -1
                if size:
                    try:
                        off = self._place(payload, size)  # type: ignore[arg-type]
                    except _Split as split:
                        self._batch.append((node.name, node.path, node.mode, node.uid,
                                            node.gid, node.mtime, size, -1))
                        self._pieces(split.first, split.rest, size, node.path)
                        self._maybe_flush()
                        return
                self._batch.append((node.name, node.path, node.mode, node.uid, node.gid,
                                    node.mtime, size, off))
            else:
                copy = Node(**{f: getattr(node, f) for f in _NODE_FIELDS})
                copy.payload = None
                copy.size = size
                self._batch.append(copy)
                if size:
                    regions = payload.regions()  # type: ignore[union-attr]
                    self._pieces(next(regions, None), regions, size, node.path)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self._batch) >= self._batch_limit or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    # -- reading into the ring ---------------------------------------------------------

    def reader(self, readinto: Callable[[memoryview], int | None]) -> Callable[[int], Any]:
        """A ``read(n)`` that reads with ``readinto`` straight into the ring.

        For a producer that holds on to the last block it read only (like the catar
        decoder): contents it hands out as regions of that block are then sent by
        offset, without a copy. Needs :meth:`start` first.
        """
        def read(n: int) -> memoryview:
            n = min(max(n, 1), PIECE_MAX)
            off = self._reserve(n)
            view = self._ring[off:off + n]  # type: ignore[index]
            got = readinto(view) or 0
            block = view[:got]
            self._block = block
            self._block_start = self._alloc - n
            return block

        return read


class _Split(Exception):  # noqa: N818 - control flow, not an error
    """A payload does not come as one region: send it in pieces."""

    def __init__(self, first: tuple[Any, int, int], rest: Iterator[tuple[Any, int, int]]) -> None:
        super().__init__()
        self.first = first
        self.rest = rest


__all__ = ["PIECE_MAX", "RING_SIZE", "ForkedWriter", "can_fork"]
