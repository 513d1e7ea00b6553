"""The shared store contract against real registries: anonymous, behind token auth,
with uncompressed chunks (tags without an extension) and with encrypted chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS
from oci_support import RawRegistry, RegistryServer, TokenServer

from desync_core.plugin_api import ChunkStore, Context
from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    PrunableChunkStoreContract,
    encrypted_context,
    open_chunk_store,
)
from desync_store_oci.store import OCIChunkStore


class _RawAccess:
    """put_raw/get_raw through :class:`RawRegistry` (plain HTTP, the spec's format)."""

    raw: RawRegistry

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        self.raw.put(key.rsplit("/", 1)[1], data)

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        return self.raw.get(key.rsplit("/", 1)[1])


class TestAnonymousRegistry(_RawAccess, PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, registry: RegistryServer, repository: Callable[[], str],
              no_credentials: pytest.MonkeyPatch) -> Iterator[ChunkStore]:
        repo = repository()
        self.raw = RawRegistry(registry.http_url, repo)
        store = open_chunk_store(registry.location(repo))
        assert isinstance(store, OCIChunkStore)
        yield store
        store.close()


class TestTokenAuthRegistry(_RawAccess, PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, token_registry: RegistryServer, token_server: TokenServer,
              repository: Callable[[], str], no_credentials: pytest.MonkeyPatch
              ) -> Iterator[ChunkStore]:
        repo = repository()
        self.raw = RawRegistry(
            token_registry.http_url, repo,
            lambda actions: "Bearer " + token_server.mint(f"repository:{repo}:{actions}",
                                                          "alice"))
        no_credentials.setenv("DESYNC_OCI_USERNAME", "alice")
        no_credentials.setenv("DESYNC_OCI_PASSWORD", USERS["alice"])
        store = open_chunk_store(token_registry.location(repo))
        yield store
        store.close()


class TestUncompressedChunks(_RawAccess, PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, registry: RegistryServer, repository: Callable[[], str],
              no_credentials: pytest.MonkeyPatch) -> Iterator[ChunkStore]:
        repo = repository()
        self.raw = RawRegistry(registry.http_url, repo)
        store = open_chunk_store(registry.location(repo),
                                 Context(overrides={"uncompressed": True}))
        assert store.codec.extension == ""
        yield store
        store.close()


class TestEncryptedChunks(_RawAccess, PrunableChunkStoreContract):
    """Encrypted stores (both algorithms, with and without compression): the blob is
    the encrypted storage form and the tag carries the codec's extension."""

    @pytest.fixture(params=["xchacha20-poly1305", "uncompressed-aes-256-gcm"])
    def store(self, request: pytest.FixtureRequest, tmp_path: Path, registry: RegistryServer,
              repository: Callable[[], str], no_credentials: pytest.MonkeyPatch
              ) -> Iterator[ChunkStore]:
        repo = repository()
        location = registry.location(repo)
        self.raw = RawRegistry(registry.http_url, repo)
        store = open_chunk_store(location, encrypted_context(tmp_path, location, request.param))
        assert store.codec.encrypted
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
        yield store
        store.close()

