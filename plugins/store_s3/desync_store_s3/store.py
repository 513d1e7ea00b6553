"""S3 chunk and index stores (``remote.md`` §6 and §9).

* :class:`S3ChunkStore` — ``s3+http(s)://host[:port]/bucket[/prefix][?lookup=…]``:
  chunk ``<prefix><4hex>/<id><ext>``, uploaded with ``Content-Type: application/zstd``;
  read, write, has, list (``ListObjectsV2``, paginated) and delete, so it serves
  ``make -s``, caches, ``prune`` and ``verify -r``.
* :class:`S3IndexStore` — ``s3+http(s)://host/bucket/dir/``: index ``<prefix><name>``,
  uploaded with ``Content-Type: application/octet-stream``.

Stores pickle as location, options and the matched ``s3-credentials`` entry (not the
resolved keys): a worker process resolves the credentials again and opens its own
client. boto3 is imported on the first request, not when the store object is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from desync_core.plugin_api import (
    IndexNotFoundError,
    KeyValueChunkStore,
    StoreLocation,
    StoreOptions,
    WritableIndexStore,
    check_index_name,
    opening_context,
    os_error,
    parse_location,
)
from desync_store_s3.credentials import SECTION, CredentialsEntry, CredentialsResolver
from desync_store_s3.location import S3Location, parse_s3_location

if TYPE_CHECKING:
    from desync_store_s3.client import S3Connection

#: ``Content-Type`` of chunk objects (every chunk, whatever its codec: desync's choice).
CHUNK_CONTENT_TYPE = "application/zstd"
#: ``Content-Type`` of index objects.
INDEX_CONTENT_TYPE = "application/octet-stream"


def _config_credentials(s3: S3Location) -> CredentialsEntry | None:
    """The ``s3-credentials`` entry for the location, from the config file of the
    command opening the store (None outside a command, or when no key matches)."""
    ctx = opening_context()
    if ctx is None:
        return None
    return CredentialsEntry.from_json(ctx.config_entry(SECTION, s3.credentials_key))


def _reopen(cls: type[Any], location: str, options: StoreOptions,
            credentials: CredentialsEntry | None) -> Any:
    return cls(parse_location(location), options, credentials)


class _S3Base:
    """What the chunk and index stores share: location, credentials, connection."""

    location: StoreLocation
    options: StoreOptions

    def _init_s3(self, credentials: CredentialsEntry | None) -> None:
        self.s3 = parse_s3_location(self.location.raw)
        self.credentials = credentials
        self._conn: S3Connection | None = None

    @classmethod
    def from_location(cls, location: StoreLocation, options: StoreOptions) -> Any:
        """Open the store; the credentials entry comes from the opening command's config."""
        return cls(location, options, _config_credentials(parse_s3_location(location.raw)))  # type: ignore[call-arg]

    @property
    def conn(self) -> S3Connection:
        """The store's requests (boto3 is imported here, on first use)."""
        if self._conn is None:
            from desync_store_s3.client import S3Connection

            self._conn = S3Connection(self.s3, self.options,
                                      CredentialsResolver(self.credentials), str(self))
        return self._conn

    def close(self) -> None:
        """Forget the connection (the pooled client stays shared in the process)."""
        self._conn = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (type(self), str(self.location), self.options, self.credentials))


class S3ChunkStore(_S3Base, KeyValueChunkStore):
    """Chunks in an S3 bucket under a prefix.

    ``has_chunk`` is true only when ``HeadObject`` succeeds; any failure answers false,
    as desync does (a later read or write reports the cause).
    """

    #: Keys per ``ListObjectsV2`` page (S3's maximum).
    list_page_size = 1000
    #: A HEAD per chunk costs as much as a page of 1000 listed keys: writers list.
    lookup_by_listing = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None,
                 credentials: CredentialsEntry | None = None) -> None:
        KeyValueChunkStore.__init__(self, location, options)
        self._init_s3(credentials)

    def _object(self, key: str) -> str:
        return self.s3.prefix + key

    def _read(self, key: str) -> bytes:
        name = self._object(key)
        what = f"reading {name}"
        response = self.conn.call("get_object", what, wrap=False, Key=name)
        return self.conn.read_body(response, what, wrap=False)

    def _exists(self, key: str) -> bool:
        try:
            self.conn.call("head_object", "looking up", wrap=False, Key=self._object(key))
        except Exception:  # desync: any error of StatObject means "no"
            return False
        return True

    def _write(self, key: str, data: bytes | bytearray | memoryview) -> None:
        # PutObject is atomic: the object appears whole or not at all.
        name = self._object(key)
        self.conn.call("put_object", f"writing {name}", wrap=False, Key=name,
                       Body=data if isinstance(data, bytes) else bytes(data),
                       ContentType=CHUNK_CONTENT_TYPE)

    def _list(self) -> Iterator[str]:
        prefix = self.s3.prefix
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": self.list_page_size}
            if token:
                params["ContinuationToken"] = token
            page = self.conn.call("list_objects_v2", f"listing {prefix or '/'}", wrap=False,
                                  **params)
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.startswith(prefix):
                    yield key[len(prefix):]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _delete(self, key: str) -> None:
        # DeleteObject succeeds for missing keys; the store contract wants "missing".
        if not self._exists(key):
            raise FileNotFoundError(key)
        self._delete_object(key)

    def _delete_object(self, key: str) -> None:
        name = self._object(key)
        self.conn.call("delete_object", f"deleting {name}", wrap=False, Key=name)

    def prune(self, keep: set[bytes]) -> int:
        """Delete every chunk not in ``keep`` (one ``DeleteObject`` each, no lookup
        first: the listing just saw them); returns how many were deleted."""
        doomed = [cid for cid in self.iter_chunk_ids() if cid not in keep]
        for chunk_id in doomed:
            try:
                self._delete_object(self.key(chunk_id))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise os_error(exc, self, "removing", chunk_id) from None
        return len(doomed)


class S3IndexStore(_S3Base, WritableIndexStore):
    """Index files in an S3 bucket under a prefix (``s3+http://host/bucket/dir/``)."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None,
                 credentials: CredentialsEntry | None = None) -> None:
        WritableIndexStore.__init__(self, location, options)
        self._init_s3(credentials)

    def _object(self, name: str) -> str:
        return self.s3.prefix + check_index_name(name)

    def get_index(self, name: str) -> bytes:
        key = self._object(name)
        what = f"reading {key}"
        try:
            response = self.conn.call("get_object", what, Key=key)
            return self.conn.read_body(response, what)
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"index {name} does not exist in store {self.location}") from None

    def iter_index(self, name: str) -> Iterator[bytes]:
        """Streamed: readers stop at the first thing that cannot be an index."""
        key = self._object(name)
        what = f"reading {key}"
        try:
            response = self.conn.call("get_object", what, Key=key)
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"index {name} does not exist in store {self.location}") from None
        body = response["Body"]
        try:
            yield from body.iter_chunks(256 * 1024)
        except Exception as exc:
            raise self.conn.translate(exc, what) from None
        finally:
            body.close()

    def has_index(self, name: str) -> bool:
        try:
            self.conn.call("head_object", f"looking up {name}", Key=self._object(name))
        except FileNotFoundError:
            return False
        return True

    def store_index(self, name: str, data: bytes) -> None:
        key = self._object(name)
        self.conn.call("put_object", f"writing {key}", Key=key, Body=bytes(data),
                       ContentType=INDEX_CONTENT_TYPE)


__all__ = ["CHUNK_CONTENT_TYPE", "INDEX_CONTENT_TYPE", "S3ChunkStore", "S3IndexStore"]
