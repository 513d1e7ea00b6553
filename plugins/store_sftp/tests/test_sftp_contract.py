"""The SFTP stores pass the core's store contracts against the real sshd.

The server runs on this machine, so ``put_raw``/``get_raw`` touch the store's directory
directly: what the store writes is checked on disk, and what is put on disk must read
back through the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.plugin_api import (
    Chunk,
    ChunkStore,
    Context,
    IndexStore,
    StoreError,
    load_config,
)
from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    IndexStoreContract,
    LocalDirectoryRaw,
    PrunableChunkStoreContract,
    encrypted_context,
    open_chunk_store,
    open_index_store,
    sample_chunk,
)
from desync_core.testing.servers import SSHServer
from desync_store_sftp.store import SFTPChunkStore, SFTPIndexStore

ALIAS = SSHServer.alias


class TestSFTPChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    """Compressed chunks (``.cacnk``) through the ``desync-test`` Host alias."""

    @pytest.fixture
    def store(self, remote: tuple[Path, str]) -> Iterator[ChunkStore]:
        self.base, url = remote
        store = open_chunk_store(url)
        assert isinstance(store, SFTPChunkStore)
        yield store
        store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)

    def test_writes_leave_no_temporary_files(self, store: SFTPChunkStore) -> None:
        """After writes only final chunk names remain (the temp name was renamed)."""
        for seed in range(5):
            store.store_chunk(Chunk(*sample_chunk(seed + 100)))
        names = sorted(p.name for p in self.base.rglob("*") if p.is_file())
        assert len(names) == 5
        assert all(len(n) == 64 + len(".cacnk") and n.endswith(".cacnk") for n in names)

    def test_temporary_and_foreign_files_are_not_chunks(self, store: SFTPChunkStore) -> None:
        """desync's temp names (``<final><digits>``) and other formats are not listed,
        and prune leaves them alone."""
        chunk_id, data = sample_chunk(110)
        store.store_chunk(Chunk(chunk_id, data))
        key = store.key(chunk_id)
        self.put_raw(store, key + "12345", b"partial")
        self.put_raw(store, key[:-len(".cacnk")], data)  # an uncompressed-format chunk
        assert list(store.iter_chunk_ids()) == [chunk_id]
        store.prune(set())
        assert list(store.iter_chunk_ids()) == []
        assert self.get_raw(store, key + "12345") == b"partial"
        assert self.get_raw(store, key[:-len(".cacnk")]) == data

    def test_write_error_names_store_and_leaves_nothing(self, store: SFTPChunkStore) -> None:
        """A prefix that is a file, not a directory: the write fails with a one-line
        store error and no file appears under the chunk's name."""
        chunk_id, data = sample_chunk(111)
        prefix = self.base / chunk_id.hex()[:4]
        prefix.write_bytes(b"in the way")
        with pytest.raises(StoreError, match=f"store {store}: storing chunk {chunk_id.hex()}"):
            store.store_chunk(Chunk(chunk_id, data))
        assert prefix.read_bytes() == b"in the way"
        assert not store.has_chunk(chunk_id)

    def test_large_chunk_round_trip(self, store: SFTPChunkStore) -> None:
        """A chunk bigger than one READ/WRITE request (several pipelined requests)."""
        chunk_id, data = sample_chunk(112, 3_000_000)
        store.store_chunk(Chunk(chunk_id, data))
        assert bytes(store.get_chunk(chunk_id).data()) == data


class TestUncompressedSFTPChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    """``uncompressed: true`` from the config file: chunk files without extension."""

    @pytest.fixture
    def store(self, remote: tuple[Path, str], tmp_path: Path) -> Iterator[ChunkStore]:
        self.base, url = remote
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"store-options": {url: {"uncompressed": True}}}))
        store = open_chunk_store(url, Context(config=load_config(str(config))))
        assert store.codec.extension == ""
        yield store
        store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)




