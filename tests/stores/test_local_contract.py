"""The local store passes the shared store contracts (compressed and uncompressed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desync_core.config import load_config
from desync_core.context import Context
from desync_core.stores.base import ChunkStore, IndexStore
from desync_core.stores.local import LocalChunkStore
from desync_core.testing import (
    IndexStoreContract,
    LocalDirectoryRaw,
    PrunableChunkStoreContract,
    open_chunk_store,
    open_index_store,
)


class TestLocalChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return open_chunk_store(str(tmp_path / "store"))

    def test_no_temp_files_left(self, store: LocalChunkStore) -> None:
        from desync_core.stores.chunk import Chunk
        from desync_core.testing import sample_chunk

        chunk_id, data = sample_chunk(50)
        store.store_chunk(Chunk(chunk_id, data))
        names = [p.name for p in Path(store.base).rglob("*") if p.is_file()]
        assert names == [chunk_id.hex() + ".cacnk"]


class TestUncompressedLocalChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        base = tmp_path / "raw"
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"store-options": {str(base): {"uncompressed": True}}}))
        return open_chunk_store(str(base), Context(config=load_config(str(cfg))))

    def test_reopen_from_str(self, store: ChunkStore) -> None:
        # Reopening by name alone would lose the config file; check the codec instead.
        assert store.codec.extension == ""


class TestLocalIndexStore(IndexStoreContract):
    @pytest.fixture
    def index_store(self, tmp_path: Path) -> IndexStore:
        return open_index_store(str(tmp_path))

    def put_raw_index(self, store: IndexStore, name: str, data: bytes) -> None:
        (Path(store.location.path) / name).write_bytes(data)
