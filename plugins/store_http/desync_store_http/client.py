"""HTTP(S) chunk and index stores, client side (``remote.md`` §1 and §3).

Both stores send their requests through :class:`~desync_store_http.transport.HTTPClient`
(a pool of ``-n`` libcurl handles with keep-alive connections, TLS, ``Authorization`` and
``Cookie`` headers and a whole-request timeout from the store options), which maps
transport failures and statuses onto the core's errors; 404 is a missing chunk or index
here. The plugin itself never retries: the core's ``RetryingStore`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

from desync_core.plugin_api import (
    Chunk,
    ChunkMissingError,
    IndexNotFoundError,
    StoreLocation,
    StoreOptions,
    WritableChunkStore,
    WritableIndexStore,
    check_index_name,
    chunk_key,
)
from desync_store_http.transport import USER_AGENT, HTTPClient


def base_url(location: str) -> str:
    """The store's base URL: ``/`` appended to the path, query and fragment dropped.

    Chunk and index URLs are relative references resolved against it, so
    ``http://h/store?x`` serves ``http://h/store/abcd/abcd….cacnk`` (``remote.md`` §1).
    """
    parts = urlsplit(location)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class HTTPChunkStore(WritableChunkStore):
    """Chunks at ``<base>/<4hex>/<id><ext>`` on a web server (a chunk-server, nginx, …).

    Reading needs only GET/HEAD (any server publishing a store directory works);
    writing uses PUT and needs a server that accepts it (``chunk-server -w``). HTTP stores
    cannot be listed, so they cannot be pruned.
    """

    #: Capability: get_chunk returns the body as the stored bytes in :attr:`codec`, so
    #: extract decodes them straight into its buffers (docs/plugin-hooks.md).
    returns_stored_bytes = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = base_url(location.raw)
        self.client = HTTPClient(self.base, self.options, location.raw)

    def url(self, chunk_id: bytes) -> str:
        """The URL of a chunk in this store's format."""
        return self.base + chunk_key(chunk_id, self.codec.extension)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        status, body = self.client.request("GET", self.url(chunk_id))
        if status == 200:
            return Chunk(chunk_id, encoded=body, codec=self.codec)
        if status == 404:
            raise ChunkMissingError(chunk_id, self)
        raise self.client.status_error(status, f"unexpected status code {status} from {self}",
                                       body)

    def has_chunk(self, chunk_id: bytes) -> bool:
        status, _ = self.client.request("HEAD", self.url(chunk_id))
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.client.status_error(status, f"unexpected status code: {status} from {self}")

    def store_chunk(self, chunk: Chunk) -> None:
        data = chunk.encoded(self.codec)
        status, body = self.client.request("PUT", self.url(chunk.id), bytes(data))
        if status not in (200, 201, 204):
            raise self.client.upload_error(status, body)

    def close(self) -> None:
        self.client.close()


class HTTPIndexStore(WritableIndexStore):
    """Index files at ``<base><name>`` on a web server (an index-server, nginx, …)."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = base_url(location.raw)
        self.client = HTTPClient(self.base, self.options, location.raw)

    def url(self, name: str) -> str:
        """The URL of index ``name`` (a plain file name; anything else is refused)."""
        return self.base + quote(check_index_name(name))

    def get_index(self, name: str) -> bytes:
        return b"".join(self.iter_index(name))

    def iter_index(self, name: str) -> Iterator[bytes]:
        """Streamed: readers stop at the first thing that cannot be an index."""
        pieces = self.client.stream("GET", self.url(name))
        try:
            status = next(pieces)
            assert isinstance(status, int)  # the first item is the status
            if status == 200:
                yield from pieces  # type: ignore[misc]  # after the status, only bytes
                return
            body = b"".join(p for p in pieces if isinstance(p, bytes))
        finally:
            pieces.close()
        if status == 404:
            raise IndexNotFoundError(f"object {name} missing from store {self.base}")
        raise self.client.status_error(
            status, f"unexpected status code {status} from {self.base}{name}", body)

    def has_index(self, name: str) -> bool:
        status, _ = self.client.request("HEAD", self.url(name))
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.client.status_error(
            status, f"unexpected status code: {status} from {self.base}{name}")

    def store_index(self, name: str, data: bytes) -> None:
        status, body = self.client.request("PUT", self.url(name), bytes(data))
        if status not in (200, 201, 204):
            raise self.client.upload_error(status, body)

    def close(self) -> None:
        self.client.close()


__all__ = ["USER_AGENT", "HTTPChunkStore", "HTTPClient", "HTTPIndexStore", "base_url"]
