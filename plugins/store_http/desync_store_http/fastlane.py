"""The fast lane: plain-HTTP GETs of local chunk files without a thread per connection.

A thread per keep-alive connection costs little per request in C, but in Python the
threads of a process take turns holding the GIL at every system call of every request,
and with dozens of clients the hand-overs cost more than the requests (#18). So each
plain-HTTP listener of a chunk server whose chunks are local files (see
:func:`~desync_store_http.chunkserver.local_file_resolver`) is served by one
event loop (:mod:`selectors`) that answers the requests it fully understands —
``GET``/``HEAD`` over HTTP/1.1 of an existing chunk file, no body, authorized — with the
headers and ``sendfile``, and nothing else.

Everything else (another method, a body, a missing chunk, a refused authorization,
anything malformed or unusual) is handed, with the bytes already read, to the thread
handler that serves the connection from then on: every status, limit, log line and
metric stays exactly as the threaded server defines it. TLS listeners are never in the
fast lane.

With pre-forked workers every worker's lane watches the same listening socket, and the
one that happens to be running takes the connections that arrive: a client opening its
``-n`` connections at once (desync (Go) does) had them all in one process, served on one
core while the others idled (#18). So workers share a :class:`ConnectionBoard` of how
many connections each lane holds, and a lane leaves a new connection to a less loaded
worker for at most :data:`MAX_DEFER` seconds.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import mmap
import os
import selectors
import socket
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

from desync_store_http.protocol import MAX_HEADERS, MAX_LINE, http_date

if TYPE_CHECKING:
    from desync_store_http.listeners import ThreadedServer

#: How often the loop looks for idle connections (seconds); it checks for a stop request
#: every ``poll_interval``.
SWEEP_INTERVAL = 0.5
#: Connections one wake-up accepts when no other worker shares the listener.
ACCEPT_BATCH = 64
#: How long a lane leaves a new connection to a less loaded worker (seconds), and how
#: often it looks again meanwhile; after that it accepts it anyway (a worker that died
#: with a low count must not stall the listener).
MAX_DEFER = 0.02
DEFER_STEP = 0.001


class ConnectionBoard:
    """Connections held by each worker's lane on each listener, in memory shared by the
    processes (created before the fork; see :mod:`desync_store_http.workers`).

    Args:
        workers: number of worker processes.
        listeners: number of listeners of each worker.
    """

    def __init__(self, workers: int, listeners: int) -> None:
        self.workers = workers
        self.listeners = listeners
        self._mem = mmap.mmap(-1, 8 * max(1, workers * listeners))
        self._counts = memoryview(self._mem).cast("q")

    def set(self, worker: int, listener: int, count: int) -> None:
        """Record the connections ``worker``'s lane holds on ``listener``."""
        self._counts[worker * self.listeners + listener] = count

    def get(self, worker: int, listener: int) -> int:
        """The connections ``worker``'s lane holds on ``listener``."""
        return int(self._counts[worker * self.listeners + listener])

    def clear(self, worker: int) -> None:
        """Forget a worker that exited (its replacement starts from zero)."""
        for listener in range(self.listeners):
            self.set(worker, listener, 0)

    def least(self, listener: int) -> int:
        """The fewest connections any worker holds on ``listener``."""
        return min(self.get(w, listener) for w in range(self.workers))


class BoardSeat:
    """Where one lane writes its count on a :class:`ConnectionBoard`."""

    __slots__ = ("board", "listener", "worker")

    def __init__(self, board: ConnectionBoard, worker: int, listener: int) -> None:
        self.board = board
        self.worker = worker
        self.listener = listener

    def set(self, count: int) -> None:
        """Record this lane's connection count."""
        self.board.set(self.worker, self.listener, count)

    def busier(self, count: int) -> bool:
        """Whether another worker holds fewer connections on this listener."""
        return count > self.board.least(self.listener)


class _Conn:
    """One connection in the fast lane."""

    __slots__ = ("addr", "buf", "busy", "close_after", "fd", "head", "last", "offset",
                 "size", "sock", "started", "writing")

    def __init__(self, sock: socket.socket, addr: Any) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.last = time.monotonic()
        self.started = 0.0  # when the pending request began (header timeout)
        self.busy = False  # a reply is being sent (head, then the file)
        self.head = b""  # what is left to send of the reply's headers
        self.fd = -1  # the file being sent
        self.offset = 0
        self.size = 0
        self.writing = False  # registered for EVENT_WRITE (the socket was full)
        self.close_after = False


