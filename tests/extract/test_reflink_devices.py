"""Reflinks on loop-mounted btrfs and XFS filesystems, and extraction onto loop block
devices.

Both need root (``mount -o loop``, ``losetup``); without it the tests are skipped with
that reason. Cloning is checked on the filesystem itself: ``filefrag -v`` must show
the output's extents as shared.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from extract_util import MAX, assert_error, make_blob, null_id, rand, run, temp_leftovers

from desync_core.index import Index
from desync_core.seeds.extents import clone_or_copy, probe_clone

pytestmark = pytest.mark.root


def shared_bytes(path: Path) -> int:
    """Bytes of ``path`` in extents flagged ``shared`` by ``filefrag -v``."""
    if shutil.which("filefrag") is None:
        pytest.skip("filefrag (e2fsprogs) is not installed; cannot inspect extents")
    os.sync()  # extents are reported once delayed allocation is done
    out = run("filefrag", "-v", "-b1", path).stdout
    total = 0
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(":")]
        if len(fields) >= 5 and fields[0].isdigit() and "shared" in line:
            total += int(fields[3].rstrip(".").split()[0])  # "length" column, in bytes
    return total


def test_probe_finds_cow_fs_clonable_and_tmp_not(cow_fs: Path, tmp_path: Path) -> None:
    assert probe_clone(str(cow_fs), str(cow_fs))
    # ext4 (/tmp) cannot clone, nor can a clone cross filesystems.
    assert not probe_clone(str(tmp_path), str(tmp_path))
    assert not probe_clone(str(cow_fs), str(tmp_path))
    assert [p for p in cow_fs.iterdir() if p.name.startswith(".tmp")] == []


def test_clone_or_copy_honours_block_alignment(cow_fs: Path) -> None:
    src, dst = cow_fs / "align-src", cow_fs / "align-dst"
    data = rand(30, 64 * 1024)
    src.write_bytes(data)
    dst.write_bytes(b"")
    bs = os.stat(cow_fs).st_blksize
    with open(src, "rb") as s, open(dst, "r+b") as d:
        d.truncate(80 * 1024)
        # Congruent offsets: head and tail copied, the aligned middle cloned.
        moved = clone_or_copy(s.fileno(), 100, 40_000, d.fileno(), bs + 100, bs, True)
        assert moved.cloned == (40_100 // bs) * bs - bs
        assert moved.copied == 40_000 - moved.cloned
        # Offsets that differ modulo the block size can only be copied.
        moved = clone_or_copy(s.fileno(), 0, 8192, d.fileno(), 50_001, bs, True)
        assert (moved.copied, moved.cloned) == (8192, 0)
    out = dst.read_bytes()
    assert out[bs + 100 : bs + 40_100] == data[100:40_100]
    assert out[50_001 : 50_001 + 8192] == data[:8192]


@pytest.fixture
def cow_versions(cow_fs: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """v1 on the filesystem with its index; v2 = v1 with a changed region of the same length (so
    chunks after it keep their offsets); a store with only v2's new chunks."""
    work = cow_fs / tmp_path.name
    work.mkdir()
    a, b, c = rand(31, 900_000), rand(32, 100_000), rand(33, 900_000)
    v1_data = a + b + c
    v2_data = a + rand(34, 100_000) + c + bytes(20 * MAX)
    _, v1_index, v1 = make_blob(work, "v1", v1_data, None)
    store = tmp_path / "store"
    _, v2_index, v2 = make_blob(work, "v2", v2_data, store)
    shared = set(v1.chunk_ids()) & set(v2.chunk_ids())
    for cid in shared:
        h = cid.hex()
        (store / h[:4] / f"{h}.cacnk").unlink()
    try:
        yield work, v1_index, v2_index, v2_data, store
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_seed_segments_are_cloned(cow_versions, ok) -> None:  # type: ignore[no-untyped-def]
    work, v1_index, v2_index, v2_data, store = cow_versions
    out = work / "out"
    stats = ok("extract", "--print-stats", "-s", store, "--seed", v1_index, v2_index, out).stats
    assert out.read_bytes() == v2_data
    assert stats["bytes-cloned-from-seeds"] > 1_500_000
    assert stats["bytes-copied-from-seeds"] < 64 * 1024  # unaligned heads and tails
    assert shared_bytes(out) >= stats["bytes-cloned-from-seeds"] - 64 * 1024
    assert temp_leftovers(work) == []


