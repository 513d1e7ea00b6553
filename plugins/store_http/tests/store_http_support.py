"""Test support for desync-store-http: real servers on 127.0.0.1 and the CLI.

Servers are started two ways:

* as ``python -m desync_core chunk-server|index-server … -l 127.0.0.1:0`` subprocesses
  (:class:`ServerProcess`); the port is read from the ``listening on …`` line;
* in-process (:func:`chunk_server_in_process`, :func:`index_server_in_process`), where a
  test needs the server's state or many quick servers.

(A module with a unique name rather than ``conftest``: the repository has several
conftest files, and test modules import these helpers.)
"""

from __future__ import annotations

import http.client
import http.server
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from desync_core.plugin_api import Context
from desync_core.testing.fixtures import find_testdata
from desync_store_http.chunkserver import ChunkHandler, ChunkServer
from desync_store_http.indexserver import IndexHandler, IndexServer
from desync_store_http.listeners import server_ssl_context
from desync_store_http.server import ServerGroup
from desync_store_http.settings import ServerSettings

CMD_TESTDATA = find_testdata() / "cmd" / "desync" / "testdata"
#: How long a test waits for a server to start or react before giving up.
PATIENCE = 60.0


class ServerProcess:
    """A ``desync chunk-server``/``index-server`` subprocess on 127.0.0.1.

    ``-l 127.0.0.1:0`` is added unless the arguments contain ``-l``; the listening URLs
    are read from stderr. Stderr keeps being collected (:meth:`stderr`).
    """

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        if "-l" not in args and not any(a.startswith("--listen") for a in args):
            args = [*args, "-l", "127.0.0.1:0"]
        listeners = sum(1 for a in args if a == "-l" or a.startswith("--listen"))
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "desync_core", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=full_env)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.urls = self._wait_for_urls(listeners)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self._lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # EOF marker
            self._cond.notify_all()

    def _wait_for_urls(self, count: int) -> list[str]:
        def found() -> list[str]:
            return [m.group(1) for line in self._lines
                    if (m := re.match(r"listening on (\S+)", line))]

        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(found()) >= count or "" in self._lines, timeout=PATIENCE)
            urls = found()
        if not ok or len(urls) < count:
            self.stop()
            raise AssertionError(f"server did not start: desync {' '.join(self.args)}\n"
                                 f"{self.stderr()}")
        return urls

    @property
    def url(self) -> str:
        """The first listener's URL (no trailing slash)."""
        return self.urls[0]

    def stderr(self) -> str:
        """Everything the server printed on stderr so far."""
        with self._cond:
            return "".join(self._lines)

    def wait_for_stderr(self, text: str, timeout: float = PATIENCE) -> bool:
        """Wait until ``text`` appears on stderr; False if it did not in time."""
        with self._cond:
            return self._cond.wait_for(lambda: text in "".join(self._lines), timeout=timeout)

    def send_signal(self, sig: int) -> None:
        """Send a signal to the server process."""
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """Stop the server with SIGTERM (SIGKILL if it hangs); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=PATIENCE)
        return self.proc.returncode


@contextmanager
def serve_in_process(handler: type[Any], app: Any, settings: ServerSettings,
                     tls: dict[str, str] | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in this process; yields the base URL."""
    ssl_context = (server_ssl_context(tls["cert"], tls["key"], tls.get("client_ca", ""))
                   if tls else None)
    group = ServerGroup(["127.0.0.1:0"], handler, app, settings, ssl_context,
                        poll_interval=0.01)
    url = group.start()[0]
    try:
        yield url
    finally:
        group.stop()


@contextmanager
def chunk_server_in_process(ctx: Context | None = None, *, authorization: str = "",
                            tls: dict[str, str] | None = None,
                            **kwargs: Any) -> Iterator[tuple[str, ChunkServer]]:
    """A chunk server in this process; yields ``(url, server)``.

    ``kwargs`` are :class:`ChunkServer` arguments (``stores``, ``writable``, …).
    """
    settings = ServerSettings(authorization=authorization)
    app = ChunkServer(ctx or Context(), settings=settings, **kwargs)
    try:
        with serve_in_process(ChunkHandler, app, settings, tls) as url:
            yield url, app
    finally:
        app.close()


@contextmanager
def index_server_in_process(location: str, ctx: Context | None = None, *,
                            writable: bool = False,
                            authorization: str = "") -> Iterator[tuple[str, IndexServer]]:
    """An index server in this process; yields ``(url, server)``."""
    settings = ServerSettings(authorization=authorization)
    app = IndexServer(ctx or Context(), location, writable=writable)
    try:
        with serve_in_process(IndexHandler, app, settings) as url:
            yield url, app
    finally:
        app.close()


@dataclass
class SeenRequest:
    """A request a :class:`ScriptedServer` received."""

    method: str
    path: str
    headers: dict[str, str]
    client_port: int
    body: bytes


class ScriptedServer:
    """A real HTTP/1.1 server on 127.0.0.1 whose replies come from a Python function.

    For client tests that need statuses a chunk-server never sends (503, 403…), slow
    replies or header checks. ``respond(request) -> (status, body)`` runs in the
    connection's thread; every request is recorded in :attr:`seen`.
    """

    def __init__(self, respond: Callable[[SeenRequest], tuple[int, bytes]]) -> None:
        self.seen: list[SeenRequest] = []
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = SeenRequest(self.command, self.path, dict(self.headers.items()),
                                      self.client_address[1], body)
                with lock:
                    outer.seen.append(request)
                status, reply = respond(request)
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)

            do_GET = do_HEAD = do_PUT = _any  # noqa: N815 - stdlib naming

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)
                # (a client that gave up on a slow reply: expected in these tests)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def paths(self, method: str | None = None) -> list[str]:
        """Paths requested so far (optionally of one method)."""
        return [r.path for r in self.seen if method is None or r.method == method]

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until true (bounded by PATIENCE); whether it became true."""
    pause = threading.Event()
    for _ in range(int(PATIENCE / 0.02)):
        if condition():
            return True
        pause.wait(0.02)
    return condition()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Send one request with ``path`` exactly as given (no normalisation)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=PATIENCE)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=PATIENCE)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def chunk_path(chunk_id: bytes, extension: str = ".cacnk") -> str:
    """``/abcd/abcd….cacnk``."""
    h = chunk_id.hex()
    return f"/{h[:4]}/{h}{extension}"


def blob_chunk_ids(index_path: Path) -> list[bytes]:
    """The unique chunk ids of an index, in order."""
    from desync_core.plugin_api import Index

    index = Index.from_bytes(index_path.read_bytes(), str(index_path))
    return list(dict.fromkeys(c.id for c in index))


def raw_exchange(url: str, request: bytes) -> int:
    """Send raw request bytes over plain HTTP; returns the reply's status code."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE) as sock:
        sock.sendall(request)
        return int(sock.makefile("rb").readline().split()[1])


def run_cli_in_process(*args: str) -> tuple[int, str]:
    """Run the CLI in this process (for commands that fail before serving): returns the
    exit status and what was printed on stderr. Much faster than a subprocess."""
    import contextlib
    import io

    from desync_core.plugin_api import run_cli as run

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, err.getvalue()
