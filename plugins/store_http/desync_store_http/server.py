"""The HTTP(S) server under ``chunk-server`` and ``index-server``.

A stdlib :class:`http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive (one
thread per connection, explicit ``Content-Length`` everywhere, ``TCP_NODELAY``), with
the stdlib's slow parts replaced (:mod:`desync_store_http.protocol`). Around it:
pre-forked worker processes (:mod:`desync_store_http.workers`) and, for plain-HTTP GETs
of local chunk files, an event loop that answers with ``sendfile``
(:mod:`desync_store_http.fastlane`): together 95 % of nginx's GET throughput here
(``benchmarks/bench_chunk_server.py``), with no server dependency.

This module holds what both servers share:

* Go-style listen addresses (``host:port``, ``:8080``, ``127.0.0.1:http``) and several
  listeners per process (:class:`ServerGroup`);
* TLS and mutual TLS (the handshake runs in the connection's thread, so a slow client
  cannot stall the accept loop);
* the ``Authorization`` check (constant-time), the request log, request bodies
  (``Content-Length`` or chunked, with a size limit) and error replies;
* :func:`serve_until_stopped`: blocks SIGINT/SIGTERM/SIGHUP in every thread and handles
  them synchronously with ``sigwait`` (no work ever runs in a signal handler).
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import io
import os
import select
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from desync_core.plugin_api import UsageError
from desync_store_http import __version__
from desync_store_http.protocol import HeaderError, http_date, read_headers

if TYPE_CHECKING:
    from desync_store_http.metrics import Metrics

#: Idle keep-alive connections are closed after this long (desync: 120 s).
IDLE_TIMEOUT = 120.0
#: Request headers (after the request line) and TLS handshakes must arrive within this.
HEADER_TIMEOUT = 30.0
#: Pending connections the kernel queues while all threads are busy accepting.
BACKLOG = 256
#: Memory all uploads being received, checked and stored may hold at once (bodies and
#: any decoded copy). An upload waits for room, at most UPLOAD_QUEUE_TIMEOUT, then 503.
UPLOAD_MEMORY_BUDGET = 256 * 1024 * 1024
#: Uploads handled at the same time, whatever their size (others queue, as above).
MAX_CONCURRENT_UPLOADS = 16
#: How long an upload waits for room in the budget before the server answers 503.
UPLOAD_QUEUE_TIMEOUT = 30.0
#: Serve plain-HTTP GETs of local chunk files in an event loop (``fastlane.py``);
#: ``DESYNC_SERVER_FAST_LANE=0`` turns it off (every connection gets a thread).
FAST_LANE = os.environ.get("DESYNC_SERVER_FAST_LANE", "1") != "0"


def parse_listen_address(text: str) -> tuple[str, int]:
    """Split a Go listen address into host and port.

    ``":8080"`` → ``("", 8080)`` (all interfaces), ``"127.0.0.1:0"`` (any free port),
    ``"[::1]:http"`` → ``("::1", 80)``; service names resolve through ``/etc/services``.

    Raises:
        UsageError: no port, or an unknown service name.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        raise UsageError(f"invalid listen address {text!r}: missing port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if port.isdigit():
        number = int(port)
    else:
        try:
            number = socket.getservbyname(port, "tcp")
        except OSError:
            raise UsageError(f"invalid listen address {text!r}: unknown port {port!r}") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"invalid listen address {text!r}: port out of range")
    return host, number


def server_ssl_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """A server TLS context; with ``client_ca`` clients must present a certificate it signed.

    Raises:
        UsageError: a certificate or key cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"loading --cert {cert} / --key {key}: {_ssl_text(exc)}") from None
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"loading --client-ca {client_ca}: {_ssl_text(exc)}") from None
    return ctx


def _ssl_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class RequestLog:
    """The ``--log`` request log: one Go-format line per request (``remote.md`` §2).

    Args:
        target: a file (appended to) or ``-`` for stderr.
    """

    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self._own = target != "-"
        try:
            self._out: TextIO = (open(target, "a", encoding="utf-8") if self._own  # noqa: SIM115
                                 else sys.stderr)
        except OSError as exc:
            raise UsageError(f"--log {target}: {exc.strerror}") from None

    def write(self, client: str, method: str, uri: str, status: int) -> None:
        """Log one request."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        line = f"{stamp} Client: {client}, Request: {method} {uri}, Response: {status}\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def close(self) -> None:
        """Close the log file (not stderr)."""
        if self._own:
            self._out.close()


