"""Sending replies: the lowest layer of :class:`~desync_store_http.handler.RequestHandler`.

:class:`ReplyWriter` writes complete responses with an explicit ``Content-Length``:
status line, headers and body in one system call where the socket allows it, files
with ``sendfile`` on plain connections, protocol errors as complete ``HTTP/1.1``
replies, and 503 when the upload budget stays full. It counts sent bytes in the
metrics and has every reply logged.
"""

from __future__ import annotations

import http.server
import os
import select
import socket
import ssl
from typing import TYPE_CHECKING

from desync_store_http.protocol import http_date

if TYPE_CHECKING:
    from desync_store_http.listeners import ThreadedServer
    from desync_store_http.settings import ServerSettings


class ReplyWriter(http.server.BaseHTTPRequestHandler):
    """Replies of a request handler (see :class:`~desync_store_http.handler.RequestHandler`)."""

    _scrape = False  # this request is a /metrics scrape (see RequestHandler._handle)
    _replied: bool  # a reply (or part of one) has been sent for this request
    _body_read: bool  # the request body has been read off the connection
    server: ThreadedServer

    @property
    def settings(self) -> ServerSettings:
        """The server's shared settings."""
        return self.server.settings

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


__all__ = ["ReplyWriter"]
