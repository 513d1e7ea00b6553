"""The HTTP stores pass the core's store contracts against live servers on 127.0.0.1.

Each test gets a fresh local directory served by a writable chunk-server (or
index-server) running in this process; ``put_raw``/``get_raw`` touch that directory
directly, so the client store is checked against what really lands on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_http_support import chunk_server_in_process, index_server_in_process

from desync_core.plugin_api import ChunkStore, Context, IndexStore, load_config
from desync_core.testing import (
    IndexStoreContract,
    LocalDirectoryRaw,
    WritableChunkStoreContract,
    open_chunk_store,
    open_index_store,
)
from desync_store_http.client import HTTPChunkStore, HTTPIndexStore


class TestHTTPChunkStore(LocalDirectoryRaw, WritableChunkStoreContract):
    """Compressed chunks through ``chunk-server -w`` over a local store."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ChunkStore]:
        self.base = tmp_path / "store"
        self.base.mkdir()
        with chunk_server_in_process(stores=[str(self.base)], writable=True) as (url, _):
            store = open_chunk_store(url + "/")
            assert isinstance(store, HTTPChunkStore)
            yield store
            store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)  # the server's upstream store

    def test_prune_is_not_supported(self, store: ChunkStore) -> None:
        """HTTP stores cannot list chunks, so prune names the store and refuses."""
        from desync_core.plugin_api import StoreError

        with pytest.raises(StoreError, match="does not support pruning"):
            Context().open_prunable(str(store))


class TestUncompressedHTTPChunkStore(LocalDirectoryRaw, WritableChunkStoreContract):
    """Uncompressed chunks: ``chunk-server -w -u`` over an ``uncompressed`` local store,
    read by a client whose store options say ``uncompressed: true``."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ChunkStore]:
        self.base = tmp_path / "raw"
        self.base.mkdir()
        config = tmp_path / "config.json"
        options = {"uncompressed": True}
        # One config for both sides: the server's upstream directory and, by glob, the
        # server's URL whatever port it gets.
        config.write_text(json.dumps({"store-options": {str(self.base): options,
                                                        "http://127.0.0.1:*": options}}))
        ctx = Context(config=load_config(str(config)))
        with chunk_server_in_process(ctx, stores=[str(self.base)], writable=True,
                                     uncompressed=True) as (url, _):
            store = open_chunk_store(url, ctx)
            assert store.codec.extension == ""
            yield store
            store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)  # the server's upstream store



class TestHTTPIndexStore(IndexStoreContract):
    """Index files through ``index-server -w`` over a local directory."""

    @pytest.fixture
    def index_store(self, tmp_path: Path) -> Iterator[IndexStore]:
        self.base = tmp_path / "indexes"
        self.base.mkdir()
        with index_server_in_process(str(self.base), writable=True) as (url, _):
            store = open_index_store(url + "/")
            assert isinstance(store, HTTPIndexStore)
            yield store
            store.close()

    def put_raw_index(self, store: IndexStore, name: str, data: bytes) -> None:
        (self.base / name).write_bytes(data)

    def test_written_index_lands_in_directory(self, index_store: IndexStore) -> None:
        """store_index writes the file the index server's directory holds."""
        data = self.sample_index()
        index_store.store_index("d.caibx", data)  # type: ignore[attr-defined]
        assert (self.base / "d.caibx").read_bytes() == data
