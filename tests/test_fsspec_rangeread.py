"""The core's range reader (``desync_core.rangeread``) on its own: bounds, partial
reads, the LRU bound, and a failed fetch that is not remembered (the next read tries
the store again)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from desync_core import api
from desync_core.config import load_config
from desync_core.context import Context
from desync_core.errors import ChunkMissingError
from desync_core.index import Index
from desync_core.rangeread import RangeReader
from desync_core.testing.fixtures import run_desync


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Index]:
    root = tmp_path_factory.mktemp("rangeread")
    data = os.urandom(500_000)
    (root / "blob").write_bytes(data)
    run_desync("make", "-s", root / "store", "-m", "2:8:32", root / "blob.caibx",
               root / "blob")
    return root, data, Index.from_bytes((root / "blob.caibx").read_bytes())


def open_reader(store: Path, index: Index, **kwargs: int) -> RangeReader:
    ctx = Context(config=load_config(None))
    source = ctx.open_source([str(store)], None, index.digest,
                             max_chunk_size=index.chunk_size_max)
    return RangeReader(index, source, **kwargs)


def test_bounds_and_partial_reads(blob: tuple[Path, bytes, Index]) -> None:
    root, data, index = blob
    reader = open_reader(root / "store", index)
    assert reader.length == len(data)
    assert reader.read(0, 0) == b""
    assert reader.read(len(data), 10) == b""
    assert reader.read(len(data) + 5, 10) == b""
    assert reader.read(len(data) - 3, 10) == data[-3:]
    buf = bytearray(1000)
    assert reader.readinto(len(data) - 100, memoryview(buf)) == 100
    assert bytes(buf[:100]) == data[-100:]
    with pytest.raises(ValueError, match="negative"):
        reader.read(-1, 10)
    first = index.chunk(0)
    assert reader.chunk_range(0, first.size) == (0, 1)
    assert reader.chunk_range(first.size - 1, 2) == (0, 2)
    assert reader.read(0, len(data)) == data
    reader.close()
    reader.source.close()


def test_the_cache_stays_bounded(blob: tuple[Path, bytes, Index]) -> None:
    root, data, index = blob
    reader = open_reader(root / "store", index, cache_bytes=64 << 10, concurrency=1)
    assert reader.read(0, len(data)) == data  # a read larger than the cache still works
    assert reader.cached_bytes <= max(64 << 10, index.chunk_size_max)
    before = reader.fetches
    assert reader.read(len(data) - 10, 10) == data[-10:]  # the last chunk: still cached
    assert reader.fetches == before
    assert reader.read(0, 10) == data[:10]  # evicted long ago: fetched again
    assert reader.fetches == before + 1
    reader.source.close()


def test_a_failed_fetch_is_retried_by_the_next_read(blob: tuple[Path, bytes, Index],
                                                    tmp_path: Path) -> None:
    root, data, index = blob
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    victim = index.chunk(5).id.hex()
    path = store / victim[:4] / f"{victim}.cacnk"
    saved = tmp_path / "saved"
    path.rename(saved)
    reader = open_reader(store, index)
    start = index.chunk(5).start
    with pytest.raises(ChunkMissingError):
        reader.read(start, 10)
    saved.rename(path)  # the chunk arrives (a mirror caught up)
    assert reader.read(start, 10) == data[start:start + 10]
    reader.source.close()


def test_api_open_store_sources_work_too(blob: tuple[Path, bytes, Index]) -> None:
    """Any verified chunk reader will do, e.g. the Python API's ``open_store``."""
    root, data, index = blob
    source = api.open_store(str(root / "store"))
    reader = RangeReader(index, source)
    assert reader.read(123_456, 70_000) == data[123_456:193_456]
    reader.close()
    source.close()
