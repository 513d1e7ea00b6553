"""``desync index-server``: serve an index store over HTTP(S) (``remote.md`` §3).

The request path's last component is the index name (directories in the path are
ignored); it must be a plain file name, so no request can reach outside the store.
Indexes are parsed both ways: GET sends the re-serialised index (a corrupt file is a
400, not garbage), PUT refuses bodies that are not an index (415).
"""

from __future__ import annotations

import argparse
import os

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
from desync_store_http.server import (
    RequestHandler,
    RequestLog,
    ServerGroup,
    ServerSettings,
    resolve_authorization,
    serve_until_stopped,
    server_ssl_context,
)

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
    """

    def __init__(self, ctx: Context, location: str, *, writable: bool = False) -> None:
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

    def get_index(self, name: str) -> bytes:
        """The bytes of index ``name`` (see :attr:`directory`)."""
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
            store.store_index(name, index.to_bytes())
        except (DesyncError, OSError) as exc:
            self.settings.report(f"failed to store index {name}: {error_text(exc)}")
            self.reply(500, f"failed to store index {name}\n".encode())
            return
        self.reply(200)


def main(args: argparse.Namespace, ctx: Context) -> int:
    """The ``index-server`` command: open the store, listen, serve until stopped."""
    validate_server_flags(args)
    settings = ServerSettings(authorization=resolve_authorization(args.authorization))
    tls = (server_ssl_context(args.cert, args.key, args.client_ca if args.mutual_tls else "")
           if args.cert else None)
    app = IndexServer(ctx, args.store, writable=args.writable)
    try:
        settings.log = RequestLog(args.log) if args.log else None
        group = ServerGroup(args.listen or [":http"], IndexHandler, app, settings, tls)
        return serve_until_stopped(group)
    finally:
        app.close()
        if settings.log is not None:
            settings.log.close()


__all__ = ["IndexHandler", "IndexServer", "main"]