class TestSFTPIndexStore(IndexStoreContract):
    """Index files in a remote directory."""

    @pytest.fixture
    def index_store(self, tmp_path: Path) -> Iterator[IndexStore]:
        self.base = tmp_path / "indexes"
        self.base.mkdir()
        store = open_index_store(f"sftp://{ALIAS}{self.base}/")
        assert isinstance(store, SFTPIndexStore)
        yield store
        store.close()

    def put_raw_index(self, store: IndexStore, name: str, data: bytes) -> None:
        (self.base / name).write_bytes(data)

    def test_written_index_lands_in_directory(self, index_store: SFTPIndexStore) -> None:
        """store_index writes exactly the file, and no temporary file stays behind."""
        data = self.sample_index()
        index_store.store_index("d.caibx", data)
        assert (self.base / "d.caibx").read_bytes() == data
        assert os.listdir(self.base) == ["d.caibx"]

    def test_missing_base_is_failed_to_stat(self, tmp_path: Path) -> None:
        """desync's message for a base directory that does not exist."""
        store = open_index_store(f"sftp://{ALIAS}{tmp_path}/nowhere/")
        with pytest.raises(StoreError, match=f"failed to stat '{tmp_path}/nowhere/'"):
            store.get_index("x.caibx")


class TestGetChunksInGroups(LocalDirectoryRaw):
    """get_chunks reads groups of chunks per session in two round trips; the answers
    are those of get_chunk, in order, across group boundaries and odd cases."""

    def test_many_with_missing_and_large(self, remote: tuple[Path, str]) -> None:
        from desync_core.plugin_api import chunk_key

        self.base, url = remote
        store = open_chunk_store(url)
        assert isinstance(store, SFTPChunkStore)
        ids = []
        for seed in range(40):
            chunk_id, data = sample_chunk(seed + 500, 5000)
            if seed % 7 != 3:  # some are missing
                store.store_chunk(Chunk(chunk_id, data))
            ids.append(chunk_id)
        big_id = sample_chunk(999)[0]  # a file larger than one READ answers
        big = os.urandom(700_000)
        self.put_raw(store, chunk_key(big_id, store.codec.extension), big)
        empty_id = sample_chunk(998)[0]
        self.put_raw(store, chunk_key(empty_id, store.codec.extension), b"")
        wanted = [*ids[:20], big_id, empty_id, *ids[20:]]
        got = list(store.get_chunks(wanted))
        assert [cid for cid, _ in got] == wanted
        for chunk_id, chunk in got:
            raw = self.get_raw(store, chunk_key(chunk_id, store.codec.extension))
            if raw is None:
                assert chunk is None
            else:
                assert chunk is not None
                assert bytes(chunk.encoded(store.codec)) == raw
        store.close()

    def test_error_other_than_missing_is_raised(self, remote: tuple[Path, str]) -> None:
        """A chunk path that is a directory: a store error naming the store, and the
        session is still usable afterwards."""
        from desync_core.plugin_api import chunk_key

        self.base, url = remote
        store = open_chunk_store(url)
        good_id, data = sample_chunk(600)
        store.store_chunk(Chunk(good_id, data))
        bad_id = sample_chunk(601)[0]
        (self.base / chunk_key(bad_id, store.codec.extension)).mkdir(parents=True)
        with pytest.raises(StoreError, match=f"store {url}: reading"):
            list(store.get_chunks([good_id, bad_id]))
        assert [c is not None for _, c in store.get_chunks([good_id])] == [True]
        store.close()


class TestEncryptedSFTPChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    """Encrypted SFTP stores (both algorithms, with and without compression): files
    hold the encrypted storage form under names with the codec's extension."""

    @pytest.fixture(params=["xchacha20-poly1305", "uncompressed-aes-256-gcm"])
    def store(self, request: pytest.FixtureRequest, remote: tuple[Path, str],
              tmp_path: Path) -> Iterator[ChunkStore]:
        self.base, url = remote
        store = open_chunk_store(url, encrypted_context(tmp_path, url, request.param))
        assert store.codec.encrypted
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
        yield store
        store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)

    def test_reopen_from_str(self, store: ChunkStore) -> None:
        # Reopened by name alone, the config file's key is gone: a plain store.
        again = open_chunk_store(str(store))
        assert type(again) is type(store)
        assert not again.codec.encrypted
        again.close()
