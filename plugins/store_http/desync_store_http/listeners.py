"""Listening sockets and their connections, for both servers.

* Go-style listen addresses (``host:port``, ``:8080``, ``127.0.0.1:http``):
  :func:`parse_listen_address`;
* TLS and mutual TLS: :func:`server_ssl_context`, and the handshake, which runs in the
  connection's thread so that a slow client cannot stall the accept loop;
* :class:`ThreadedServer`: one listening socket, a thread per connection (IPv4, IPv6 or
  both), and the connection timeouts every path applies (also the fast lane's).

Several listeners serving one application are a
:class:`~desync_store_http.server.ServerGroup`.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import ssl
import sys
import traceback
from typing import TYPE_CHECKING, Any

from desync_core.plugin_api import UsageError

if TYPE_CHECKING:
    from desync_store_http.handler import RequestHandler
    from desync_store_http.settings import ServerSettings

#: Idle keep-alive connections are closed after this long (desync: 120 s).
IDLE_TIMEOUT = 120.0
#: Request headers (after the request line) and TLS handshakes must arrive within this.
HEADER_TIMEOUT = 30.0
#: Pending connections the kernel queues while all threads are busy accepting.
BACKLOG = 256


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


__all__ = [
    "BACKLOG",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "ThreadedServer",
    "parse_listen_address",
    "server_ssl_context",
]
