"""The shared store contracts against gs:// stores on the storage emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gcs_support import Bucket

from desync_core.plugin_api import ChunkStore, Context, IndexStore
from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    IndexStoreContract,
    PrunableChunkStoreContract,
    encrypted_context,
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


class TestEncryptedGCSChunkStore(PrunableChunkStoreContract):
    """Encrypted gs:// stores (both algorithms, with and without compression): objects
    hold the encrypted storage form under names with the codec's extension."""

    @pytest.fixture(params=["xchacha20-poly1305", "uncompressed-aes-256-gcm"])
    def store(self, request: pytest.FixtureRequest, bucket: Bucket,
              tmp_path: Path) -> Iterator[ChunkStore]:
        self.bucket = bucket
        location = f"gs://{bucket.name}/encrypted"
        store = open_chunk_store(location, encrypted_context(tmp_path, location, request.param))
        assert store.codec.encrypted
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
        yield store
        store.close()

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        self.bucket.put("encrypted/" + key, data)

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        return self.bucket.get("encrypted/" + key)

    def test_reopen_from_str(self, store: ChunkStore) -> None:
        # Reopened by name alone, the config file's key is gone: a plain store.
        again = open_chunk_store(str(store))
        assert type(again) is type(store)
        assert not again.codec.encrypted
        again.close()
