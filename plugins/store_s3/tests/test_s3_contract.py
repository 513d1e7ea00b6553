"""desync-store-s3 against the shared store contract suites, on a real SeaweedFS."""

from __future__ import annotations

from typing import Any

import pytest
from s3_support import get_raw

from desync_core.testing import (
    IndexStoreContract,
    PrunableChunkStoreContract,
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
