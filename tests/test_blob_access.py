"""The pieces of random blob access shared by the fsspec reader and the FUSE mount:
:class:`ChunkCache` (LRU by id, fetches in flight shared, failures not kept),
:class:`ChunkLayout` (which chunks hold a range, which are null) and the entry table of
:func:`build_tree` (numbers, sub-directory counts, xattrs)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from desync_core.archivetree import TreeEntry, build_tree
from desync_core.config import load_config
from desync_core.context import Context
from desync_core.index import Index
from desync_core.rangeread import ChunkCache, ChunkLayout, RangeReader
from desync_core.testing.fixtures import run_desync


def test_concurrent_claims_of_one_chunk_share_one_fetch() -> None:
    cache: ChunkCache[bytes] = ChunkCache(1 << 20)
    claims = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        claims.append(cache.claim([(0, b"id")]))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owners = [c for c in claims if c.owned]
    assert len(owners) == 1
    assert owners[0].owned == [(0, b"id")]
    assert len({id(c.waiting[0]) for c in claims}) == 1  # everyone waits on one future
    cache.fill([(b"id", b"data")])
    assert all(c.waiting[0].result() == b"data" for c in claims)
    again = cache.claim([(3, b"id")])
    assert again.hits == {3: b"data"}
    assert not again.waiting
    assert not again.owned
    assert cache.filled == 1


def test_a_failed_fetch_reaches_its_waiters_and_is_not_kept() -> None:
    cache: ChunkCache[bytes] = ChunkCache(1 << 20)
    first = cache.claim([(0, b"a"), (1, b"b")])
    second = cache.claim([(1, b"b")])
    assert not second.owned
    cache.fail([b"a", b"b"], OSError("gone"))
    for future in (first.waiting[0], first.waiting[1], second.waiting[1]):
        with pytest.raises(OSError, match="gone"):
            future.result()
    assert cache.claim([(1, b"b")]).owned == [(1, b"b")]  # the next read tries again
    assert cache.cached_bytes == 0


def test_the_cache_evicts_the_least_recently_used_and_keeps_one() -> None:
    cache: ChunkCache[bytes] = ChunkCache(10)
    for key in (b"a", b"b"):
        cache.claim([(0, key)])
        cache.fill([(key, b"1234")])
    assert cache.claim([(0, b"a")]).hits  # a is now the most recent
    cache.claim([(0, b"c")])
    cache.fill([(b"c", b"1234")])
    assert cache.cached_bytes == 8
    assert cache.claim([(0, b"b")]).owned  # b was evicted, a and c stay
    assert cache.claim([(0, b"a")]).hits
    assert cache.claim([(0, b"c")]).hits
    cache.fill([(b"huge", b"x" * 100)])  # larger than the bound: kept alone
    assert cache.cached_bytes == 100
    assert cache.claim([(0, b"huge")]).hits


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blobaccess")
    src = root / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "c").mkdir()
    (src / "d").mkdir()
    (src / "zeros").write_bytes(bytes(300_000) + os.urandom(50_000))
    (src / "a" / "b" / "f").write_bytes(os.urandom(40_000))
    os.symlink("../zeros", src / "a" / "link")
    try:
        os.setxattr(src / "a" / "b" / "f", "user.note", b"hello")
    except OSError:  # a filesystem without user xattrs: the tree test skips that check
        pass
    run_desync("tar", "-i", "-s", root / "store", "-m", "2:8:32", root / "tree.caidx", src)
    return root


def open_reader(root: Path, name: str) -> RangeReader:
    index = Index.from_bytes((root / name).read_bytes())
    ctx = Context(config=load_config(None))
    source = ctx.open_source([str(root / "store")], None, index.digest,
                             max_chunk_size=index.chunk_size_max)
    return RangeReader(index, source)


def test_the_layout_finds_the_chunks_of_a_range_and_the_null_ones(made: Path) -> None:
    reader = open_reader(made, "tree.caidx")
    layout = ChunkLayout(reader.index)
    null = reader.index.digest.null_chunk_id(reader.index.chunk_size_max)
    assert len(layout) == len(reader.index.chunk_ids())
    assert [layout.is_null(i) for i in range(len(layout))] == [
        cid == null for cid in reader.index.chunk_ids()]
    assert any(layout.is_null(i) for i in range(len(layout)))  # the run of zeros
    for i in range(len(layout)):
        start, size = layout.starts[i], layout.sizes[i]
        assert layout.chunk_range(start, size) == (i, i + 1)
        assert layout.chunk_range(start + size - 1, 2) == (i, min(i + 2, len(layout)))
    reader.close()
    reader.source.close()


def walk(entry: TreeEntry, path: str, out: dict[str, TreeEntry]) -> None:
    out[path] = entry
    for name, child in (entry.children or {}).items():
        walk(child, f"{path}/{name}", out)


def test_entries_are_numbered_in_archive_order_with_subdirs_and_xattrs(made: Path) -> None:
    reader = open_reader(made, "tree.caidx")
    entries: dict[str, TreeEntry] = {}
    walk(build_tree(reader), "", entries)
    reader.close()
    reader.source.close()
    src = made / "src"
    assert [e.number for e in entries.values()] == list(range(1, len(entries) + 1))
    assert set(entries) == {"", "/a", "/a/b", "/a/b/f", "/a/c", "/a/link", "/d", "/zeros"}
    for path, entry in entries.items():
        if entry.children is not None:
            assert entry.subdirs == sum(
                1 for p in (src / path.lstrip("/")).iterdir()
                if p.is_dir() and not p.is_symlink())
        else:
            assert entry.subdirs == 0
    assert entries["/a/link"].kind == "symlink"
    assert entries["/a/link"].target == "../zeros"
    assert stat.S_ISREG(entries["/a/b/f"].mode)
    try:
        expected = {name: os.getxattr(src / "a/b/f", name)
                    for name in os.listxattr(src / "a/b/f")}
    except OSError:
        expected = {}
    assert (entries["/a/b/f"].xattrs or {}) == expected
    assert entries["/d"].xattrs is None