class PrefixedReader(io.RawIOBase):
    """A socket's reads, after bytes the fast lane already took from it."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        self._prefix = memoryview(prefix)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._sock.recv_into(buffer)


class FastLane:
    """The event loop of one plain-HTTP listener (see the module doc).

    Args:
        server: the listener; its handler class answers what the lane hands over.
        resolve: ``(app, request target) -> file path`` of a chunk the lane may send,
            else None.
        seat: this lane's place on the workers' :class:`ConnectionBoard` (None: no
            other process accepts from this listener).
    """

    def __init__(self, server: ThreadedServer, resolve: Any, *,
                 poll_interval: float = SWEEP_INTERVAL, seat: BoardSeat | None = None) -> None:
        self.server = server
        self.resolve = resolve
        self.poll_interval = min(poll_interval, SWEEP_INTERVAL)
        self.seat = seat
        #: Connections this lane holds (handed-over ones are the thread handler's).
        self.held = 0
        #: Connections accepted since the start (for tests and diagnosis).
        self.accepted = 0
        self._deferred_since = 0.0  # when a waiting connection was first left to others
        self._paused_until = 0.0  # the listener is unwatched until then (0: watched)
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()

    def stop(self) -> None:
        """Ask the loop to end (it closes the connections it still holds)."""
        self._stop.set()

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        sel = self._sel
        listener = self.server.socket
        sel.register(listener, selectors.EVENT_READ, None)
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stop.is_set():
                timeout = self.poll_interval
                if self._paused_until:
                    timeout = max(0.0, min(timeout, self._paused_until - time.monotonic()))
                listened = False
                for key, mask in sel.select(timeout):
                    if key.data is None:
                        listened = True
                        self._accept(listener)
                        continue
                    conn: _Conn = key.data
                    try:
                        if mask & selectors.EVENT_WRITE:
                            self._resume(conn)
                        elif mask & selectors.EVENT_READ:
                            self._readable(conn)
                    except OSError:
                        self._close(conn)
                now = time.monotonic()
                if self._paused_until:
                    if now >= self._paused_until:
                        self._paused_until = 0.0
                        sel.register(listener, selectors.EVENT_READ, None)
                elif not listened:
                    self._deferred_since = 0.0  # nothing waits (another worker took it)
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_INTERVAL
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    self._close(key.data)
            sel.close()

    # -- connections --------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        seat = self.seat
        if seat is not None and seat.busier(self.held):
            # Leave it to a less loaded worker (they all wake for it), unless it waits
            # too long: then this lane takes it after all.
            now = time.monotonic()
            if not self._deferred_since:
                self._deferred_since = now
            if now - self._deferred_since < MAX_DEFER:
                self._sel.unregister(listener)
                self._paused_until = now + DEFER_STEP
                return
        self._deferred_since = 0.0
        # With other workers on the listener, one connection per wake-up: the next one
        # goes to whichever lane is then least loaded.
        for _ in range(ACCEPT_BATCH if seat is None else 1):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sel.register(sock, selectors.EVENT_READ, _Conn(sock, addr))
            self.accepted += 1
            self._count(1)

    def _count(self, change: int) -> None:
        self.held += change
        if self.seat is not None:
            self.seat.set(self.held)

    def _close(self, conn: _Conn) -> None:
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass  # already handed over or closed: not counted any more
        else:
            self._count(-1)
        self._end_file(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _sweep(self, now: float) -> None:
        from desync_store_http.listeners import HEADER_TIMEOUT, IDLE_TIMEOUT

        for key in list(self._sel.get_map().values()):
            conn = key.data
            if conn is None:
                continue
            if not conn.busy and conn.buf and now - conn.started > HEADER_TIMEOUT:
                self._close(conn)  # a request that does not finish arriving
            elif now - conn.last > IDLE_TIMEOUT:
                self._close(conn)  # idle, or a client that stopped reading

    def _hand_over(self, conn: _Conn) -> None:
        """Give the connection (and what was read of it) to the thread handler."""
        self._sel.unregister(conn.sock)
        self._count(-1)
        conn.sock.setblocking(True)
        self.server.prefixes[id(conn.sock)] = bytes(conn.buf)
        try:
            self.server.process_request(conn.sock, conn.addr)
        except Exception:
            self.server.prefixes.pop(id(conn.sock), None)
            with contextlib.suppress(OSError):
                conn.sock.close()

    # -- requests -----------------------------------------------------------------------

    def _readable(self, conn: _Conn) -> None:
        data = conn.sock.recv(65536)
        if not data:
            self._close(conn)
            return
        if not conn.buf:
            conn.started = time.monotonic()
        conn.buf += data
        conn.last = time.monotonic()
        self._requests(conn)

    def _requests(self, conn: _Conn) -> None:
        """Answer the complete requests in the buffer while they are simple."""
        while not conn.busy:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buf) > MAX_LINE or not _plain_start(conn.buf):
                    # Not a request the lane could answer once complete (HTTP/0.9, bare
                    # LF line ends, overlong lines…): the thread handler answers now.
                    self._hand_over(conn)
                return
            if not self._answer(conn, bytes(conn.buf[:end])):
                self._hand_over(conn)
                return
            del conn.buf[:end + 4]
            conn.started = time.monotonic()
            if not conn.busy and conn.close_after:
                self._close(conn)
                return

    def _answer(self, conn: _Conn, head: bytes) -> bool:
        """Answer one request from its head; False (nothing sent) to hand it over."""
        lines = head.split(b"\r\n")
        words = lines[0].split(b" ")
        if (len(words) != 3 or words[2] != b"HTTP/1.1" or words[0] not in (b"GET", b"HEAD")
                or len(lines) > MAX_HEADERS or max(map(len, lines)) > MAX_LINE):
            return False
        auth: bytes | None = None
        close = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                return False
            key = name.lower()
            if key == b"authorization":
                if auth is None:  # the first one counts, as in the thread handler
                    auth = value.strip()
            elif key == b"connection":
                close = value.strip().lower() == b"close"
            elif key in (b"content-length", b"transfer-encoding", b"expect") and (
                    key != b"content-length" or value.strip() != b"0"):
                return False  # a body: the thread handler reads (or refuses) it
        settings = self.server.settings
        expected = settings.authorization
        if expected and not hmac.compare_digest(
                auth or b"", expected.encode("utf-8", "surrogateescape")):
            return False
        target = words[1].decode("iso-8859-1")
        metrics = settings.metrics
        if metrics is not None and target.partition("?")[0] == "/metrics":
            return False
        opened = open_regular(self.resolve(self.server.app, target))
        if opened is None:
            return False
        method = words[0].decode()
        fd, size = opened
        reply = (f"HTTP/1.1 200 OK\r\nServer: {conn_server(self.server)}\r\n"
                 f"Date: {http_date()}\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {size}\r\n"
                 + ("Connection: close\r\n" if close else "") + "\r\n").encode("latin-1")
        if metrics is not None:
            metrics.count_request(method, 200)
            if method == "GET":
                metrics.sent(size)
        if settings.log is not None:
            from desync_store_http.settings import client_text

            settings.log.write(client_text(conn.addr), method, target, 200)
        conn.close_after = close
        conn.busy = True
        conn.head = reply
        if method == "HEAD":
            os.close(fd)
        else:
            conn.fd, conn.offset, conn.size = fd, 0, size
        self._continue_file(conn)  # the rest, if any, when the socket has room
        return True

    def _continue_file(self, conn: _Conn) -> bool:
        """Send more of the file; True when it is all sent, False when the socket is
        full (the loop then waits until it can write)."""
        while conn.head:
            try:
                n = conn.sock.send(conn.head, socket.MSG_MORE if conn.fd >= 0 else 0)
            except BlockingIOError:
                self._wait_writable(conn)
                return False
            conn.head = conn.head[n:]
        out = conn.sock.fileno()
        while conn.fd >= 0 and conn.offset < conn.size:
            try:
                n = os.sendfile(out, conn.fd, conn.offset, conn.size - conn.offset)
            except BlockingIOError:
                self._wait_writable(conn)
                return False
            if n == 0:
                raise ConnectionError("chunk file ended early")
            conn.offset += n
            conn.last = time.monotonic()
        self._end_file(conn)
        conn.busy = False
        if conn.writing:
            conn.writing = False
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
        return True

    def _wait_writable(self, conn: _Conn) -> None:
        if not conn.writing:
            conn.writing = True
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _resume(self, conn: _Conn) -> None:
        """The socket has room again: finish the file, then the buffered requests."""
        if not self._continue_file(conn):
            return
        if conn.close_after:
            self._close(conn)
        elif conn.buf:
            self._requests(conn)

    @staticmethod
    def _end_file(conn: _Conn) -> None:
        if conn.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(conn.fd)
            conn.fd = -1


def open_regular(path: str | None) -> tuple[int, int] | None:
    """Open a chunk file for sending: its descriptor and size, or None (nothing left
    open) when there is no path, or the file is missing, unreadable or not regular.

    Files are replaced by rename, never rewritten: the descriptor's content stays whole
    whatever happens to the name meanwhile.
    """
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info.st_size


def _plain_start(buf: bytearray) -> bool:
    """Whether an incomplete request head looks like one the lane answers: CRLF line
    ends only and, once the request line is complete, ``<method> <target> HTTP/1.1``."""
    if buf.count(b"\n") != buf.count(b"\r\n"):
        return False
    nl = buf.find(b"\r\n")
    if nl < 0:
        return True
    words = bytes(buf[:nl]).split(b" ")
    return len(words) == 3 and words[2] == b"HTTP/1.1"


def conn_server(server: ThreadedServer) -> str:
    """The ``Server`` header value of a listener's handler."""
    return str(getattr(server.RequestHandlerClass, "server_version", ""))


__all__ = ["ACCEPT_BATCH", "DEFER_STEP", "MAX_DEFER", "SWEEP_INTERVAL", "BoardSeat",
           "ConnectionBoard", "FastLane", "PrefixedReader", "open_regular"]
