"""Extraction in several processes: one decodes, a forked child writes the files, and for
an index another one fetches the chunks.

Unpacking a tree is made of kinds of work of similar size: fetching and verifying
chunks (for ``untar -i``: hashing, decompressing), decoding the archive (Python, per
element) and creating files (system calls, per file). One process does them one after
the other, and threads do not help much, because they keep handing the GIL to each
other. :class:`ForkedWriter` forks a *writer* that runs an ordinary sequential consumer
(e.g. :meth:`DiskWriter.write <desync_core.archive.disk.DiskWriter.write>`) on the node
stream this process produces, and for an index a *fetcher* that puts the stream the
index describes into shared memory, so the work runs side by side.

Transport:

* the archive stream lives in a shared memory ring (an anonymous shared mapping made
  before the forks): a catar file is read into it here (:meth:`ForkedWriter.reader`),
  an index's chunks are decoded into it by the fetcher, verified against their ids,
  in order, with ``-n`` requests in flight (:meth:`ForkedWriter.fetcher`);
* nodes go to the writer through a pipe in pickled batches: a plain file as a small
  tuple whose content is a ring offset (no copy: the decoder hands out regions of the
  ring, see :data:`~desync_core.archive.base.PlainFile` and :meth:`Payload.regions
  <desync_core.archive.base.Payload.regions>`), anything else as its :class:`Node`,
  :data:`DIR_END` as ``None``; contents that are not in the ring travel inline;
* the writer acknowledges every batch it has consumed; ring space is reused only after
  that, and only once the decoder has moved on, so the reading side waits when the
  writer falls behind (the fetcher is given "credit" up to which it may fill the ring).

The writer consumes the records in order and stops at its first error, so the outcome
is that of sequential extraction: everything before the failing element is written,
nothing after it. An error of the writer (a file that cannot be created...) or of the
fetcher (a missing or invalid chunk...) is sent here and raised as it is. An error here
(a malformed archive...) lets the writer finish what it was sent, then it is raised,
unless the writer failed first.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import pickle
import select
import signal
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

from desync_core.archive.base import DIR_END, DirEnd, Node, Payload, PlainFile
from desync_core.errors import DesyncError
from desync_core.stores.wrappers import unexpected_size

#: Size of the shared ring for the archive stream.
RING_SIZE = 32 << 20
#: Largest block of the ring handed to the decoder at once.
BLOCK_MAX = 1 << 20
#: A batch is sent once it holds this many records or refers to this many bytes ...
BATCH_RECORDS = 128
BATCH_BYTES = 2 << 20
#: ... and the first batches are smaller, so that the writer starts early.
FIRST_BATCH_RECORDS = 8
#: With a director, plain files are written here while the writer has this many batches
#: to do (the one it works on included).
BUSY_BATCHES = 3
#: Chunks larger than this are fetched into a private buffer and copied into the ring.
DIRECT_MAX = RING_SIZE // 4
#: The fetcher hands this many bytes of consecutive chunks to a thread at once.
GROUP_BYTES = 1 << 20

_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_LEN = struct.Struct("<Q")
_MSG = struct.Struct("<cQ")
_END = 0
_ABORT = (1 << 64) - 1
# writer -> here: batch acknowledged, done, error; fetcher -> here: produced, error
_ACK, _DONE, _ERROR, _PRODUCED = b"A", b"D", b"E", b"P"
# chunk worker -> here: the ids of a run (payload: seq + ids)
_RESULT = b"R"
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_NODE_FIELDS = tuple(Node.__dataclass_fields__)


def can_fork() -> bool:
    """Whether a process can be forked safely here (no other threads are running)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class _Aborted(BaseException):
    """The decoding process stopped (it failed, or it is gone): a child just exits."""


