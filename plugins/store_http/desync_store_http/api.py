"""Python calls that start ``chunk-server`` and ``index-server`` in background threads.

``desync_core.api.chunk_server`` / ``index_server`` reach these through the command
registry (the core never imports this package by name). Both build the same objects
the commands build (:class:`~desync_store_http.chunkserver.ChunkServer`,
:class:`~desync_store_http.indexserver.IndexServer`, a
:class:`~desync_store_http.server.ServerGroup`), but return once the listeners are
bound instead of waiting for a signal: the listeners' threads serve until
:meth:`RunningServer.close`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from desync_core.plugin_api import Context, validate_server_flags


class RunningServer:
    """A server serving from background threads until :meth:`close`.

    Args:
        group: the started listeners.
        app: the server state (:class:`ChunkServer` or :class:`IndexServer`).
        closers: more things to close after the app (the request log).
    """

    def __init__(self, group: Any, app: Any, closers: Sequence[Callable[[], object]]) -> None:
        self.group = group
        self.app = app
        self._closers = list(closers)
        self._urls = list(group.urls)
        self._closed = False

    @property
    def urls(self) -> list[str]:
        """``http(s)://host:port`` of every listener."""
        return list(self._urls)

    @property
    def url(self) -> str:
        """The first listener's URL with a trailing ``/`` (usable as a store location)."""
        return self._urls[0] + "/"

    @property
    def port(self) -> int:
        """The first listener's port."""
        return int(self._urls[0].rsplit(":", 1)[1])

    def reload(self) -> bool:
        """Re-read the chunk server's store file (what SIGHUP does); False if it failed
        (the running upstream is kept)."""
        reload = getattr(self.app, "reload", None)
        return bool(reload()) if reload is not None else False

    def close(self) -> None:
        """Stop listening, then close the upstream and the request log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.group.stop()
        finally:
            self.app.close()
            for close in self._closers:
                close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<{type(self.app).__name__} {state} on {', '.join(self._urls)}>"


def _tls_args(cert: str, key: str, client_ca: str) -> argparse.Namespace:
    return argparse.Namespace(cert=cert, key=key, client_ca=client_ca,
                              mutual_tls=bool(client_ca))


def _start(handler: Any, app: Any, listen: Sequence[str], tls: Any,
           settings: Any, log: str) -> RunningServer:
    from desync_store_http.server import ServerGroup
    from desync_store_http.settings import RequestLog

    closers: list[Callable[[], object]] = []
    try:
        if log:
            settings.log = RequestLog(log)
            closers.append(settings.log.close)
        group = ServerGroup(list(listen), handler, app, settings, tls)
        group.start()
    except BaseException:
        app.close()
        for close in closers:
            close()
        raise
    return RunningServer(group, app, closers)


def chunk_server(ctx: Context, stores: Sequence[str], *, cache: str = "",
                 listen: Sequence[str] = ("127.0.0.1:0",), writable: bool = False,
                 store_file: str = "", verify_read: bool = False, uncompressed: bool = False,
                 encryption: bool = False, encryption_key: str = "",
                 encryption_algorithm: str = "", authorization: str | None = None,
                 cert: str = "", key: str = "", client_ca: str = "",
                 log: str = "") -> RunningServer:
    """Start a chunk server (the ``chunk-server`` flags as keywords); see
    :func:`desync_core.api.chunk_server`."""
    from desync_core.plugin_api import UsageError
    from desync_store_http.chunkserver import ChunkHandler, ChunkServer, wire_codec
    from desync_store_http.listeners import server_ssl_context
    from desync_store_http.settings import ServerSettings, resolve_authorization

    flags = _tls_args(cert, key, client_ca)
    validate_server_flags(flags)
    wire = wire_codec(argparse.Namespace(uncompressed=uncompressed, encryption=encryption,
                                         encryption_key=encryption_key,
                                         encryption_algorithm=encryption_algorithm))
    if store_file and stores:
        raise UsageError("--store and --store-file can't be used together")
    if store_file and cache:
        raise UsageError("--cache and --store-file can't be used together")
    settings = ServerSettings(authorization=resolve_authorization(authorization))
    tls = server_ssl_context(cert, key, client_ca) if cert else None
    app = ChunkServer(ctx, stores=list(stores), cache=cache, store_file=store_file,
                      writable=writable, verify_read=verify_read, codec=wire,
                      settings=settings)
    return _start(ChunkHandler, app, listen, tls, settings, log)


def index_server(ctx: Context, store: str, *, listen: Sequence[str] = ("127.0.0.1:0",),
                 writable: bool = False, authorization: str | None = None, cert: str = "",
                 key: str = "", client_ca: str = "", log: str = "") -> RunningServer:
    """Start an index server (the ``index-server`` flags as keywords); see
    :func:`desync_core.api.index_server`."""
    from desync_store_http.indexserver import IndexHandler, IndexServer
    from desync_store_http.listeners import server_ssl_context
    from desync_store_http.settings import ServerSettings, resolve_authorization

    validate_server_flags(_tls_args(cert, key, client_ca))
    settings = ServerSettings(authorization=resolve_authorization(authorization))
    tls = server_ssl_context(cert, key, client_ca) if cert else None
    app = IndexServer(ctx, store, writable=writable)
    return _start(IndexHandler, app, listen, tls, settings, log)


__all__ = ["RunningServer", "chunk_server", "index_server"]
