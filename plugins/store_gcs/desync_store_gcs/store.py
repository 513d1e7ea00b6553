"""``gs://bucket[/prefix]`` chunk and index stores (``remote.md`` §7 and §9).

A chunk is the object ``<prefix><4hex>/<id><ext>`` (content type ``application/zstd``),
an index the object ``<prefix><name>`` (``application/octet-stream``). The chunk store
implements the key-value primitives only; keys, the codec (compression per the
``uncompressed`` option and any other storage layer the core adds), listing and pruning
come from :class:`KeyValueChunkStore`. Requests go through :class:`BucketClient`.
"""

from __future__ import annotations

from collections.abc import Iterator

from desync_core.plugin_api import (
    IndexNotFoundError,
    KeyValueChunkStore,
    StoreLocation,
    StoreOptions,
    WritableIndexStore,
    check_index_name,
)
from desync_store_gcs.client import (
    CHUNK_CONTENT_TYPE,
    INDEX_CONTENT_TYPE,
    BucketClient,
    split_location,
)


class GCSChunkStore(KeyValueChunkStore):
    """Chunks in a Google Cloud Storage bucket, under an optional prefix.

    Readable, writable (``make -s``, ``chop``, ``cache -c``, a ``-c`` cache), prunable
    and verifiable (``prune``, ``verify -r``: objects are listed under the prefix and
    only names of exactly the form ``<prefix><4hex>/<id><ext>`` count as chunks).
    """

    #: A lookup per chunk costs as much as a page of listed names: writers list.
    lookup_by_listing = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.bucket, self.prefix = split_location(location.raw)
        # The core's messages name the chunk and the store: don't repeat the object.
        self.client = BucketClient(self.bucket, self.options, location.raw,
                                   name_objects=False)

    def _read(self, key: str) -> bytes:
        return self.client.download(self.prefix + key)

    def _exists(self, key: str) -> bool:
        return self.client.exists(self.prefix + key)

    def _write(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self.client.upload(self.prefix + key, data, CHUNK_CONTENT_TYPE)

    def _list(self) -> Iterator[str]:
        cut = len(self.prefix)
        for name in self.client.list(self.prefix):
            yield name[cut:]

    def _delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def close(self) -> None:
        self.client.close()


class GCSIndexStore(WritableIndexStore):
    """Index files ``<prefix><name>`` in a bucket: ``gs://bucket/dir/x.caibx`` is the
    object ``dir/x.caibx`` of bucket ``bucket``."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.bucket, self.prefix = split_location(location.raw)
        self.client = BucketClient(self.bucket, self.options, location.raw)

    def _name(self, name: str) -> str:
        return self.prefix + check_index_name(name)

    def get_index(self, name: str) -> bytes:
        obj = self._name(name)
        try:
            return self.client.download(obj)
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"index {name} not found in gs://{self.bucket}/{self.prefix}") from None

    def iter_index(self, name: str) -> Iterator[bytes]:
        """Streamed: readers stop at the first thing that cannot be an index."""
        try:
            yield from self.client.iter_download(self._name(name))
        except FileNotFoundError:
            raise IndexNotFoundError(
                f"index {name} not found in gs://{self.bucket}/{self.prefix}") from None

    def has_index(self, name: str) -> bool:
        return self.client.exists(self._name(name))

    def store_index(self, name: str, data: bytes) -> None:
        self.client.upload(self._name(name), data, INDEX_CONTENT_TYPE)

    def close(self) -> None:
        self.client.close()


__all__ = ["GCSChunkStore", "GCSIndexStore"]