class _ChildError(Exception):
    """A child reported an error or died; ``error`` is what to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- errors across processes -----------------------------------------------------------


def _pack_error(exc: BaseException) -> bytes:
    """An exception as bytes for :func:`_unpack_error` in another process.

    Pickled as it is where that works (e.g. OSError); otherwise its class, message and
    picklable attributes travel and the object is rebuilt without calling its
    ``__init__`` (error classes with their own signatures, such as ChunkMissingError, do
    not unpickle otherwise). A bug (not a DesyncError or OSError) becomes a
    RuntimeError carrying the child's traceback.
    """
    if not isinstance(exc, (DesyncError, OSError)):
        import traceback

        text = "".join(traceback.format_exception(exc))
        exc = RuntimeError(f"an extraction process failed:\n{text}")
    try:
        data = pickle.dumps(exc)
        back = pickle.loads(data)
        if type(back) is type(exc) and str(back) == str(exc):
            return b"P" + data
    except Exception:  # rebuilt below
        pass
    state = {}
    for key, value in getattr(exc, "__dict__", {}).items():
        try:
            pickle.dumps(value)
        except Exception:  # unpicklable attributes (e.g. stores) stay behind
            continue
        state[key] = value
    try:
        data = pickle.dumps((type(exc), exc.args, state))
        pickle.loads(data)
    except Exception:
        data = pickle.dumps((DesyncError, (str(exc),), {}))
    return b"R" + data


def _unpack_error(data: bytes) -> BaseException:
    """The exception :func:`_pack_error` packed."""
    try:
        if data[:1] == b"P":
            return pickle.loads(data[1:])
        cls, args, state = pickle.loads(data[1:])
        exc = cls.__new__(cls)
        exc.args = args
        exc.__dict__.update(state)
        return exc
    except Exception:
        return DesyncError("an extraction process failed")


def _send_error(fd: int, exc: BaseException) -> None:
    data = _pack_error(exc)
    os.write(fd, _MSG.pack(_ERROR, len(data)) + data)


def _child_main(report_fd: int, body: Callable[[], None], done: bytes = b"") -> NoReturn:
    """Run a forked child's ``body`` and exit; never returns.

    The parent decides about interrupts (SIGINT is ignored here). ``done`` is written to
    ``report_fd`` when ``body`` returns or is aborted by the parent; an error is sent
    there (exit status 1), as far as the pipe still takes it.
    """
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        body()
        if done:
            os.write(report_fd, done)
    except _Aborted:
        if done:
            try:
                os.write(report_fd, done)
            except OSError:
                pass  # the parent is gone
    except BaseException as exc:  # everything goes to the parent
        code = 1
        try:
            _send_error(report_fd, exc)
        except BaseException:  # nothing left to tell it with
            pass
    finally:
        os._exit(code)


# -- the writer ------------------------------------------------------------------------


class _RingPayload(Payload):
    """A content whose pieces follow its record in the record stream."""

    __slots__ = ("receiver", "remaining", "size")

    def __init__(self, receiver: _Receiver, size: int) -> None:
        self.receiver = receiver
        self.size = size
        self.remaining = size

    def blocks(self) -> Iterator[memoryview | bytes]:
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
            os.write(self.status_fd, _MSG.pack(_ACK, self.seq))
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

    def piece(self) -> memoryview | bytes:
        """The next piece of the content being read: ``(offset, length)`` or bytes."""
        for piece in self.records:
            if type(piece) is bytes:
                return piece
            off, n = piece
            return self.ring[off:off + n]
        if not self.next_batch():
            raise _Aborted  # cannot end inside a file's content
        return self.piece()

    def nodes(self) -> Iterator[Node | DirEnd | PlainFile]:
        """The node stream that was sent (plain files as PlainFile tuples)."""
        ring = self.ring
        if not self.next_batch():
            return
        while True:
            records = self.records
            for record in records:
                if record is None:
                    yield DIR_END
                    continue
                payload = None
                if type(record) is tuple:
                    name, path, mode, uid, gid, mtime, size, ref = record
                    if ref is not None:  # a plain file, its content in one piece
                        if type(ref) is bytes:
                            yield (name, path, mode, uid, gid, mtime, ref, 0, size)
                        else:
                            yield (name, path, mode, uid, gid, mtime, ring, ref, size)
                        continue
                    node = Node(mode, name, path, uid, gid, mtime)
                    if size:
                        node.size = size
                        payload = node.payload = _RingPayload(self, size)
                else:
                    node = record
                    if (isinstance(node, Node) and node.size
                            and node.mode & _S_IFMT == _S_IFREG):
                        payload = node.payload = _RingPayload(self, node.size)
                yield node
                if payload is not None and payload.remaining:
                    for _ in payload.blocks():  # what the consumer left unread
                        pass
                if self.records is not records:
                    break  # the content went on into the next batch
            else:
                if not self.next_batch():
                    return


def _writer_main(consume: Callable[[Iterable[Any]], None], data_fd: int, status_fd: int,
                 ring: memoryview) -> NoReturn:
    """The writer process: consume what arrives, report, exit (never returns)."""
    _child_main(status_fd, lambda: consume(_Receiver(data_fd, status_fd, ring).nodes()),
                done=_MSG.pack(_DONE, 0))


# -- the fetcher -----------------------------------------------------------------------


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

    Chunks are fetched in groups of consecutive chunks (about :data:`GROUP_BYTES`), a
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
        self.credit = RING_SIZE
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
                raise _Aborted  # the decoding process closed the pipe: stop
            buf = self.credit_buf + data
            usable = len(buf) - len(buf) % 8
            if usable:
                self.credit = max(self.credit, _LEN.unpack_from(buf, usable - 8)[0])
            self.credit_buf = buf[usable:]

    def _groups(self) -> Iterator[tuple[list[Any], bool]]:
        """``(chunks, direct)``: runs of chunks decoded straight into the ring, or a
        single large chunk fetched into a buffer of its own (``direct`` False)."""
        group: list[Any] = []
        size = 0
        for chunk in self.index:
            if chunk.size > DIRECT_MAX:
                if group:
                    yield group, True
                    group, size = [], 0
                yield [chunk], False
                continue
            group.append(chunk)
            size += chunk.size
            if size >= GROUP_BYTES:
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
            pos = start % RING_SIZE
            if recent is not None:
                seen = recent.get(chunk_id)
                # Fetched before, same size, and still in the ring (this chunk, and the
                # byte after it, end before that copy would be overwritten): copy it.
                if seen is not None and seen[1] == size and seen[0] + RING_SIZE > start + size:
                    self._copy_within(seen[0], start, size)
                    recent[chunk_id] = (start, size)
                    continue
            try:
                if pos + size + 1 <= RING_SIZE:
                    self._fetch(chunk, ring[pos:pos + size + 1])
                else:  # across the end of the ring
                    out = memoryview(bytearray(size + 1))
                    self._fetch(chunk, out)
                    k = RING_SIZE - pos
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
            s = src % RING_SIZE
            d = dst % RING_SIZE
            k = min(size, RING_SIZE - s, RING_SIZE - d)
            ring[d:d + k] = ring[s:s + k]
            src += k
            dst += k
            size -= k

    def _fetch_large(self, chunk: Any) -> memoryview:
        out = memoryview(bytearray(chunk.size + 1))
        self._fetch(chunk, out)
        return out

    def _produced(self, offset: int) -> None:
        os.write(self.report_fd, _MSG.pack(_PRODUCED, offset))

    def run(self) -> None:
        """Fetch everything; errors are raised when their chunk's turn comes."""
        os.set_blocking(self.credit_fd, False)
        if self.local:
            self._run_here()
            return
        from concurrent.futures import ThreadPoolExecutor

        groups = self._groups()
        inflight: deque[tuple[list[Any], bool, Any]] = deque()
        nxt = next(groups, None)
        with ThreadPoolExecutor(self.window, thread_name_prefix="desync-fetch") as pool:
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
                pos = (start + done) % RING_SIZE
                k = min(last.size - done, room, RING_SIZE - pos, BLOCK_MAX)
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