class UploadGate:
    """Bounds the memory and number of uploads handled at once (a byte semaphore).

    A request reserves the bytes it will hold (its body, later any decoded copy) and
    waits while they do not fit; a reservation larger than the whole budget waits for
    the budget to be empty and then runs alone, so every valid upload gets through.

    Args:
        budget: bytes all reservations may add up to.
        slots: reservations (uploads) at the same time.
        wait: seconds a reservation waits for room before giving up.
    """

    def __init__(self, budget: int = UPLOAD_MEMORY_BUDGET, slots: int = MAX_CONCURRENT_UPLOADS,
                 wait: float = UPLOAD_QUEUE_TIMEOUT) -> None:
        self.budget = budget
        self.slots = slots
        self.wait = wait
        self._cond = threading.Condition()
        self.in_use = 0
        self.active = 0

    def _fits(self, nbytes: int, new_slot: bool) -> bool:
        if new_slot and self.active >= self.slots:
            return False
        return self.in_use + min(nbytes, self.budget) <= self.budget

    def acquire(self, nbytes: int, *, new_slot: bool = True) -> bool:
        """Reserve ``nbytes`` (and a slot); False if no room came within ``wait``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(nbytes, new_slot), self.wait):
                return False
            self.in_use += min(nbytes, self.budget)
            self.active += new_slot
            return True

    def release(self, nbytes: int, *, slot: bool = True) -> None:
        """Give back a reservation made with :meth:`acquire`."""
        with self._cond:
            self.in_use -= min(nbytes, self.budget)
            self.active -= slot
            self._cond.notify_all()


class Upload:
    """The body of one upload and its reservation in the :class:`UploadGate`."""

    def __init__(self, handler: RequestHandler, gate: UploadGate, reserved: int) -> None:
        self.handler = handler
        self.gate = gate
        self.reserved = reserved
        self.extra = 0
        self.body = b""

    def reserve_more(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more (a decoded copy about to be made).

        Raises:
            BodyError: no room in time (503 sent).
        """
        if not self.gate.acquire(nbytes, new_slot=False):
            self.handler.reply_busy()
            raise BodyError
        self.extra += nbytes

    def release(self) -> None:
        """Give the reservation back."""
        self.gate.release(self.extra, slot=False)
        self.gate.release(self.reserved)
        self.extra = self.reserved = 0


@dataclass
class ServerSettings:
    """What every handler of one server needs besides its own state.

    Attributes:
        authorization: required ``Authorization`` header value; empty means none.
        log: the request log, if any.
        errors: where internal errors and TLS failures are reported.
        uploads: bounds the memory and number of uploads handled at once.
        metrics: ``--metrics``: counted requests and ``GET /metrics``; None for none.
    """

    authorization: str = ""
    log: RequestLog | None = None
    metrics: Metrics | None = None
    errors: TextIO = field(default_factory=lambda: sys.stderr)
    uploads: UploadGate = field(default_factory=UploadGate)
    _errors_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, message: str) -> None:
        """Print one line on the error stream."""
        with self._errors_lock:
            self.errors.write(message.rstrip("\n") + "\n")
            self.errors.flush()