def test_seed_on_another_filesystem_is_copied(cow_versions, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    work, v1_index, v2_index, v2_data, store = cow_versions
    ext4_seed = tmp_path / "v1"
    shutil.copyfile(work / "v1", ext4_seed)
    out = work / "out-copied"
    stats = ok("extract", "--print-stats", "-s", store, "--seed", f"{v1_index}:{ext4_seed}",
               v2_index, out).stats
    assert out.read_bytes() == v2_data
    assert stats["bytes-cloned-from-seeds"] == 0
    assert stats["bytes-copied-from-seeds"] > 1_500_000
    assert shared_bytes(out) == 0


def test_self_seed_clones_within_the_output(cow_fs: Path, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    # A block repeated at offsets that differ by a multiple of 4096: its chunks repeat
    # at congruent offsets, so the self-seed can clone them.
    block = rand(35, 64 * 4096)
    data = block * 4
    work = cow_fs / f"self-{tmp_path.name}"
    work.mkdir()
    store = tmp_path / "store"
    _, index_path, _index = make_blob(tmp_path, "blob", data, store)
    out = work / "out"
    stats = ok("extract", "-n", "1", "--print-stats", "-s", store, index_path, out).stats
    assert out.read_bytes() == data
    assert stats["chunks-from-self-seed"] > 0
    assert stats["bytes-cloned-from-seeds"] > 0
    assert shared_bytes(out) > 0
    shutil.rmtree(work)


def test_null_chunks_are_holes_on_cow_fs(cow_versions, ok) -> None:  # type: ignore[no-untyped-def]
    work, v1_index, v2_index, v2_data, store = cow_versions
    out = work / "out-sparse"
    stats = ok("extract", "--print-stats", "-s", store, "--seed", v1_index, v2_index, out).stats
    index = Index.from_bytes(v2_index.read_bytes())
    nulls = [c for c in index if c.id == null_id(index)]
    assert len(nulls) >= 18
    assert stats["chunks-from-null-seed"] == len(nulls)
    assert out.read_bytes() == v2_data
    fd = os.open(out, os.O_RDONLY)
    try:
        hole = os.lseek(fd, nulls[0].start, os.SEEK_HOLE)
    finally:
        os.close(fd)
    assert hole < nulls[0].start + os.stat(out).st_blksize  # a hole from there to the end


# -- block devices ----------------------------------------------------------------------


def test_extract_to_block_device(loop_device, tmp_path: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    data = rand(40, 400_000) + bytes(30 * MAX) + rand(41, 200_000)
    store = tmp_path / "store"
    _, index_path, index = make_blob(tmp_path, "blob", data, store)
    size = 2 * 1024 * 1024
    dev = loop_device(size, rand(42, size))  # old content everywhere
    assert_error(cli("extract", "-s", store, index_path, dev), 2, "requires -k")
    stats = ok("extract", "-k", "--print-stats", "-s", store, index_path, dev).stats
    with open(dev, "rb") as f:
        assert f.read(len(data)) == data
        f.seek(len(data))
        assert f.read(16) == rand(42, size)[len(data) : len(data) + 16]  # rest untouched
    nulls = sum(c == null_id(index) for c in index.chunk_ids())
    assert stats["chunks-from-null-seed"] == nulls
    assert stats["bytes-copied-from-seeds"] == nulls * MAX  # zeros written over old data
    # A rerun finds everything in place, null ranges included (already zero).
    empty = tmp_path / "empty"
    empty.mkdir()
    stats = ok("extract", "-k", "--print-stats", "-s", empty, index_path, dev).stats
    assert stats["chunks-in-place"] == len(index) - nulls
    assert stats["bytes-copied-from-seeds"] == 0


def test_block_device_too_small(loop_device, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    _, index_path, _index = make_blob(tmp_path, "blob", rand(43, 300_000), store)
    dev = loop_device(128 * 1024)
    assert_error(cli("extract", "-k", "-s", store, index_path, dev), 2, "too small")


def test_block_device_as_seed(loop_device, tmp_path: Path, ok) -> None:  # type: ignore[no-untyped-def]
    """A/B partitions: the running slot (a device) seeds the other one."""
    v1 = rand(44, 500_000)
    v2 = v1[:200_000] + rand(45, 50_000) + v1[250_000:]
    store = tmp_path / "store"
    _, v1_index, _ = make_blob(tmp_path, "v1", v1, None)
    _, v2_index, v2_idx = make_blob(tmp_path, "v2", v2, store)
    slot_a = loop_device(1024 * 1024, v1)
    slot_b = loop_device(1024 * 1024)
    empty_store = tmp_path / "only-new"
    shutil.copytree(store, empty_store)
    v1_ids = set(make_blob(tmp_path, "v1again", v1, None)[2].chunk_ids())
    for cid in set(v2_idx.chunk_ids()) & v1_ids:
        (empty_store / cid.hex()[:4] / f"{cid.hex()}.cacnk").unlink()
    stats = ok("extract", "-k", "--print-stats", "-s", empty_store, "--seed",
               f"{v1_index}:{slot_a}", v2_index, slot_b).stats
    with open(slot_b, "rb") as f:
        assert f.read(len(v2)) == v2
    assert stats["chunks-from-seeds"] > 0


def test_full_filesystem_fails_cleanly(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """ENOSPC while writing: one error line, no temporary file left, old output kept."""
    store = tmp_path / "store"
    _, index_path, _index = make_blob(tmp_path, "blob", rand(46, 3_000_000), store)
    small = tmp_path / "small"
    small.mkdir()
    mounted = run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        out = small / "out"
        out.write_bytes(b"old")
        assert_error(cli("extract", "-s", store, index_path, out), 4, "No space left on device")
        assert out.read_bytes() == b"old"
        assert temp_leftovers(small) == []
    finally:
        run("umount", small, check=False)