def _fetcher_main(index: Any, source: Any, ring: memoryview, concurrency: int,
                  credit_fd: int, report_fd: int) -> NoReturn:
    """The fetcher process (never returns)."""
    _child_main(report_fd,
                lambda: _Fetcher(index, source, ring, concurrency, credit_fd, report_fd).run())


# -- the decoding process ----------------------------------------------------------------


class _Messages:
    """Reads ``_MSG`` messages (and error payloads) from a child's pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list[tuple[bytes, Any]]:
        """The complete messages available now (an error as ``(b"E", exception)``)."""
        try:
            while True:
                data = os.read(self.fd, 1 << 16)
                if not data:
                    self.eof = True
                    break
                self.buf += data
                if len(data) < 1 << 16:
                    break
        except BlockingIOError:
            pass
        out: list[tuple[bytes, Any]] = []
        buf = self.buf
        pos = 0
        head = _MSG.size
        while len(buf) - pos >= head:
            tag, value = _MSG.unpack_from(buf, pos)
            if tag in (_ERROR, _RESULT):  # a payload follows
                if len(buf) - pos < head + value:
                    if self.eof:
                        out.append((_ERROR, DesyncError("a worker process failed")))
                        pos = len(buf)
                    break
                body = buf[pos + head:pos + head + value]
                out.append((tag, _unpack_error(body) if tag == _ERROR else body))
                pos += head + value
            else:
                out.append((tag, value))
                pos += head
        self.buf = buf[pos:]
        return out


class ForkedWriter:
    """Feed a node stream to ``consume`` running in a forked writer process.

    Args:
        consume: a sequential node-stream consumer that accepts
            :data:`~desync_core.archive.base.PlainFile` tuples, e.g.
            ``DiskWriter(...).write``. It runs in the child, on the state it has when
            :meth:`start` forks.

    Fork only where :func:`can_fork` says so. Use: :meth:`start`; build the node stream
    on :meth:`reader` (a file or stream read into the ring here) or :meth:`fetcher` (an
    index, fetched by another process); :meth:`run`; :meth:`close`.
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
        self._status: _Messages | None = None
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
        self._batch_limit = FIRST_BATCH_RECORDS
        self._block: Any = None  # the block the decoder reads from now
        self._block_start = 0  # its position
        # the fetcher
        self._fetch_pid = 0
        self._credit_fd = -1
        self._fetched: _Messages | None = None
        self._produced = 0
        self._credit_sent = 0
        self._fetch_error: BaseException | None = None
        self._fetch_done = False

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Make the ring and the pipes, fork the writer."""
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
            _writer_main(self.consume, data_r, status_w, self._ring)
        os.close(data_r)
        os.close(status_w)
        self._pid = pid
        self._data_fd = data_w
        self._status = _Messages(status_r)

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
                self._send(_LEN.pack(_END))
            except _ChildError as failed:
                raise failed.error from None
            except BaseException:
                # What was produced before the failure is written, as it would be by
                # the consumer alone (a content cut short by the failure in part).
                try:
                    self._flush()
                    self._send(_LEN.pack(_ABORT))
                except _ChildError:
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
            if messages is not None and messages.fd >= 0:
                os.close(messages.fd)
                messages.fd = -1
        if self._pid:
            if not self._writer_done:
                _kill(self._pid)
            os.waitpid(self._pid, 0)
            self._pid = 0
        if self._fetch_pid:
            _reap(self._fetch_pid)
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
        except _ChildError:
            pass

    # -- events --------------------------------------------------------------------------

    def _wait(self, *, writer: bool = False, fetcher: bool = False) -> None:
        """Wait until a child says something; handle everything they said.

        Raises:
            _ChildError: the writer failed or ended without a word.
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
                if tag == _ACK:
                    sent = self._sent
                    while sent and sent[0][0] <= value:
                        sent.popleft()
                elif tag == _DONE:
                    self._writer_done = True
                else:
                    self._writer_done = True
                    self._writer_error = value
            if status.eof and not self._writer_done:
                self._writer_done = True
                self._writer_error = DesyncError("the writing process ended unexpectedly")
            if self._writer_error is not None:
                raise _ChildError(self._writer_error)
        fetched = self._fetched
        if fetched is not None:
            for tag, value in fetched.read():
                if tag == _PRODUCED:
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
            raise _ChildError(self._writer_error or DesyncError(
                "the writing process ended unexpectedly")) from None

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
        self._batch_bytes = 0
        # What the next batch refers to is in the decoder's block or read later.
        self._batch_low = self._block_start if self._block is not None else self._alloc
        if self._batch_limit < BATCH_RECORDS:
            self._batch_limit = min(BATCH_RECORDS, self._batch_limit * 2)
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
            return (self._block_start + start) % RING_SIZE
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
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_RECORDS:
                self._flush()
        if got != size:
            raise DesyncError(f"{path.decode('utf-8', 'backslashreplace')}: content has "
                              f"{got} bytes instead of {size}")

    def _add(self, node: Node | DirEnd | PlainFile) -> None:
        """Append one node (and its content) to the open batch."""
        if self.director is not None:
            node = self.director(node, len(self._sent) >= BUSY_BATCHES)
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
            kind = node.mode & _S_IFMT
            payload = node.payload
            size = node.size if payload is not None and kind == _S_IFREG else 0
            if (node.xattrs is None and node.acl is None and node.selinux is None
                    and node.fcaps is None and node.user is None and node.group is None
                    and not node.flags and not node.quota_projid
                    and kind in (_S_IFREG, _S_IFDIR)):
                batch.append((node.name, node.path, node.mode, node.uid, node.gid,
                              node.mtime, size, None if kind == _S_IFDIR else b""
                              if not size else None))
            else:
                copy = Node(**{f: getattr(node, f) for f in _NODE_FIELDS})
                copy.payload = None
                copy.size = size
                batch.append(copy)
            if size:
                self._pieces(payload.regions(), size, node.path)  # type: ignore[union-attr]
        if len(self._batch) >= self._batch_limit or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    # -- reading into the ring here ------------------------------------------------------

    def _reserve(self, n: int) -> int:
        """Ring offset of ``n`` contiguous free bytes (``n <= BLOCK_MAX``)."""
        start = self._alloc
        pos = start % RING_SIZE
        if pos + n > RING_SIZE:  # not before the end of the ring: start over at 0
            start += RING_SIZE - pos
            pos = 0
        if start + n - self._low() > RING_SIZE:
            self._flush()  # the writer may be waiting for it
            while start + n - self._low() > RING_SIZE:
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
            n = min(max(n, 1), BLOCK_MAX)
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
        pid = os.fork()
        if pid == 0:
            # Only the writer may hold the writer's pipes, or it would not see them end.
            os.close(self._data_fd)
            if self._status is not None:
                os.close(self._status.fd)
            os.close(credit_w)
            os.close(report_r)
            _fetcher_main(index, source, self._ring, concurrency,  # type: ignore[arg-type]
                          credit_r, report_w)
        os.close(credit_r)
        os.close(report_w)
        self._fetch_pid = pid
        self._credit_fd = credit_w
        self._credit_sent = RING_SIZE
        self._fetched = _Messages(report_r)
        total = int(index.length)
        pos = 0

        def read(n: int) -> memoryview | bytes:
            nonlocal pos
            if pos >= total:
                return b""
            want = min(max(n, 1), BLOCK_MAX, total - pos, RING_SIZE - pos % RING_SIZE)
            while self._produced < pos + want:
                if self._fetch_error is not None:
                    if self._produced > pos:
                        break  # hand out what was fetched before the failure
                    raise self._fetch_error
                if self._fetch_done:
                    if self._produced > pos:
                        break
                    raise DesyncError("the fetching process ended unexpectedly")
                self._flush()  # the writer may be waiting for it
                self._give_credit(force=True)
                if self._produced < pos + want:  # (flushing reads what the children said)
                    self._wait(writer=True, fetcher=True)
            k = min(want, self._produced - pos)
            off = pos % RING_SIZE
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
        credit = self._low() + RING_SIZE
        if credit > self._credit_sent and (force or credit - self._credit_sent >= RING_SIZE // 16):
            try:
                os.write(self._credit_fd, _LEN.pack(credit))
            except BrokenPipeError:
                return  # the fetcher is done (or failed: its report says so)
            self._credit_sent = credit


# -- tar -i: hashing and storing chunks in forked processes -------------------------------


def _chunk_worker_main(make_sink: Callable[[], Any], ring: memoryview, task_fd: int,
                       result_fd: int) -> NoReturn:
    """A chunk worker: hash (and store) the runs of chunks it is sent (never returns)."""

    def work() -> None:
        import numpy as np

        sink = make_sink()
        tasks = os.fdopen(task_fd, "rb", buffering=1 << 16)
        while True:
            head = tasks.read(8)
            if len(head) < 8:
                return  # the chunking process is done (or gone)
            (n,) = _LEN.unpack(head)
            seq, run = pickle.loads(tasks.read(n))
            spans = np.array(run, dtype=np.int64).reshape(-1, 2)
            ids = sink.process_spans(ring, np.ascontiguousarray(spans[:, 0]),
                                     np.ascontiguousarray(spans[:, 1]))
            payload = _LEN.pack(seq) + ids
            os.write(result_fd, _MSG.pack(_RESULT, len(payload)) + payload)

    _child_main(result_fd, work)


class ChunkWorkers:
    """Chunk a stream here, hash and store the chunks in forked worker processes.

    ``tar -i`` does three kinds of work: producing the archive stream (walking the tree,
    encoding), cutting it into chunks, and hashing, compressing and storing the chunks.
    In threads of one process they keep taking the GIL from each other; here the stream
    is cut into blocks of a shared ring, and runs of chunks (about :data:`RUN_BYTES`)
    go to ``processes`` workers as ring offsets, which reply with the chunk ids.

    Args:
        make_sink: called in each worker to make its ``ChunkSink`` (for remote stores
            with its own I/O threads).
        processes: number of workers.

    Fork only where :func:`can_fork` says so.
    """

    def __init__(self, make_sink: Callable[[], Any], processes: int, params: Any) -> None:
        self.make_sink = make_sink
        self.processes = max(1, processes)
        self.params = params
        # a block is BLOCK_MAX bytes plus the longest chunk; four blocks fit in the ring
        self.block_size = BLOCK_MAX
        self.ring_size = max(RING_SIZE, 4 * (BLOCK_MAX + params.longest_chunk))
        self._ring: memoryview | None = None
        self._map: mmap.mmap | None = None
        self._pids: list[int] = []
        self._task_fds: list[int] = []
        self._results: list[_Messages] = []

    def start(self) -> None:
        """Make the ring and fork the workers."""
        self._map = mmap.mmap(-1, self.ring_size)
        self._ring = memoryview(self._map)
        for _ in range(self.processes):
            task_r, task_w = os.pipe()
            result_r, result_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(task_w)
                os.close(result_r)
                for fd in self._task_fds:  # other workers' pipes
                    os.close(fd)
                for messages in self._results:
                    os.close(messages.fd)
                _chunk_worker_main(self.make_sink, self._ring, task_r, result_w)
            os.close(task_r)
            os.close(result_w)
            self._pids.append(pid)
            self._task_fds.append(task_w)
            self._results.append(_Messages(result_r))

    def close(self) -> None:
        """Stop the workers (they end when their task pipe closes) and reap them."""
        for fd in self._task_fds:
            os.close(fd)
        self._task_fds = []
        for messages in self._results:
            os.close(messages.fd)
        self._results = []
        for pid in self._pids:
            _reap(pid)
        self._pids = []
        self._ring = None
        self._map = None

    def run(self, readinto: Callable[[memoryview], int | None]) -> tuple[list[int], bytes,
                                                                         bytes]:
        """Chunk the stream ``readinto`` produces; ``(chunk ends, ids, first bytes)``.

        The first bytes (up to 64) of the stream tell the index which kind of content
        it holds. Errors of the workers (a store that fails) are raised here.
        """
        from desync_core.chunker import fill_from, find_cuts

        ring = self._ring
        assert ring is not None
        params = self.params
        ring_size = self.ring_size
        cap = self.block_size + params.longest_chunk
        ends: list[int] = []
        results: dict[int, bytes] = {}
        ids: list[bytes] = []
        first = b""
        # ring space: virtual positions; what runs in flight use, and what is unread
        inflight: deque[tuple[int, int]] = deque()  # (seq, lowest position) in order
        alloc = 0
        seq = 0
        next_id_seq = 0
        tail_pos, tail_len = 0, 0
        offset = 0  # stream offset of the current block's first byte
        eof = False

        def collect(block: bool) -> None:
            nonlocal next_id_seq
            fds = [m.fd for m in self._results if not m.eof]
            if block and fds:
                select.select(fds, [], [])
            for messages in self._results:
                for tag, value in messages.read():
                    if tag == _ERROR:
                        raise value
                    if tag == _RESULT:
                        results[_LEN.unpack_from(value)[0]] = value[8:]
                if messages.eof and inflight:
                    raise DesyncError("a chunk worker ended unexpectedly")
            while next_id_seq in results:
                ids.append(results.pop(next_id_seq))
                next_id_seq += 1
            while inflight and inflight[0][0] < next_id_seq:
                inflight.popleft()

        def send(run: list[tuple[int, int]], low: int) -> None:
            nonlocal seq
            data = pickle.dumps((seq, run), protocol=pickle.HIGHEST_PROTOCOL)
            fd = self._task_fds[seq % self.processes]
            view = memoryview(_LEN.pack(len(data)) + data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except BrokenPipeError:
                # The worker is gone (a store error ends it): its report says why.
                while not all(m.eof for m in self._results):
                    collect(block=True)
                raise DesyncError("a chunk worker ended unexpectedly") from None
            inflight.append((seq, low))
            seq += 1

        while not eof:
            # a block: the previous tail, then new data, contiguous in the ring
            start = alloc
            pos = start % ring_size
            if pos + cap > ring_size:
                start += ring_size - pos
                pos = 0
            while inflight and start + cap - inflight[0][1] > ring_size:
                collect(block=True)
            collect(block=False)
            alloc = start + cap
            view = ring[pos:pos + cap]
            if tail_len:
                t = tail_pos % ring_size
                view[:tail_len] = ring[t:t + tail_len]
            n, eof = fill_from(readinto, view, tail_len)
            if n == 0:
                break
            if not first:
                first = bytes(view[:64])
            cuts = find_cuts(view, params, eof=eof, length=n).tolist()
            prev = 0
            run: list[tuple[int, int]] = []
            run_bytes = 0
            for cut in cuts:
                run.append((pos + prev, cut - prev))
                run_bytes += cut - prev
                ends.append(offset + cut)
                prev = cut
                if run_bytes >= RUN_BYTES:
                    send(run, start)
                    run, run_bytes = [], 0
            if run:
                send(run, start)
            offset += prev
            tail_pos, tail_len = start + prev, n - prev
        while inflight:
            collect(block=True)
        return ends, b"".join(ids), first


#: ``tar -i`` hands a worker this many bytes of chunks at a time.
RUN_BYTES = 1 << 20


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Wait a little for a child that was told to stop, then kill it."""
    import time

    deadline = time.monotonic() + 5
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() > deadline:
            _kill(pid)
            os.waitpid(pid, 0)
            return
        time.sleep(0.002)


__all__ = ["BLOCK_MAX", "RING_SIZE", "ChunkWorkers", "ForkedWriter", "can_fork"]