class BodyError(Exception):
    """A request body could not be read; the reply has been sent already."""


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Common request handling: authorization, replies, bodies, logging.

    Every method (GET, PUT, anything) reaches :meth:`dispatch` after the authorization
    check, so unknown methods get desync's 405 rather than the stdlib's 501. Subclasses
    implement :meth:`parse_target` (the path to a key, or an error reply) and the
    ``on_get``/``on_head``/``on_put`` handlers that take that key.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"desync/{__version__}"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    _scrape = False  # this request is a /metrics scrape (see _handle)
    disable_nagle_algorithm = True
    server: ThreadedServer

    def version_string(self) -> str:
        return self.server_version

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD>; route every method to one place.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    @property
    def settings(self) -> ServerSettings:
        """The server's shared settings."""
        return self.server.settings

    @property
    def app(self) -> Any:
        """The application object (chunk or index server state)."""
        return self.server.app

    def parse_target(self) -> Any:
        """The key the request path names; reply 4xx and return None if it is invalid."""
        raise NotImplementedError

    def dispatch(self) -> None:
        """Route an authorized request to ``on_get``/``on_head``/``on_put``."""
        handler = {"GET": "on_get", "HEAD": "on_head", "PUT": "on_put"}.get(self.command)
        key = self.parse_target()
        if key is None:
            return
        if handler is None:
            self.reply(405, b"only GET, PUT and HEAD are supported\n")
            return
        getattr(self, handler)(key)

    def setup(self) -> None:
        super().setup()
        prefix = self.server.prefixes.pop(id(self.connection), None)
        if prefix is not None:  # handed over by the fast lane with what it had read
            from desync_store_http.fastlane import PrefixedReader

            self.rfile = io.BufferedReader(PrefixedReader(prefix, self.connection))

    def handle_one_request(self) -> None:
        # The stdlib's, minus what costs time on every request and serves nothing here:
        # the do_<METHOD> lookups (every method goes to _handle) and flushing an
        # unbuffered writer.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if self.parse_request():
                self._handle()
        except TimeoutError:
            self.close_connection = True

    def parse_request(self) -> bool:
        # The stdlib's parse_request, with the header parser of protocol.py (the
        # stdlib's email parser is a large part of a small GET's cost) and HTTP/0.9
        # refused at once (the stdlib would wait for headers such a client never sends,
        # then answer without a status line). The request line may take the idle
        # timeout (keep-alive); headers get less.
        self.command = None  # type: ignore[assignment]
        self._scrape = False
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) == 2:
            self.request_version = ""
            self.send_error(400, "HTTP/0.9 requests are not supported")
            return False
        if len(words) >= 3:
            version = words[-1]
            number = _http_version(version)
            if number is None:
                self.send_error(400, f"Bad request version ({version[:40]!r})")
                return False
            if number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version[5:45]})")
                return False
            self.close_connection = number < (1, 1)
            self.request_version = version
        if len(words) != 3:
            self.send_error(400, f"Bad request syntax ({requestline[:80]!r})")
            return False
        self.command, self.path = words[0], words[1]
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        self.connection.settimeout(HEADER_TIMEOUT)
        try:
            self.headers = read_headers(self.rfile)  # type: ignore[assignment]
        except HeaderError as exc:
            self.send_error(exc.status, str(exc))
            return False
        finally:
            self.connection.settimeout(self.timeout)
        conntype = (self.headers.get("Connection") or "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive":
            self.close_connection = False
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return bool(self.handle_expect_100())
        return True

    def date_time_string(self, timestamp: float | None = None) -> str:
        return http_date() if timestamp is None else super().date_time_string(timestamp)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Protocol errors the stdlib parser finds (a bad request line, an overlong URL,
        an unknown HTTP version, bad headers): a complete ``HTTP/1.1`` reply, never the
        stdlib's status-less HTML page for requests it could not read as HTTP/1.x."""
        if self.request_version in ("HTTP/0.9", ""):
            self.request_version = self.protocol_version
        self.close_connection = True
        self._replied = True
        phrase = self.responses.get(code, ("error", ""))[0]
        text = phrase if not message else f"{phrase}: {message[:200]}"
        body = f"{text}\n".encode("utf-8", "replace")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def reply_busy(self) -> None:
        """503: the upload budget stayed full (the client retries later)."""
        self._replied = True
        body = b"server busy with other uploads, retry later\n"
        self.send_response(503)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if not self._body_read and self._has_body():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    @contextlib.contextmanager
    def upload(self, limit: int) -> Iterator[Upload]:
        """Receive an upload body of at most ``limit`` bytes within the upload budget.

        Content-Encoding other than identity is refused (415): stores hold chunks in
        their own encoding, and a gzip or xz body could inflate without bound. The body
        is read only once its bytes are reserved in :attr:`ServerSettings.uploads`
        (``413`` beyond ``limit``, ``503`` when the budget stays full); the reservation
        lasts until the block ends.

        Raises:
            BodyError: refused (the reply is sent).
        """
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            self.reply(415, f"unsupported Content-Encoding {encoding!r}: send the chunk "
                       "as the store encodes it\n".encode())
            raise BodyError
        raw_length = self.headers.get("Content-Length")
        chunked = bool(self.headers.get("Transfer-Encoding", "").strip())
        need = limit
        if not chunked and raw_length is not None and raw_length.strip().isdigit():
            need = int(raw_length.strip())
            if need > limit:
                self.reply(413, f"request body too large (limit {limit} bytes)\n".encode())
                raise BodyError
        gate = self.settings.uploads
        if not gate.acquire(need):
            self.reply_busy()
            raise BodyError
        upload = Upload(self, gate, need)
        try:
            upload.body = self.read_body(limit)
            yield upload
        finally:
            upload.release()

    # -- request flow -------------------------------------------------------------------

    def _handle(self) -> None:
        self._replied = False
        self._body_read = False
        metrics = self.settings.metrics
        # Authorized scrapes are neither counted nor in flight: the metrics show the
        # clients' traffic (refused scrapes are counted, as 401s).
        scrape = (metrics is not None and self.command in ("GET", "HEAD")
                  and self.path.partition("?")[0] == "/metrics")
        try:
            if metrics is None or scrape:
                self._serve(scrape)
            else:
                with metrics.handling():
                    self._serve(scrape)
        except BodyError:
            pass
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            self.settings.report(f"internal error serving {self.command} {self.path}:\n"
                                 + traceback.format_exc())
            if not self._replied:
                self.reply(500, b"internal server error\n")
            else:
                self.close_connection = True

    def _serve(self, scrape: bool) -> None:
        if not self._authorized():
            self.reply(401, b"Unauthorized\n")
            return
        if scrape:
            assert self.settings.metrics is not None
            self._scrape = True
            body, content_type = self.settings.metrics.exposition()
            self.reply(200, body, content_type=content_type)
            return
        self.dispatch()

    def _authorized(self) -> bool:
        expected = self.settings.authorization
        if not expected:
            return True
        # Header values arrive decoded as latin-1; compare the bytes the client sent.
        got = self.headers.get("Authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(got, expected.encode("utf-8", "surrogateescape"))

    def _has_body(self) -> bool:
        te = self.headers.get("Transfer-Encoding", "")
        length = self.headers.get("Content-Length", "0").strip()
        return bool(te) or length not in ("", "0")

    def reply(self, status: int, body: bytes | bytearray | memoryview = b"", *,
              content_type: str = "text/plain; charset=utf-8") -> None:
        """Send a complete response with ``Content-Length`` (no body for HEAD).

        A request body that was not read makes the connection close afterwards, so its
        bytes are never taken for the next request. Status line, headers and body leave
        in one system call where the socket allows it.
        """
        head = self._head(status, content_type, len(body))
        if body and self.command != "HEAD":
            self._count_sent(len(body))  # before: the client may scrape right after
            self._send_parts(head, body)
        else:
            self.wfile.write(head)

    def reply_file(self, fd: int, size: int, *,
                   content_type: str = "application/octet-stream") -> None:
        """Send ``size`` bytes of the open file ``fd`` as a 200 reply: with
        ``sendfile`` on plain connections (the kernel copies, no Python buffers), read
        and written through TLS otherwise."""
        head = self._head(200, content_type, size)
        if self.command == "HEAD":
            self.wfile.write(head)
            return
        conn = self.connection
        self._count_sent(size)
        if isinstance(conn, ssl.SSLSocket):
            self._send_parts(head, os.pread(fd, size, 0))
        else:
            # MSG_MORE: the headers wait for the file's first bytes (one segment).
            conn.sendall(head, socket.MSG_MORE)
            _sendfile(conn, fd, size, self.timeout)

    def _head(self, status: int, content_type: str, length: int) -> bytes:
        """Status line and headers of a reply; logs and counts it."""
        self._replied = True
        self.log_request(status, length)
        close = not self._body_read and self._has_body()
        if close:
            self.close_connection = True
        phrase = self.responses.get(status, ("",))[0]
        head = (f"{self.protocol_version} {status} {phrase}\r\n"
                f"Server: {self.server_version}\r\nDate: {http_date()}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n")
        if close:
            head += "Connection: close\r\n"
        elif self.request_version == "HTTP/1.0" and not self.close_connection:
            head += "Connection: keep-alive\r\n"  # HTTP/1.0 clients close otherwise
        return (head + "\r\n").encode("latin-1")

    def _send_parts(self, head: bytes, body: bytes | bytearray | memoryview) -> None:
        conn = self.connection
        if len(body) <= 16384:
            self.wfile.write(head + bytes(body))
            return
        if isinstance(conn, ssl.SSLSocket):
            self.wfile.write(head)
            self.wfile.write(body)
            return
        # One sendmsg for headers and a large body: no copy into a joined buffer.
        parts = [memoryview(head), memoryview(body).cast("B")]
        while parts:
            try:
                sent = conn.sendmsg(parts)
            except BlockingIOError:  # the socket has a timeout, so it is non-blocking
                if not _wait_writable(conn, self.timeout):
                    raise TimeoutError("timed out sending a reply") from None
                continue
            while parts and sent >= len(parts[0]):
                sent -= len(parts[0])
                parts.pop(0)
            if parts and sent:
                parts[0] = parts[0][sent:]

    def _count_sent(self, nbytes: int) -> None:
        metrics = self.settings.metrics
        if metrics is not None and not self._scrape:
            metrics.sent(nbytes)

    def read_body(self, limit: int) -> bytes:
        """The request body (``Content-Length`` or chunked), at most ``limit`` bytes.

        Raises:
            BodyError: the body is missing, malformed or too large (already answered).
            ConnectionError: the client went away in the middle.
        """
        te = self.headers.get("Transfer-Encoding", "").strip().lower()
        if te:
            if te != "chunked":
                self.reply(501, f"unsupported transfer encoding {te!r}\n".encode())
                raise BodyError
            data = self._read_chunked(limit)
        else:
            raw = self.headers.get("Content-Length")
            if raw is None:
                self.reply(411, b"Content-Length required\n")
                raise BodyError
            if not raw.strip().isdigit():
                self.reply(400, b"invalid Content-Length\n")
                raise BodyError
            length = int(raw.strip())
            if length > limit:
                self.reply(413, f"request body too large (limit {limit} bytes)\n".encode())
                raise BodyError
            data = self.rfile.read(length)
            if len(data) != length:
                raise ConnectionError("client closed the connection during the body")
        self._body_read = True
        if self.settings.metrics is not None:
            self.settings.metrics.received(len(data))
        return data

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                size = -1
            if size < 0 or not size_text.isalnum():
                self.reply(400, b"malformed chunked body\n")
                raise BodyError
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return b"".join(parts)
            total += size
            if total > limit:
                self.reply(413, f"request body too large (limit {limit} bytes)\n".encode())
                raise BodyError
            part = self.rfile.read(size)
            if len(part) != size:
                raise ConnectionError("client closed the connection during the body")
            parts.append(part)
            self.rfile.readline(16)

    # -- logging --------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        metrics = self.settings.metrics
        if metrics is not None and not self._scrape:
            metrics.count_request(getattr(self, "command", "") or "-",
                                  int(code) if isinstance(code, int) else 0)
        log = self.settings.log
        if log is not None:
            # Called for replies to requests the stdlib could not parse too: the method
            # and path may be unset or empty then.
            client = client_text(self.client_address)
            path = getattr(self, "path", "") or "-"
            if len(path) > 1024:
                path = path[:1024] + "..."
            log.write(client, getattr(self, "command", "") or "-", path,
                      int(code) if isinstance(code, int) else 0)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib logs every request and protocol error to stderr; the request log
        # (log_request) and settings.report cover what users need.
        pass


class ThreadedServer(http.server.ThreadingHTTPServer):
    """One listening socket; a thread per connection; optional TLS.

    Args:
        address: ``(host, port)``; host ``""`` listens on every interface.
        handler: the request handler class.
        app: the application object handlers reach as ``self.app``.
        settings: authorization, request log, error stream.
        ssl_context: a server TLS context, or None for plain HTTP.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], handler: type[RequestHandler], app: Any,
                 settings: ServerSettings, ssl_context: ssl.SSLContext | None) -> None:
        self.app = app
        #: Bytes the fast lane read from connections it handed over (by ``id``).
        self.prefixes: dict[int, bytes] = {}
        self.settings = settings
        self.ssl_context = ssl_context
        host = address[0]
        self._dual_stack = host == "" and socket.has_dualstack_ipv6()
        self.address_family = (socket.AF_INET6 if ":" in host or self._dual_stack
                               else socket.AF_INET)
        if host == "" and not self._dual_stack:
            address = ("0.0.0.0", address[1])
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self._dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would resolve our own name (getfqdn): slow and unused.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of this listener (the real port when 0 was asked)."""
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{shown}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HEADER_TIMEOUT)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True,
                                                do_handshake_on_connect=False)
        except OSError:
            return
        try:
            conn.do_handshake()
        except OSError as exc:  # includes ssl.SSLError
            self.settings.report(f"TLS handshake error from {client_address[0]}:"
                                 f"{client_address[1]}: {_ssl_text(exc)}")
            _close_gently(conn)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]  # typeshed types the server argument as the base class's Self
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | ssl.SSLError):
            return  # the client went away or broke TLS; nothing to do
        self.settings.report(f"error serving {client_address}:\n{traceback.format_exc()}")


