"""``untar`` in several processes (desync_core.archive.pipeline): same results, same errors.

``untar`` writes files in a forked writer and, for an index, fetches chunks in a forked
fetcher, both through a shared memory ring. The ``small_ring`` fixture shrinks the ring
and its blocks so that a small tree wraps it many times, the reading side waits for the
writer (flow control), chunks cross the end of the ring, large chunks go through a
buffer of their own and contents are split into pieces. Every result is compared with
the source tree and with extraction in one process; every error must be the one
sequential extraction reports, with what came before it written.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_util import Dir, File, Link, build, diff, snapshot

from desync_core.archive import pipeline
from desync_core.archive.base import DIR_END, ArchiveOptions, Node
from desync_core.archive.disk import DiskFormat, DiskWriter
from desync_core.context import Context
from desync_core.engine import can_fork
from desync_core.errors import (
    ArchiveFormatError,
    ChunkInvalidError,
    ChunkMissingError,
    DesyncError,
    StoreError,
)
from desync_core.ops.archive import untar


@pytest.fixture
def small_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 256 KiB ring in 16 KiB blocks; chunks over 24 KiB are fetched into buffers."""
    if not can_fork():
        pytest.skip("other threads are running in the test process: untar would not fork")
    monkeypatch.setattr(pipeline.limits, "RING_SIZE", 256 << 10)
    monkeypatch.setattr(pipeline.limits, "BLOCK_MAX", 16 << 10)
    monkeypatch.setattr(pipeline.limits, "DIRECT_MAX", 24 << 10)
    monkeypatch.setattr(pipeline.limits, "GROUP_BYTES", 32 << 10)
    monkeypatch.setattr(pipeline.limits, "BATCH_BYTES", 48 << 10)


def many_files(root: Path, *, count: int = 400, seed: int = 1) -> Path:
    """Directories of files of all sizes (empty to 700 KiB, several times the small
    ring), symlinks, odd modes and mtimes."""
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    root.mkdir()
    for i in range(count):
        d = root / f"d{i // 60:02d}" / f"s{i // 20 % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 1, 100, 3000, 16_000, 40_000, 70_000])
        if i % 97 == 5:
            size = 700_000
        off = rng.randrange(0, len(block) - size) if size else 0
        path = d / f"f{i:04d}"
        path.write_bytes(block[off:off + size])
        os.chmod(path, rng.choice([0o644, 0o600, 0o755, 0o4755, 0o640]))
        os.utime(path, ns=((i + 1) * 1_000_000_007, (i + 1) * 1_000_000_007))
        if i % 50 == 0:
            os.symlink(f"f{i:04d}", d / f"l{i:04d}")
    return root


def written(root: Path) -> dict[str, dict[str, object]]:
    """A snapshot without the mtimes of the run (a directory gets its own when it is
    complete, a file after its content: after a failure some keep the time of the run;
    the test archives' times are all in the past)."""
    recent = time.time_ns() - 3600 * 10**9
    snap = snapshot(root)
    for info in snap.values():
        if info["mtime"] > recent:  # type: ignore[operator]
            info.pop("mtime")
    return snap


def sequential(tmp_path: Path, source: str, name: str, *, index: bool = False,
               store: Path | None = None) -> Path:
    """Extract in this process only (the reference)."""
    out = tmp_path / name
    untar(Context(), source, str(out), DiskFormat(), ArchiveOptions(), index=index,
          stores=[str(store)] if store else None, fork=False)
    return out


def test_untar_forks_here() -> None:
    # Otherwise the other tests here would compare sequential extraction with itself.
    assert can_fork(), "a thread is running in the test process"


