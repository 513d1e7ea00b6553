"""``desync chunk-server``: serve a chain of chunk stores over HTTP(S) (``remote.md`` §2).

The upstream is built by the core's :class:`~desync_core.context.Context`, so stores,
failover groups (``A|B``), caches, store options, retries and verification behave
exactly as for every other command. This module adds what is specific to serving:

* :func:`parse_chunk_path` — the only accepted paths are ``/<4hex>/<id><ext>``;
* :class:`DedupReader` — concurrent requests for one chunk share one upstream read;
* the upstream is a core ``SwappableStore``: swapped (``--store-file`` + SIGHUP) while
  requests run; each request finishes on the store it started with, which is closed
  once its last request is done;
* :class:`ChunkServer` and :class:`ChunkHandler` — the request semantics. Uploaded
  chunks are always decoded and checked against their id before they are stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from desync_core.plugin_api import (
    SHA256,
    SHA512_256,
    Chunk,
    ChunkCodec,
    ChunkInvalidError,
    ChunkMissingError,
    ConfigError,
    Context,
    DesyncError,
    Digest,
    StoreOptions,
    SwappableStore,
    UsageError,
    VerifyingStore,
    error_text,
    read_store_file,
    validate_server_flags,
)
from desync_store_http.fastlane import open_regular
from desync_store_http.handler import RequestHandler
from desync_store_http.limits import MAX_CHUNK_SIZE, converts, wire_encoding_ok
from desync_store_http.listeners import server_ssl_context
from desync_store_http.server import ServerGroup
from desync_store_http.settings import RequestLog, ServerSettings, resolve_authorization

if TYPE_CHECKING:
    from desync_store_http.metrics import Metrics

#: Largest accepted upload: casync's chunk size limit (128 MiB) plus compression overhead.
MAX_CHUNK_UPLOAD = 129 * 1024 * 1024
_HEX_ID = re.compile(r"[0-9a-f]{64}")


class PathError(ValueError):
    """A request path that does not name a chunk; the message is sent with a 400."""


def request_path(target: str) -> str:
    """The decoded path of a request target (query dropped; absolute form accepted)."""
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path
    return unquote(target.partition("?")[0], errors="replace")


def parse_chunk_path(path: str, extension: str) -> bytes:
    """The chunk id of a path of exactly the form ``/<4hex>/<id><extension>``.

    Raises:
        PathError: anything else (the message says what the server expects).
    """
    expected = f"/<prefix>/<chunkid>{extension}"
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "":
        raise PathError(f"expected format '{expected}'")
    prefix, name = parts[1], parts[2]
    if extension:
        if not name.endswith(extension):
            raise PathError(_extension_message(expected))
        name = name[: -len(extension)]
    if "." in name:
        raise PathError(_extension_message(expected))
    if not _HEX_ID.fullmatch(name):
        raise PathError(f"invalid chunk id '{name}', expected 64 lower-case hex digits")
    if prefix != name[:4]:
        raise PathError(f"expected format '{expected}' (prefix must be the first 4 digits)")
    return bytes.fromhex(name)


def _extension_message(expected: str) -> str:
    return ("invalid chunk extension, verify compression and encryption settings: "
            f"this server expects '{expected}'")


class _Call:
    """One upstream read that several requests wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Chunk | None = None
        self.error: BaseException | None = None


