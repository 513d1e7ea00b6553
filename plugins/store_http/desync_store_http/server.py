"""The HTTP(S) server under ``chunk-server`` and ``index-server``: listeners and
their lifecycle.

A stdlib :class:`http.server.ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive (one
thread per connection, explicit ``Content-Length`` everywhere, ``TCP_NODELAY``), with
the stdlib's slow parts replaced (:mod:`desync_store_http.protocol`). Around it:
pre-forked worker processes (:mod:`desync_store_http.workers`) and, for plain-HTTP GETs
of local chunk files, an event loop that answers with ``sendfile``
(:mod:`desync_store_http.fastlane`): together 95 % of nginx's GET throughput here
(``benchmarks/bench_chunk_server.py``), with no server dependency.

What both servers share is split by job:

* :mod:`desync_store_http.listeners` — listen addresses, TLS and mutual TLS, one
  listening socket with a thread per connection (``ThreadedServer``), timeouts;
* :mod:`desync_store_http.handler` — the request handler: parsing, the
  ``Authorization`` check (constant-time), routing, ``/metrics``, the request log;
* :mod:`desync_store_http.replies` — replies (``sendfile`` for files) and error replies;
* :mod:`desync_store_http.uploads` — request bodies (``Content-Length`` or chunked, with
  a size limit) and the memory budget of uploads;
* :mod:`desync_store_http.settings` — what every handler of one server shares.

This module runs them: several listeners per process (:class:`ServerGroup`, each with
a fast lane or a thread accepting connections) and :func:`serve_until_stopped`, which
blocks SIGINT/SIGTERM/SIGHUP in every thread and handles them synchronously with
``sigwait`` (no work ever runs in a signal handler).
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from desync_core.plugin_api import UsageError
from desync_store_http.listeners import ThreadedServer, parse_listen_address

if TYPE_CHECKING:
    from desync_store_http.handler import RequestHandler
    from desync_store_http.settings import ServerSettings

#: Serve plain-HTTP GETs of local chunk files in an event loop (``fastlane.py``);
#: ``DESYNC_SERVER_FAST_LANE=0`` turns it off (every connection gets a thread).
FAST_LANE = os.environ.get("DESYNC_SERVER_FAST_LANE", "1") != "0"


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
        #: With pre-forked workers: the board the lanes share, and this worker's row
        #: (set by :mod:`desync_store_http.workers` before :meth:`start`).
        self.board: Any = None
        self.worker_index = 0

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
        for number, server in enumerate(self.servers):
            if resolve is not None and server.ssl_context is None and FAST_LANE:
                from desync_store_http.fastlane import BoardSeat, FastLane

                seat = (None if self.board is None
                        else BoardSeat(self.board, self.worker_index, number))
                lane = FastLane(server, resolve, poll_interval=self.poll_interval, seat=seat)
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


__all__ = ["FAST_LANE", "ServerGroup", "serve_until_stopped"]
