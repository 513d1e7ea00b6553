"""extract's output preallocated on tmpfs during start-up (desync_core.ops.prealloc):
same bytes, same holes, nothing left behind on failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from extract_util import (
    assert_error,
    chunk_path,
    hole_bytes,
    holes,
    make_blob,
    rand,
    temp_leftovers,
)

from desync_core.context import Context
from desync_core.index import Index
from desync_core.ops import prealloc
from desync_core.ops.extract import extract
from desync_core.testing.fixtures import CliResult

SHM = Path("/dev/shm")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh directory on tmpfs (removed afterwards)."""
    if not SHM.is_dir() or not prealloc.on_tmpfs(str(SHM)):
        pytest.skip("/dev/shm is not tmpfs here: preallocation does not apply")
    d = SHM / f"desync-test-prealloc-{uuid.uuid4().hex}"
    d.mkdir()
    try:
        yield d
    finally:
        for p in d.rglob("*"):
            if p.is_file():
                p.unlink()
        for p in sorted(d.rglob("*"), reverse=True):
            p.rmdir()
        d.rmdir()


def _blob(tmp_path: Path) -> tuple[Path, Path, bytes, Index]:
    """~12 MiB: random data around a 2 MiB run of zeros (null chunks)."""
    data = rand(1, 6 << 20) + bytes(2 << 20) + rand(2, 4 << 20)
    store = tmp_path / "store"
    _, index, idx = make_blob(tmp_path, "blob", data, store, chunk_size="16:64:256")
    return index, store, data, idx


def test_blob_length_from_the_index_tail(tmp_path: Path) -> None:
    index, _, data, idx = _blob(tmp_path)
    assert prealloc.blob_length(str(index)) == len(data) == idx.length
    junk = tmp_path / "junk"
    junk.write_bytes(rand(3, 4096))
    assert prealloc.blob_length(str(junk)) is None


def test_preallocated_output_is_identical_and_sparse(tmp_path: Path, shm_dir: Path,
        ok: Callable[..., CliResult]) -> None:
    index, store, data, idx = _blob(tmp_path)
    plain = tmp_path / "plain"  # not tmpfs: written without preallocation
    ok("extract", "-s", store, index, plain)
    out = shm_dir / "out"
    started = prealloc.start(str(index), str(out))
    assert started is not None
    started.wait()
    assert started.fd >= 0
    assert started.allocated == len(data)  # all allocated
    assert list(shm_dir.iterdir()) == []  # (unnamed until adopted)
    ctx = Context()
    source = ctx.open_source([str(store)], None, idx.digest, max_chunk_size=idx.chunk_size_max)
    try:
        stats = extract(idx, str(out), source, workers=2, preallocated=started)
    finally:
        source.close()
    assert started.fd == -1  # adopted
    assert stats.chunks_total == len(idx)
    assert out.read_bytes() == data == plain.read_bytes()
    # The zero run is a hole, as without preallocation (page-aligned inside the run).
    zero_start, zero_end = 6 << 20, 8 << 20
    assert any(a <= zero_start + 256 * 1024 and b >= zero_end - 256 * 1024
               for a, b in holes(out))
    assert hole_bytes(out) >= (2 << 20) - 512 * 1024
    assert os.stat(out).st_blocks * 512 <= len(data) - (2 << 20) + 512 * 1024
    assert sorted(p.name for p in shm_dir.iterdir()) == ["out"]


def test_cli_extract_on_tmpfs(tmp_path: Path, shm_dir: Path,
        ok: Callable[..., CliResult]) -> None:
    index, store, data, _ = _blob(tmp_path)
    out = shm_dir / "out"
    ok("extract", "-s", store, index, out)
    assert out.read_bytes() == data
    assert hole_bytes(out) >= (2 << 20) - 512 * 1024
    assert temp_leftovers(shm_dir) == []
    assert sorted(p.name for p in shm_dir.iterdir()) == ["out"]


def test_failed_run_leaves_nothing(tmp_path: Path, shm_dir: Path,
        cli: Callable[..., CliResult]) -> None:
    index, store, _, idx = _blob(tmp_path)
    chunk_path(store, idx.ids[32 * 5 : 32 * 6]).unlink()
    result = cli("extract", "-s", store, index, shm_dir / "out")
    assert_error(result, result.code, "chunk")
    assert result.code != 0
    assert list(shm_dir.iterdir()) == []


def test_in_place_and_seeds_are_not_preallocated(tmp_path: Path, shm_dir: Path,
        ok: Callable[..., CliResult]) -> None:
    """-k writes the existing file; it keeps its content where it was right."""
    index, store, data, _ = _blob(tmp_path)
    out = shm_dir / "out"
    out.write_bytes(data[: 1 << 20])
    ok("extract", "-k", "-s", store, index, out)
    assert out.read_bytes() == data