def test_catar_through_a_small_ring(ok, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src")
    ok("tar", tmp_path / "a.catar", src)
    ok("untar", tmp_path / "a.catar", tmp_path / "out")
    assert diff(snapshot(src), snapshot(tmp_path / "out")) == []
    reference = sequential(tmp_path, str(tmp_path / "a.catar"), "ref")
    assert diff(snapshot(reference), snapshot(tmp_path / "out")) == []


def test_catar_from_stdin_through_a_small_ring(ok, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src", count=120)
    ok("tar", tmp_path / "a.catar", src)
    ok("untar", "-", tmp_path / "out", input=(tmp_path / "a.catar").read_bytes())
    assert diff(snapshot(src), snapshot(tmp_path / "out")) == []


@pytest.mark.parametrize("local", [True, False], ids=["local-store", "remote-like-store"])
def test_index_through_a_small_ring(ok, small_ring, tmp_path: Path, local: bool,  # type: ignore[no-untyped-def]
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # 2:8:32 KiB chunks: many cross the 256 KiB ring's end, some exceed DIRECT_MAX.
    src = many_files(tmp_path / "src")
    store = tmp_path / "store"
    store.mkdir()
    ok("tar", "-i", "-s", store, "-m", "2:8:32", tmp_path / "a.caidx", src)
    if not local:
        # The fetcher then runs -n fetches in threads, as for HTTP stores.
        from desync_core.stores.local import LocalChunkStore

        monkeypatch.setattr(LocalChunkStore, "is_local", False)
    ok("untar", "-i", "-n", "3", "-s", store, tmp_path / "a.caidx", tmp_path / "out")
    assert diff(snapshot(src), snapshot(tmp_path / "out")) == []


def test_one_process_when_threads_run(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src", count=60)
    ok("tar", tmp_path / "a.catar", src)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not can_fork()
        ok("untar", tmp_path / "a.catar", tmp_path / "out")
    finally:
        stop.set()
        thread.join()
    assert diff(snapshot(src), snapshot(tmp_path / "out")) == []


# -- errors ---------------------------------------------------------------------------------


def _archive(tmp_path: Path) -> Path:
    """a (200 KiB), b/ (a directory), c: more than one batch and several ring blocks."""
    big = random.Random(3).randbytes(200_000)
    files = [(f"f{i:03d}".encode(), File(bytes([i]) * 5000)) for i in range(40)]
    tree = Dir([(b"a", File(big)), (b"b", Dir(files)), (b"c", File(b"last\n")),
                (b"d", Link(b"c"))])
    path = tmp_path / "t.catar"
    path.write_bytes(build(tree))
    return path


def test_writer_error_stops_there(cli, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_text("in the way")
    result = cli("untar", _archive(tmp_path), out)
    assert result.code == 1, result.err
    assert result.err.strip().splitlines() == ["Error: b exists and is not a directory"]
    assert len((out / "a").read_bytes()) == 200_000  # before the error: written
    assert not (out / "c").exists()  # after it: not


@pytest.mark.parametrize("cut", [300_000, 230_000, 40])
def test_truncated_archive_keeps_what_came_before(cli, small_ring, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                  cut: int) -> None:
    path = _archive(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    result = cli("untar", path, tmp_path / "out")
    assert result.code == 6, result.err
    assert "archive is truncated" in result.err
    assert len(result.err.strip().splitlines()) == 1
    reference = tmp_path / "ref"
    with pytest.raises(ArchiveFormatError, match="archive is truncated"):
        sequential(tmp_path, str(path), "ref")
    # Both stop at the same place (the file being written when it ended is there in
    # part in both).
    assert diff(written(reference), written(tmp_path / "out")) == []


def _index(ok, tmp_path: Path) -> tuple[Path, Path, list[Path]]:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src", count=120)
    store = tmp_path / "store"
    store.mkdir()
    ok("tar", "-i", "-s", store, "-m", "2:8:32", tmp_path / "a.caidx", src)
    chunks = sorted(store.rglob("*.cacnk"))
    return tmp_path / "a.caidx", store, chunks


def _chunk_late_in_stream(index: Path, store: Path) -> Path:
    """A chunk file used once, in the second half of the stream."""
    from desync_core.index import Index

    idx = Index.from_bytes(index.read_bytes(), str(index))
    ids = [c.id for c in idx]
    for chunk_id in ids[len(ids) // 2:]:
        if ids.count(chunk_id) == 1:
            hexid = chunk_id.hex()
            return store / hexid[:4] / f"{hexid}.cacnk"
    raise AssertionError("no unique chunk")


def test_missing_chunk(ok, cli, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index, store, _ = _index(ok, tmp_path)
    victim = _chunk_late_in_stream(index, store)
    victim.unlink()
    result = cli("untar", "-i", "-s", store, index, tmp_path / "out")
    assert result.code == ChunkMissingError.exit_code == StoreError.exit_code, result.err
    assert f"chunk {victim.name[:64]} missing from store" in result.err
    assert len(result.err.strip().splitlines()) == 1
    with pytest.raises(ChunkMissingError):
        sequential(tmp_path, str(index), "ref", index=True, store=store)
    assert len(written(tmp_path / "out")) > 20  # what came before was written ...
    assert diff(written(tmp_path / "ref"), written(tmp_path / "out")) == []  # ... as before


def test_invalid_chunk(ok, cli, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index, store, chunks = _index(ok, tmp_path)
    victim = _chunk_late_in_stream(index, store)
    other = next(c for c in chunks if c != victim)
    shutil.copy(other, victim)
    result = cli("untar", "-i", "-s", store, index, tmp_path / "out")
    assert result.code == ChunkInvalidError.exit_code, result.err
    assert f"chunk id {victim.name[:64]} does not match its hash" in result.err
    with pytest.raises(ChunkInvalidError):
        sequential(tmp_path, str(index), "ref", index=True, store=store)
    assert diff(written(tmp_path / "ref"), written(tmp_path / "out")) == []


def test_repeated_chunks(ok, small_ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Identical files make identical chunks: the fetcher copies the ones still in the
    # ring instead of fetching them again (and fetches those that are not).
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    same = rng.randbytes(50_000)
    for i in range(60):
        (src / f"same{i:02d}").write_bytes(same)
        (src / f"other{i:02d}").write_bytes(rng.randbytes(rng.choice([100, 9000, 30_000])))
    store = tmp_path / "store"
    store.mkdir()
    ok("tar", "-i", "-s", store, "-m", "2:8:32", tmp_path / "a.caidx", src)
    from desync_core.index import Index

    ids = [c.id for c in Index.from_bytes((tmp_path / "a.caidx").read_bytes(), "a")]
    assert len(set(ids)) < len(ids) * 0.7  # many repeats, some beyond the ring
    ok("untar", "-i", "-s", store, tmp_path / "a.caidx", tmp_path / "out")
    assert diff(snapshot(src), snapshot(tmp_path / "out")) == []


def test_repeated_chunk_id_with_another_size_is_invalid(ok, cli, small_ring,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    # A hostile index names a chunk it listed before, with a different size: the
    # copy from the ring must not be taken for it.
    from desync_core.index import Index

    src = many_files(tmp_path / "src", count=40)
    store = tmp_path / "store"
    store.mkdir()
    ok("tar", "-i", "-s", store, "-m", "2:8:32", tmp_path / "a.caidx", src)
    idx = Index.from_bytes((tmp_path / "a.caidx").read_bytes(), "a")
    chunks = list(idx)
    first = chunks[1]
    later = next(c for c in chunks[3:] if c.size != first.size)
    k = chunks.index(later)
    ids = bytearray(idx.ids)
    ids[32 * k:32 * k + 32] = first.id
    idx.ids = bytes(ids)
    (tmp_path / "bad.caidx").write_bytes(idx.to_bytes())
    result = cli("untar", "-i", "-s", store, tmp_path / "bad.caidx", tmp_path / "out")
    assert result.code == ChunkInvalidError.exit_code, result.err
    assert first.id.hex() in result.err


# -- the pieces ---------------------------------------------------------------------------------


def test_a_writer_that_dies_is_an_error() -> None:
    writer = pipeline.ForkedWriter(lambda nodes: os._exit(3))
    with pytest.raises(DesyncError, match="writing process ended unexpectedly"):
        writer.run(iter([Node(0o40755), DIR_END]))


def test_a_failing_producer_lets_the_writer_finish_first(tmp_path: Path) -> None:
    def nodes() -> Iterator[object]:
        yield Node(0o40755)
        yield (b"x", b"x", 0o100644, os.geteuid(), os.getegid(), 10**18, b"data", 0, 4)
        raise ArchiveFormatError("broken after x")

    writer = pipeline.ForkedWriter(DiskWriter(str(tmp_path / "out"), ArchiveOptions()).write)
    with pytest.raises(ArchiveFormatError, match="broken after x"):
        writer.run(nodes())
    assert (tmp_path / "out" / "x").read_bytes() == b"data"


# (errors crossing processes: tests/engine/test_engine.py)


def test_disk_writer_takes_plain_files(tmp_path: Path) -> None:
    ids = (os.geteuid(), os.getegid())
    DiskWriter(str(tmp_path / "out"), ArchiveOptions()).write([
        Node(0o40755),
        (b"a", b"a", 0o100640, *ids, 1_000_000_000, b"xxabcxx", 2, 3),
        (b"e", b"e", 0o104755, *ids, 0, b"", 0, 0),
        DIR_END,
    ])
    assert (tmp_path / "out" / "a").read_bytes() == b"abc"
    assert os.stat(tmp_path / "out" / "a").st_mode & 0o7777 == 0o640
    assert os.stat(tmp_path / "out" / "a").st_mtime_ns == 1_000_000_000
    assert os.stat(tmp_path / "out" / "e").st_mode & 0o7777 == 0o4755
    # a plain file as the root becomes the target file
    DiskWriter(str(tmp_path / "single"), ArchiveOptions()).write([
        (b"", b"", 0o100600, *ids, 5, b"solo", 0, 4)])
    assert (tmp_path / "single").read_bytes() == b"solo"
    with pytest.raises(ArchiveFormatError, match="invalid file name"):
        DiskWriter(str(tmp_path / "bad"), ArchiveOptions()).write([
            Node(0o40755), (b"../x", b"../x", 0o100644, *ids, 0, b"", 0, 0), DIR_END])
    assert not (tmp_path / "x").exists()


# -- tar -i: chunks hashed and stored in worker processes ---------------------------------


def test_tar_index_workers_and_threads_agree(ok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src", count=150)
    for name, spec in (("a", "2:8:32"), ("b", "16:64:256"), ("c", "64:1024:8192")):
        (tmp_path / f"s-{name}").mkdir()
        ok("tar", "-i", "-s", tmp_path / f"s-{name}", "-m", spec, tmp_path / f"{name}.caidx",
           src)
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:  # a thread runs: tar -i hashes in threads instead
            (tmp_path / f"t-{name}").mkdir()
            ok("tar", "-i", "-s", tmp_path / f"t-{name}", "-m", spec,
               tmp_path / f"{name}-threads.caidx", src)
        finally:
            stop.set()
            thread.join()
        assert (tmp_path / f"{name}.caidx").read_bytes() == \
            (tmp_path / f"{name}-threads.caidx").read_bytes()
        stored = sorted(p.name for p in (tmp_path / f"s-{name}").rglob("*.cacnk"))
        assert stored == sorted(p.name for p in (tmp_path / f"t-{name}").rglob("*.cacnk"))
        ok("untar", "-i", "-s", tmp_path / f"s-{name}", tmp_path / f"{name}.caidx",
           tmp_path / f"out-{name}")
        assert diff(snapshot(src), snapshot(tmp_path / f"out-{name}")) == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a small tmpfs)")
def test_tar_index_store_error_from_a_worker(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = many_files(tmp_path / "src", count=100)
    store = tmp_path / "store"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(store)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        result = cli("tar", "-i", "-s", store, tmp_path / "a.caidx", src)
    finally:
        subprocess.run(["umount", str(store)], check=True)
    assert result.code == StoreError.exit_code, result.err
    assert "Traceback" not in result.err
    assert "No space left on device" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "a.caidx").exists()
