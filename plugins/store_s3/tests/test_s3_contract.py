"""desync-store-s3 against the shared store contract suites, on a real SeaweedFS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from s3_support import get_raw

from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    IndexStoreContract,
    PrunableChunkStoreContract,
    encrypted_context,
    open_chunk_store,
    open_index_store,
)
from desync_store_s3.store import S3ChunkStore, S3IndexStore


class TestS3ChunkStore(PrunableChunkStoreContract):
    """Chunks under a prefix of a bucket: ``s3+http://host/bucket/<prefix>/some/prefix``."""

    @pytest.fixture
    def store(self, s3_env: None, store_url: str) -> S3ChunkStore:
        store = open_chunk_store(store_url + "/some/prefix")
        assert isinstance(store, S3ChunkStore)
        return store

    @pytest.fixture(autouse=True)
    def _admin(self, admin: Any) -> None:
        self.admin = admin

    def put_raw(self, store: Any, key: str, data: bytes) -> None:
        self.admin.put_object(Bucket=store.s3.bucket, Key=store.s3.prefix + key, Body=data)

    def get_raw(self, store: Any, key: str) -> bytes | None:
        return get_raw(self.admin, store.s3.bucket, store.s3.prefix + key)


class TestS3IndexStore(IndexStoreContract):
    """Index files under a prefix: ``s3+http://host/bucket/<prefix>/indexes/``."""

    @pytest.fixture
    def index_store(self, s3_env: None, store_url: str) -> S3IndexStore:
        store = open_index_store(store_url + "/indexes/")
        assert isinstance(store, S3IndexStore)
        return store

    @pytest.fixture(autouse=True)
    def _admin(self, admin: Any) -> None:
        self.admin = admin

    def put_raw_index(self, store: Any, name: str, data: bytes) -> None:
        self.admin.put_object(Bucket=store.s3.bucket, Key=store.s3.prefix + name, Body=data)


class TestEncryptedS3ChunkStore(TestS3ChunkStore):
    """Encrypted S3 stores (both algorithms, with and without compression): objects hold
    the encrypted storage form under keys with the codec's extension."""

    @pytest.fixture(params=["xchacha20-poly1305", "uncompressed-aes-256-gcm"])
    def store(self, request: pytest.FixtureRequest, s3_env: None, store_url: str,  # type: ignore[override]
              tmp_path: Path) -> S3ChunkStore:
        location = f"{store_url}/encrypted-{request.param}"
        store = open_chunk_store(location, encrypted_context(tmp_path, location, request.param))
        assert isinstance(store, S3ChunkStore)
        assert store.codec.encrypted
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
        return store

    def test_reopen_from_str(self, store: Any) -> None:
        # Reopened by name alone, the config file's key is gone: a plain store.
        again = open_chunk_store(str(store))
        assert type(again) is type(store)
        assert not again.codec.encrypted
