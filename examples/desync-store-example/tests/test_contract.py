"""The example store passes the shared contract suite, opened through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.plugin_api import ChunkStore
from desync_core.testing import PrunableChunkStoreContract, open_chunk_store


class TestFlatChunkStore(PrunableChunkStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ChunkStore:
        return open_chunk_store(f"flat://{tmp_path}/chunks")

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        path = Path(store.directory) / key.partition("/")[2]  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        path = Path(store.directory) / key.partition("/")[2]  # type: ignore[attr-defined]
        return path.read_bytes() if path.exists() else None


def test_cli_round_trip(tmp_path: Path) -> None:
    """make into flat:// and extract back through the installed CLI."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(300_000) + bytes(200_000))

    def desync(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "desync_core", *args], check=True,
                       capture_output=True)

    store = f"flat://{tmp_path}/chunks"
    desync("make", "-s", store, str(tmp_path / "b.caibx"), str(blob))
    desync("extract", "-s", store, str(tmp_path / "b.caibx"), str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    assert all(not name.startswith(".tmp") for name in os.listdir(tmp_path / "chunks"))