class DedupReader:
    """Concurrent ``get_chunk`` calls for the same id share one upstream request.

    Args:
        inner: the upstream (a store or a composition); writes pass straight through.
        metrics: upstream latencies and coalesced requests are observed there.
    """

    def __init__(self, inner: Any, metrics: Metrics | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self._lock = threading.Lock()
        self._inflight: dict[bytes, _Call] = {}
        #: Upstream reads actually made, and requests currently waiting for another
        #: request's read (for tests and diagnostics).
        self.upstream_reads = 0
        self.waiters = 0
        #: ``hex id -> path`` of the file holding a chunk exactly as the wire format
        #: encodes it, when the upstream is one plain local store (see
        #: :func:`local_file_resolver`); GETs then send that file with ``sendfile``.
        self.local_file: Callable[[str], str | None] | None = None

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """The chunk, read once however many requests ask for it at the same time."""
        with self._lock:
            call = self._inflight.get(chunk_id)
            leader = call is None
            if call is None:
                call = self._inflight[chunk_id] = _Call()
                self.upstream_reads += 1
            else:
                self.waiters += 1
        if not leader:
            if self.metrics is not None:
                self.metrics.coalesced.inc()
            try:
                call.done.wait()
            finally:
                with self._lock:
                    self.waiters -= 1
            if call.error is not None:
                raise call.error
            assert call.result is not None
            return call.result
        try:
            if self.metrics is None:
                call.result = self.inner.get_chunk(chunk_id)
            else:
                with self.metrics.timed("get"):
                    call.result = self.inner.get_chunk(chunk_id)
            return call.result
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._inflight[chunk_id]
            call.done.set()

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the upstream has the chunk."""
        if self.metrics is None:
            return bool(self.inner.has_chunk(chunk_id))
        with self.metrics.timed("has"):
            return bool(self.inner.has_chunk(chunk_id))

    @property
    def writable(self) -> bool:
        """Whether the upstream accepts chunks."""
        return hasattr(self.inner, "store_chunk")

    def store_chunk(self, chunk: Chunk) -> None:
        """Store a chunk upstream."""
        if self.metrics is None:
            self.inner.store_chunk(chunk)
            return
        with self.metrics.timed("store"):
            self.inner.store_chunk(chunk)
        self.metrics.stored_one()

    def close(self) -> None:
        """Close the upstream."""
        self.inner.close()

    def __str__(self) -> str:
        return str(self.inner)


def local_file_resolver(upstream: Any, wire: ChunkCodec) -> Callable[[str], str | None] | None:
    """``local_chunk_file`` of the upstream when a GET may send its chunk files as they
    are: one store (behind retry and non-verifying wrappers only) that declares plain
    local files, unencrypted, compressed exactly when the wire format is. None when a
    chunk must go through the store chain (verification, a cache to fill, a router,
    failover, re-coding)."""
    store = upstream
    for _ in range(8):
        if getattr(store, "skip_verify", True) is False:
            return None  # --skip-verify-read=false: every chunk read is hashed
        codec = getattr(store, "codec", None)
        if isinstance(codec, ChunkCodec) and hasattr(store, "local_chunk_file"):
            if (codec.encrypted or wire.encrypted or codec.compressed != wire.compressed
                    or store.local_chunk_file("0" * 64) is None):
                return None
            resolver: Callable[[str], str | None] = store.local_chunk_file
            return resolver
        store = getattr(store, "inner", None)
        if store is None:
            return None
    return None


def open_upstream(ctx: Context, stores: list[str], cache: str, *, writable: bool,
                  verify_read: bool, metrics: Metrics | None = None) -> DedupReader:
    """The store chain a chunk server serves, opened through the core's Context.

    Read-only servers get the router/failover/cache chain of ``-s … -c …``; writable
    ones exactly one store and no cache. With ``verify_read`` false (the default of
    ``--skip-verify-read``) chunks read upstream are not hashed: clients verify.

    Raises:
        UsageError: no store, or a writable server with several stores or a cache.
        DesyncError: a store cannot be opened.
    """
    if not stores:
        raise UsageError("no store provided")
    if not verify_read:
        ctx = dataclasses.replace(ctx, overrides={**ctx.overrides, "skip_verify": True})
    if writable:
        if len(stores) > 1 or cache:
            raise UsageError("Only one upstream store supported for writing and no cache")
        store: Any = ctx.open_writable(stores[0])
        if verify_read:
            store = VerifyingStore(store, ctx.digest)
        return DedupReader(store, metrics)
    source = ctx.open_source(stores, cache or None)
    if metrics is not None:
        from desync_store_http.metrics import count_cache

        count_cache(source, metrics)
    return DedupReader(source, metrics)


class ChunkServer:
    """The state of one chunk server: its upstream, wire format and write policy.

    Args:
        ctx: the run context (config, store options, ``--digest``).
        stores: ``-s`` locations (ignored with ``store_file``).
        cache: ``-c`` location.
        store_file: ``--store-file`` path; :meth:`reload` re-reads it.
        writable: accept PUT.
        verify_read: hash chunks read upstream (``--skip-verify-read=false``).
        uncompressed: the wire format is uncompressed (``-u``).
        codec: the wire format (compression and encryption, see :func:`wire_codec`);
            overrides ``uncompressed``.
        settings: server settings (error stream for reload failures).
    """

    def __init__(self, ctx: Context, *, stores: list[str] | None = None, cache: str = "",
                 store_file: str = "", writable: bool = False, verify_read: bool = False,
                 uncompressed: bool = False, codec: ChunkCodec | None = None,
                 settings: ServerSettings | None = None) -> None:
        self.ctx = ctx
        self.stores = list(stores or [])
        self.cache = cache
        self.store_file = store_file
        self.writable = writable
        self.verify_read = verify_read
        #: The wire format: chunks are converted to it from any upstream format (GET)
        #: and from it to the upstream's format (PUT).
        self.codec = codec if codec is not None else ChunkCodec(compressed=not uncompressed)
        self.settings = settings or ServerSettings()
        self.digests = self._accepted_digests(ctx)
        self.holder = SwappableStore(self._build())

    @staticmethod
    def _accepted_digests(ctx: Context) -> list[Digest]:
        # Uploads are checked with --digest. Without an explicit --digest both of
        # desync's digests are accepted, so one server can take chunks of SHA-256 and
        # SHA-512/256 indexes alike; an id matching the data under either is genuine.
        if ctx.digest_explicit:
            return [ctx.digest]
        return [ctx.digest] + [d for d in (SHA512_256, SHA256) if d is not ctx.digest]

    def _build(self) -> DedupReader:
        stores, cache = (read_store_file(self.store_file) if self.store_file
                         else (self.stores, self.cache))
        reader = open_upstream(self.ctx, stores, cache, writable=self.writable,
                               verify_read=self.verify_read, metrics=self.settings.metrics)
        reader.local_file = local_file_resolver(reader.inner, self.codec)
        return reader

    def reload(self) -> bool:
        """Re-read the store file and swap the new upstream in.

        An invalid file is reported (``failed to reload configuration: …``) and the
        running upstream is kept. Returns whether the swap happened.
        """
        try:
            new = self._build()
        except Exception as exc:  # any failure keeps the old setup
            self.settings.report(f"failed to reload configuration: {error_text(exc)}")
            return False
        self.holder.swap(new)
        return True

    def verify_upload(self, chunk: Chunk) -> int:
        """Decode an uploaded chunk piece by piece (never whole: bounded memory, at most
        :data:`MAX_CHUNK_SIZE` bytes of output) and check it against its id; returns
        the plain size.

        Raises:
            ChunkInvalidError: it does not decode, or hashes to another id.
        """
        hashers = [digest.new() for digest in self.digests]
        size = 0
        for piece in self.codec.iter_decode(chunk.encoded(self.codec), chunk.id,
                                            MAX_CHUNK_SIZE):
            size += len(piece)
            for hasher in hashers:
                hasher.update(piece)
        sums = [hasher.digest() for hasher in hashers]
        if chunk.id in sums:
            return size
        raise ChunkInvalidError(chunk.id, sums[0])

    def close(self) -> None:
        """Close the upstream."""
        self.holder.close()


class ChunkHandler(RequestHandler):
    """Requests to a chunk server: GET, HEAD and (with ``-w``) PUT of ``/<4hex>/<id><ext>``."""

    app: ChunkServer

    @staticmethod
    def fast_file(app: ChunkServer, target: str) -> str | None:
        """For the fast lane: the file a GET of ``target`` may send as it is (a valid
        chunk path and an upstream of plain local files), else None."""
        local_file = app.holder.current.local_file
        if local_file is None:
            return None
        try:
            chunk_id = parse_chunk_path(request_path(target), app.codec.extension)
        except PathError:
            return None
        return local_file(chunk_id.hex())

    def parse_target(self) -> bytes | None:
        try:
            return parse_chunk_path(request_path(self.path), self.app.codec.extension)
        except PathError as exc:
            self.reply(400, f"{exc}\n".encode())
            return None

    def _failed(self, what: str, exc: BaseException, status: int = 500,
                public: str = "internal server error") -> None:
        self.settings.report(f"{what}: {error_text(exc)}")
        self.reply(status, f"{public}\n".encode())

    def on_get(self, chunk_id: bytes) -> None:
        # The resolver only computes a path: it needs no reference held on the store.
        local_file = self.app.holder.current.local_file
        if local_file is not None and self._send_local(local_file, chunk_id):
            return
        try:
            with self.app.holder.use() as store:
                chunk = store.get_chunk(chunk_id)
            wire = chunk.encoded(self.app.codec)
        except ChunkMissingError:
            self.reply(404, f"chunk {chunk_id.hex()} not found\n".encode())
            return
        except (DesyncError, OSError) as exc:
            self._failed(f"failed to retrieve chunk {chunk_id.hex()}", exc)
            return
        self.reply(200, wire, content_type="application/octet-stream")

    def _send_local(self, local_file: Callable[[str], str | None], chunk_id: bytes) -> bool:
        """Send the chunk's file with sendfile; False (nothing sent) when there is no
        such regular file: the store chain then answers (404, or an error)."""
        opened = open_regular(local_file(chunk_id.hex()))
        if opened is None or opened[1] > MAX_CHUNK_UPLOAD:
            if opened is not None:
                os.close(opened[0])
            return False
        fd, size = opened
        try:
            self.reply_file(fd, size)
            return True
        finally:
            os.close(fd)

    def on_head(self, chunk_id: bytes) -> None:
        try:
            with self.app.holder.use() as store:
                present = store.has_chunk(chunk_id)
        except (DesyncError, OSError) as exc:
            self._failed(f"failed to look up chunk {chunk_id.hex()}", exc)
            return
        self.reply(200 if present else 404)

    def on_put(self, chunk_id: bytes) -> None:
        if not self.app.writable:
            self.reply(400, b"writing to upstream chunk store is not enabled\n")
            return
        # Limits (server.py): body size, upload memory budget, encodings (#19.4).
        with self.upload(MAX_CHUNK_UPLOAD) as upload:
            chunk = Chunk(chunk_id, encoded=upload.body, codec=self.app.codec)
            if not wire_encoding_ok(self.app.codec, chunk):
                self.reply(415, b"unsupported chunk encoding: this store's chunks are "
                           b"zstd-compressed\n")
                return
            try:
                size = self.app.verify_upload(chunk)
            except ChunkInvalidError as exc:
                self.reply(400, f"{exc}\n".encode())
                return
            try:
                with self.app.holder.use() as store:
                    if not store.writable:
                        self.reply(400, b"upstream chunk store does not support writing\n")
                        return
                    if converts(store, self.app.codec):
                        upload.reserve_more(size)  # the store decodes it whole
                    store.store_chunk(chunk)
            except (DesyncError, OSError) as exc:
                self._failed(f"failed to store chunk {chunk_id.hex()}", exc,
                             public=f"failed to store chunk {chunk_id.hex()}")
                return
        self.reply(200)


def wire_codec(args: argparse.Namespace) -> ChunkCodec:
    """The format chunks are exchanged in: ``-u`` and the ``--encryption*`` flags.

    Any of ``--encryption``, ``--encryption-key``, ``--encryption-algorithm`` enables
    encryption; the key then falls back to ``$DESYNC_ENCRYPTION_KEY``, which alone never
    changes the wire format (it may be set for an encrypted store in the config).

    Raises:
        UsageError: invalid encryption flags (desync's messages).
    """
    options = StoreOptions(
        uncompressed=args.uncompressed,
        encryption=bool(args.encryption or args.encryption_key or args.encryption_algorithm),
        encryption_key=args.encryption_key,
        encryption_algorithm=args.encryption_algorithm,
    )
    try:
        return ChunkCodec.for_options(options)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def main(args: argparse.Namespace, ctx: Context) -> int:
    """The ``chunk-server`` command: build the upstream, listen, serve until stopped."""
    validate_server_flags(args)
    # The wire format is checked before any upstream store is opened (fail fast).
    wire = wire_codec(args)
    if args.store_file:
        if args.store:
            raise UsageError("--store and --store-file can't be used together")
        if args.cache:
            raise UsageError("--cache and --store-file can't be used together")
    settings = ServerSettings(authorization=resolve_authorization(args.authorization))
    tls = (server_ssl_context(args.cert, args.key, args.client_ca if args.mutual_tls else "")
           if args.cert else None)
    from desync_store_http.workers import run_server, worker_count

    workers = worker_count(getattr(args, "workers", 1))
    if getattr(args, "metrics", False):
        from desync_store_http.metrics import Metrics

        settings.metrics = Metrics("chunk", multiprocess=workers > 1)

    def make_app() -> ChunkServer:
        return ChunkServer(ctx, stores=args.store, cache=args.cache,
                           store_file=args.store_file, writable=args.writable,
                           verify_read=not args.skip_verify_read, codec=wire,
                           settings=settings)

    try:
        settings.log = RequestLog(args.log) if args.log else None
        group = ServerGroup(args.listen or [":http"], ChunkHandler, None, settings, tls)
        return run_server(group, make_app, workers=workers,
                          reload=ChunkServer.reload if args.store_file else None)
    finally:
        if settings.log is not None:
            settings.log.close()
        if settings.metrics is not None:
            settings.metrics.cleanup()


__all__ = [
    "ChunkHandler",
    "ChunkServer",
    "DedupReader",
    "PathError",
    "local_file_resolver",
    "main",
    "open_upstream",
    "parse_chunk_path",
    "request_path",
    "wire_codec",
]
