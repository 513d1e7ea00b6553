"""Fast paths follow declared capabilities, not built-in types: a third-party store
(the example ``flat://`` plugin, written against the public surface) that declares
``fork_safe``, ``is_local`` and ``local_chunk_file`` gets extract's forked workers and
batched direct reads; one that declares nothing gets neither, and both extract the
same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desync_core.context import Context
from desync_core.ops.extract import DirectFetcher, StoreBatches, assembly_processes, open_target
from desync_core.stores.base import KeyValueChunkStore
from desync_core.workers import default_workers


@pytest.fixture
def flat_store(tmp_path: Path, ok) -> tuple[Path, Path, bytes]:  # type: ignore[no-untyped-def]
    data = os.urandom(600_000) + bytes(200_000) + os.urandom(300_000)
    (tmp_path / "blob").write_bytes(data)
    ok("make", "-s", f"flat://{tmp_path}/flat", tmp_path / "blob.caibx", tmp_path / "blob")
    return tmp_path / "flat", tmp_path / "blob.caibx", data


def test_declared_capabilities_enable_the_fast_paths(flat_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    flat, index_path, _ = flat_store
    ctx = Context()
    index = ctx.read_index(str(index_path))
    source = ctx.open_source([f"flat://{flat}"], None, index.digest)
    direct = DirectFetcher.for_source(source, index)
    assert direct is not None
    target = open_target(index, str(tmp_path / "out"), in_place=True, create_new=True)
    try:
        batches = StoreBatches.for_assembler(direct, index, target)
        assert batches is not None
        assert batches.chunk_file is not None  # chunk files read directly
    finally:
        os.close(target.fd)
    if default_workers() > 1:
        assert assembly_processes(source, 10, []) == default_workers()


def test_undeclared_capabilities_take_the_safe_paths(flat_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     monkeypatch) -> None:
    flat, index_path, data = flat_store
    from desync_store_example.store import FlatChunkStore

    monkeypatch.setattr(FlatChunkStore, "fork_safe", False)
    monkeypatch.setattr(FlatChunkStore, "returns_stored_bytes", False)
    monkeypatch.setattr(FlatChunkStore, "local_chunk_file", KeyValueChunkStore.local_chunk_file)
    ctx = Context()
    index = ctx.read_index(str(index_path))
    source = ctx.open_source([f"flat://{flat}"], None, index.digest)
    assert DirectFetcher.for_source(source, index) is None
    assert assembly_processes(source, 10, []) == 1
    from desync_core.ops.extract import extract

    extract(index, str(tmp_path / "out"), source)
    assert (tmp_path / "out").read_bytes() == data


def test_fast_path_output_equals_local_store(flat_store, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    flat, index_path, data = flat_store
    ok("extract", "-s", f"flat://{flat}", index_path, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