def client_text(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a client address, for the log."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _http_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of ``HTTP/x.y``, else None."""
    if not text.startswith("HTTP/"):
        return None
    major, dot, minor = text[5:].partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _wait_writable(conn: socket.socket, timeout: float | None) -> bool:
    """Wait until ``conn`` can take more bytes; False after ``timeout`` seconds."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLOUT)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


def _sendfile(conn: socket.socket, fd: int, size: int, timeout: float | None) -> None:
    """Send ``size`` bytes of file ``fd`` from offset 0 with ``os.sendfile``.

    Raises:
        ConnectionError: the file ended early or the client went away.
        TimeoutError: the client did not read for ``timeout`` seconds.
    """
    out = conn.fileno()
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(out, fd, offset, size - offset)
        except BlockingIOError:
            if not _wait_writable(conn, timeout):
                raise TimeoutError("timed out sending a file") from None
            continue
        if sent == 0:
            raise ConnectionError("file ended before its size while sending it")
        offset += sent


def _close_gently(conn: ssl.SSLSocket) -> None:
    """Close a connection whose TLS handshake failed so that the client reads the alert.

    With TLS 1.3 a client learns that its certificate was refused only after it has sent
    its request. Closing a socket with that request unread makes the kernel send a reset,
    which can overtake the alert ("EOF occurred in violation of protocol" instead of
    "certificate required"); half-closing and draining first avoids that.
    """
    raw = socket.socket(fileno=conn.detach())
    try:
        raw.settimeout(1.0)
        raw.shutdown(socket.SHUT_WR)
        while raw.recv(65536):
            pass
    except OSError:
        pass
    finally:
        raw.close()


class ServerGroup:
    """Listeners on several addresses serving one application.

    Args:
        addresses: Go listen addresses (``-l``), all served the same way.
        handler: the request handler class.
        app: the application object.
        settings: authorization, request log, error stream.
        ssl_context: TLS for every listener, or None.
        poll_interval: how often the accept loops check for :meth:`stop` (seconds).
    """

    def __init__(self, addresses: list[str], handler: type[RequestHandler], app: Any,
                 settings: ServerSettings, ssl_context: ssl.SSLContext | None = None, *,
                 poll_interval: float = 0.1) -> None:
        self.poll_interval = poll_interval
        self.addresses = [parse_listen_address(a) for a in addresses]
        self.raw_addresses = addresses
        self.handler = handler
        self.app = app
        self.settings = settings
        self.ssl_context = ssl_context
        self.servers: list[ThreadedServer] = []
        self._threads: list[threading.Thread] = []
        self._lanes: dict[int, Any] = {}

    def bind(self) -> list[str]:
        """Bind and listen on every address (no request is served yet); returns the
        listener URLs. Pre-forked workers (:mod:`desync_store_http.workers`) inherit
        the bound sockets and :meth:`start` serving in each process.

        Raises:
            UsageError: an address cannot be bound (in use, no permission…); nothing is
                left listening in that case.
        """
        if self.servers:
            return self.urls
        try:
            for raw, address in zip(self.raw_addresses, self.addresses):
                try:
                    server = ThreadedServer(address, self.handler, self.app, self.settings,
                                            self.ssl_context)
                except OSError as exc:
                    raise UsageError(f"listen tcp {raw}: {exc.strerror or exc}") from None
                # Non-blocking accept: with pre-forked workers sharing the socket, every
                # worker wakes for a connection and all but one find nothing to accept
                # (socketserver then just polls again instead of blocking in accept,
                # where shutdown() could not reach it).
                server.socket.setblocking(False)
                self.servers.append(server)
        except BaseException:
            self.stop()
            raise
        return self.urls

    def set_app(self, app: Any) -> None:
        """Serve ``app`` (a worker's own application object) on every listener."""
        self.app = app
        for server in self.servers:
            server.app = app

    def start(self) -> list[str]:
        """Bind every address (unless :meth:`bind` did) and start serving; returns the
        listener URLs.

        Raises:
            UsageError: an address cannot be bound (see :meth:`bind`).
        """
        self.bind()
        resolve = getattr(self.handler, "fast_file", None)
        for server in self.servers:
            if resolve is not None and server.ssl_context is None and FAST_LANE:
                from desync_store_http.fastlane import FastLane

                lane = FastLane(server, resolve, poll_interval=self.poll_interval)
                self._lanes[id(server)] = lane
                thread = threading.Thread(target=lane.run, name=f"fast lane {server.url}",
                                          daemon=True)
            else:
                thread = threading.Thread(target=server.serve_forever,
                                          name=f"serve {server.url}", daemon=True,
                                          kwargs={"poll_interval": self.poll_interval})
            thread.start()
            self._threads.append(thread)
        return self.urls

    @property
    def urls(self) -> list[str]:
        """The URLs of the listeners."""
        return [s.url for s in self.servers]

    def stop(self) -> None:
        """Stop accepting connections and close the listening sockets."""
        for server, thread in zip(self.servers, self._threads):
            lane = self._lanes.pop(id(server), None)
            if lane is not None:
                lane.stop()
            else:
                server.shutdown()
            thread.join()
        for server in self.servers:
            server.server_close()
        self.servers = []
        self._threads = []


#: Signals a server process handles itself.
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def serve_until_stopped(group: ServerGroup, on_reload: Callable[[], object] | None = None,
                        out: TextIO | None = None) -> int:
    """Run a server group in the main thread until SIGINT or SIGTERM.

    The signals are blocked in every thread (before any is started) and received with
    ``sigwait``, so nothing runs inside a signal handler. SIGHUP calls ``on_reload``
    (ignored when None) while the listeners keep serving.

    Returns:
        0 after a clean shutdown.
    """
    out = out or sys.stderr
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        for url in group.start():
            out.write(f"listening on {url}\n")
        out.flush()
        while True:
            sig = signal.sigwait(_SIGNALS)
            if sig != signal.SIGHUP:
                break
            if on_reload is not None:
                on_reload()
    finally:
        group.stop()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


def resolve_authorization(flag: str | None) -> str:
    """``--authorization``, else ``$DESYNC_HTTP_AUTH``, else no authorization."""
    return flag or os.environ.get("DESYNC_HTTP_AUTH", "")


__all__ = [
    "MAX_CONCURRENT_UPLOADS",
    "UPLOAD_MEMORY_BUDGET",
    "UPLOAD_QUEUE_TIMEOUT",
    "BodyError",
    "RequestHandler",
    "RequestLog",
    "ServerGroup",
    "ServerSettings",
    "ThreadedServer",
    "Upload",
    "UploadGate",
    "parse_listen_address",
    "resolve_authorization",
    "serve_until_stopped",
    "server_ssl_context",
]
