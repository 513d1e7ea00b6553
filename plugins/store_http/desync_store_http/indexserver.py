"""``desync index-server``: serve an index store over HTTP(S) (``remote.md`` §3).

The request path's last component is the index name (directories in the path are
ignored); it must be a plain file name, so no request can reach outside the store.
Indexes are parsed both ways: GET sends the re-serialised index (a corrupt file is a
400, not garbage), PUT refuses bodies that are not an index (415).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from desync_core.plugin_api import (
    Context,
    DesyncError,
    Index,
    IndexNotFoundError,
    IndexStore,
    StoreError,
    UsageError,
    WritableIndexStore,
    check_index_name,
    error_text,
    parse_location,
    read_index_file,
    validate_server_flags,
)
from desync_store_http.chunkserver import request_path
from desync_store_http.handler import RequestHandler
from desync_store_http.listeners import server_ssl_context
from desync_store_http.server import ServerGroup
from desync_store_http.settings import RequestLog, ServerSettings, resolve_authorization

if TYPE_CHECKING:
    from desync_store_http.metrics import Metrics

#: Largest accepted index upload (an index of about 26 million chunks).
MAX_INDEX_UPLOAD = 1024 * 1024 * 1024
#: Longest file name (bytes) of Linux file systems.
NAME_MAX = 255


class IndexServer:
    """The state of one index server.

    Args:
        ctx: the run context (config and store options).
        location: the upstream index store (``-s``); a trailing ``/`` is added.
        writable: accept PUT.
        metrics: upstream latencies and stored indexes are counted there.
    """

    def __init__(self, ctx: Context, location: str, *, writable: bool = False,
                 metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        if not location:
            raise UsageError("no store provided")
        if not location.endswith("/"):
            location += "/"
        loc = parse_location(location)
        if loc.is_local and not os.path.isdir(loc.path):
            raise StoreError(f"index store {location} is not a directory")
        self.location = location
        self.writable = writable
        #: The directory of a local store: read here, refusing anything but regular
        #: files (a FIFO there would hold a thread forever) and bounded by the header.
        self.directory = loc.path if loc.is_local else None
        self.store: IndexStore = ctx.open_index_store(location)

    @contextlib.contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        """Observe the block as an upstream ``operation`` (with ``--metrics``)."""
        if self.metrics is None:
            yield
            return
        with self.metrics.timed(operation):
            yield

    def get_index(self, name: str) -> bytes:
        """The bytes of index ``name`` (see :attr:`directory`)."""
        with self.timed("get"):
            return self._get_index(name)

    def _get_index(self, name: str) -> bytes:
        if self.directory is not None:
            return read_index_file(os.path.join(self.directory, name), name,
                                   regular_only=True)
        return self.store.get_index(name)

    def close(self) -> None:
        """Close the upstream store."""
        self.store.close()


class IndexHandler(RequestHandler):
    """Requests to an index server: GET, HEAD and (with ``-w``) PUT of ``/…/<name>``."""

    app: IndexServer

    def parse_target(self) -> str | None:
        name = request_path(self.path).rpartition("/")[2]
        try:
            check_index_name(name)
        except UsageError:
            self.reply(400, b"invalid index name\n")
            return None
        if len(os.fsencode(name)) > NAME_MAX:  # no file can have it (ENAMETOOLONG)
            self.reply(400, f"invalid index name: longer than {NAME_MAX} bytes\n".encode())
            return None
        return name

    def on_get(self, name: str) -> None:
        try:
            data = Index.from_bytes(self.app.get_index(name), name).to_bytes()
        except IndexNotFoundError:
            self.reply(404, b"index not found\n")
            return
        except (DesyncError, OSError) as exc:
            self.settings.report(f"failed to retrieve index {name}: {error_text(exc)}")
            self.reply(400, b"failed to retrieve index\n")
            return
        self.reply(200, data, content_type="application/octet-stream")

    def on_head(self, name: str) -> None:
        try:
            with self.app.timed("has"):
                present = self.app.store.has_index(name)
        except (DesyncError, OSError) as exc:
            self.settings.report(f"failed to look up index {name}: {error_text(exc)}")
            self.reply(400)
            return
        self.reply(200 if present else 404)

    def on_put(self, name: str) -> None:
        if not self.app.writable:
            self.reply(400, b"writing to upstream index store is not enabled\n")
            return
        store = self.app.store
        if not isinstance(store, WritableIndexStore):
            self.reply(400, b"upstream index store does not support writing\n")
            return
        with self.upload(MAX_INDEX_UPLOAD) as upload:
            try:
                index = Index.from_bytes(upload.body, name)
            except DesyncError as exc:
                self.reply(415, f"invalid index: {exc}\n".encode())
                return
        try:
            with self.app.timed("store"):
                store.store_index(name, index.to_bytes())
        except (DesyncError, OSError) as exc:
            self.settings.report(f"failed to store index {name}: {error_text(exc)}")
            self.reply(500, f"failed to store index {name}\n".encode())
            return
        if self.app.metrics is not None:
            self.app.metrics.stored_one()
        self.reply(200)


def main(args: argparse.Namespace, ctx: Context) -> int:
    """The ``index-server`` command: open the store, listen, serve until stopped."""
    validate_server_flags(args)
    settings = ServerSettings(authorization=resolve_authorization(args.authorization))
    tls = (server_ssl_context(args.cert, args.key, args.client_ca if args.mutual_tls else "")
           if args.cert else None)
    from desync_store_http.workers import run_server, worker_count

    workers = worker_count(getattr(args, "workers", 1))
    if getattr(args, "metrics", False):
        from desync_store_http.metrics import Metrics

        settings.metrics = Metrics("index", multiprocess=workers > 1)

    def make_app() -> IndexServer:
        return IndexServer(ctx, args.store, writable=args.writable, metrics=settings.metrics)

    try:
        settings.log = RequestLog(args.log) if args.log else None
        group = ServerGroup(args.listen or [":http"], IndexHandler, None, settings, tls)
        return run_server(group, make_app, workers=workers)
    finally:
        if settings.log is not None:
            settings.log.close()
        if settings.metrics is not None:
            settings.metrics.cleanup()


__all__ = ["IndexHandler", "IndexServer", "main"]
