"""The shared store contracts against gs:// stores on the storage emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gcs_support import Bucket

from desync_core.plugin_api import ChunkStore, Context, IndexStore
from desync_core.testing import (
    IndexStoreContract,
    PrunableChunkStoreContract,
    open_chunk_store,
    open_index_store,
)

#: (prefix in the location, prefix of the object names, store options)
LAYOUTS = {
    "bucket-root": ("", "", {}),
    "prefix": ("/some/prefix/", "some/prefix/", {}),
    "uncompressed": ("/un", "un/", {"uncompressed": True}),
}


class TestGCSChunkStore(PrunableChunkStoreContract):
    """Chunk stores at the bucket root, under a prefix, and uncompressed."""

    @pytest.fixture(params=sorted(LAYOUTS))
    def store(self, request: pytest.FixtureRequest, bucket: Bucket) -> Iterator[ChunkStore]:
        location, names, overrides = LAYOUTS[request.param]
        self.bucket, self.names = bucket, names
        store = open_chunk_store(f"gs://{bucket.name}{location}", Context(overrides=overrides))
        yield store
        store.close()

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        self.bucket.put(self.names + key, data)

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        return self.bucket.get(self.names + key)


class TestGCSIndexStore(IndexStoreContract):
    """Index stores under a prefix of a bucket."""

    @pytest.fixture
    def index_store(self, bucket: Bucket) -> Iterator[IndexStore]:
        self.bucket = bucket
        store = open_index_store(f"gs://{bucket.name}/indexes/")
        yield store
        store.close()

    def put_raw_index(self, store: IndexStore, name: str, data: bytes) -> None:
        self.bucket.put("indexes/" + name, data)
