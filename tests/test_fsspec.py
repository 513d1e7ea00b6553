"""The ``desync`` fsspec filesystem: real local stores, indexes made with the CLI.

Blob indexes read as seekable files byte-for-byte equal to the original, fetching only
the chunks a read touches; ``.caidx`` archives list and read as the tree they were made
from; writes are refused and corrupt chunks fail verification.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import shlex
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from desync_core.errors import ChunkMissingError, IntegrityError  # noqa: E402
from desync_core.fsspec_fs import DesyncFileSystem  # noqa: E402
from desync_core.index import Index  # noqa: E402
from desync_core.testing.fixtures import run_desync  # noqa: E402

CHUNKS = "2:8:32"  # small chunks: a few hundred per blob, so "only the touched" means much


class Made:
    """One blob and one directory tree, chunked into one local store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "store"
        rng = random.Random(20)
        self.blob = root / "blob.bin"
        # random data, a run of zeros (null chunks) and a tail
        self.data = rng.randbytes(900_000) + bytes(200_000) + rng.randbytes(77_777)
        self.blob.write_bytes(self.data)
        self.caibx = root / "blob.caibx"
        run_desync("make", "-s", self.store, "-m", CHUNKS, self.caibx, self.blob)
        self.tree = root / "src"
        self._make_tree(rng)
        self.caidx = root / "tree.caidx"
        run_desync("tar", "-i", "-s", self.store, "-m", CHUNKS, self.caidx, self.tree)

    def _make_tree(self, rng: random.Random) -> None:
        t = self.tree
        (t / "sub" / "deeper").mkdir(parents=True)
        (t / "empty").mkdir()
        (t / "hello.txt").write_bytes(b"hello\n")
        (t / "empty-file").write_bytes(b"")
        (t / "sub" / "big.bin").write_bytes(rng.randbytes(1_500_000))
        (t / "sub" / "deeper" / "mid.bin").write_bytes(rng.randbytes(70_000))
        (t / "data.csv").write_text("a,b,c\n" + "".join(f"{i},{i * i},x{i}\n"
                                                        for i in range(2000)))
        np.save(t / "array.npy", np.arange(50_000, dtype=np.int64).reshape(500, 100))
        (t / "sub" / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
        os.chmod(t / "sub" / "exec.sh", 0o751)
        os.symlink("sub/big.bin", t / "link")
        os.symlink("../hello.txt", t / "sub" / "up")
        os.symlink("/nowhere/at/all", t / "dangling")

    def fs(self, store: Path | None = None, **kwargs: Any) -> DesyncFileSystem:
        """A fresh (uncached) filesystem over ``store`` (default: the full store)."""
        return DesyncFileSystem(stores=[str(store or self.store)], skip_instance_cache=True,
                                **kwargs)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return Made(tmp_path_factory.mktemp("fsspec"))


@pytest.fixture
def fs(made: Made) -> Iterator[DesyncFileSystem]:
    filesystem = made.fs()
    yield filesystem
    filesystem.close()


def chunk_file(store: Path, chunk_id: bytes) -> Path:
    h = chunk_id.hex()
    return store / h[:4] / f"{h}.cacnk"


def store_with_only(made: Made, ids: set[bytes], dest: Path) -> Path:
    """A copy of the store holding only the chunks ``ids``."""
    shutil.copytree(made.store, dest)
    for path in dest.rglob("*.cacnk"):
        if bytes.fromhex(path.name.split(".")[0]) not in ids:
            path.unlink()
    return dest


# -- blob indexes ------------------------------------------------------------------------


def test_random_seeks_and_reads_equal_the_blob(made: Made, fs: DesyncFileSystem) -> None:
    data = made.data
    rng = random.Random(7)
    with fs.open(str(made.caibx)) as f:
        assert f.size == len(data)
        assert f.seekable()
        assert f.readable()
        assert not f.writable()
        for _ in range(300):
            offset = rng.randrange(len(data) + 10)
            size = rng.choice([1, 17, 4096, 70_000, 300_000])
            assert f.seek(offset) == offset
            assert f.read(size) == data[offset:offset + size]
            assert f.tell() == min(offset + size, max(offset, len(data)))
        f.seek(-100, os.SEEK_END)
        assert f.read() == data[-100:]
        assert f.read(10) == b""
        f.seek(5000)
        f.seek(123, os.SEEK_CUR)
        buf = bytearray(50_000)
        assert f.readinto(buf) == 50_000
        assert bytes(buf) == data[5123:55123]
        f.seek(0)
        assert f.read() == data
    assert fs.info(str(made.caibx))["size"] == len(data)
    assert fs.size(str(made.caibx)) == len(data)
    assert fs.cat_file(str(made.caibx), start=1000, end=2000) == data[1000:2000]


def test_only_the_chunks_a_read_touches_are_fetched(made: Made, tmp_path: Path) -> None:
    index = Index.from_bytes(made.caibx.read_bytes())
    offset, size = 400_000, 30_000
    first = index.find(offset)
    last = index.find(offset + size - 1)
    needed = {index.chunk_id(i) for i in range(first, last + 1)}
    assert len(needed) < len(index) // 20  # a small part of the blob
    store = store_with_only(made, needed, tmp_path / "pruned")
    fs = made.fs(store)
    with fs.open(str(made.caibx)) as f:
        f.seek(offset)
        # reads spanning chunk boundaries, served from the chunks above only
        assert f.read(size // 2) == made.data[offset:offset + size // 2]
        assert f.read(size - size // 2) == made.data[offset + size // 2:offset + size]
        reader = fs.reader(str(made.caibx))
        assert reader.fetches == len(needed)
        f.seek(offset + 10)
        assert f.read(100) == made.data[offset + 10:offset + 110]
        assert reader.fetches == len(needed)  # from the chunk cache, not the store again
        f.seek(10)
        with pytest.raises(ChunkMissingError):  # the store really lacks the rest
            f.read(10)
    fs.close()


def test_concurrent_readers_share_one_fetch_per_chunk(made: Made) -> None:
    """Threads reading one file through one filesystem: every read is right, and with
    a cache that holds the blob no chunk is fetched twice (in-flight fetches are
    shared)."""
    fs = made.fs(cache_bytes=64 << 20)
    errors: list[tuple[int, int]] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        with fs.open(str(made.caibx)) as f:
            for _ in range(100):
                offset, size = rng.randrange(len(made.data)), rng.randrange(1, 120_000)
                f.seek(offset)
                if f.read(size) != made.data[offset:offset + size]:
                    errors.append((offset, size))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    index = Index.from_bytes(made.caibx.read_bytes())
    null = index.digest.null_chunk_id(index.chunk_size_max)
    assert fs.reader(str(made.caibx)).fetches <= len(set(index.chunk_ids()) - {null})
    fs.close()


def test_a_cache_store_receives_the_chunks_read(made: Made, tmp_path: Path) -> None:
    """``cache=`` is ``-c``: chunks read land in it, and a later instance reads them
    from there with the store empty (stores are asked in order, like ``-s A -s B``)."""
    index = Index.from_bytes(made.caibx.read_bytes())
    cache = tmp_path / "cache"
    fs = made.fs(cache=str(cache))
    assert fs.cat_file(str(made.caibx), start=100_000, end=160_000) == \
        made.data[100_000:160_000]
    fs.close()
    touched = {index.chunk_id(i) for i in range(index.find(100_000), index.find(159_999) + 1)}
    assert {bytes.fromhex(p.name.split(".")[0]) for p in cache.rglob("*.cacnk")} == touched
    empty = tmp_path / "empty"
    empty.mkdir()
    fs = DesyncFileSystem(stores=[str(empty), str(cache)], skip_instance_cache=True)
    assert fs.cat_file(str(made.caibx), start=100_000, end=160_000) == \
        made.data[100_000:160_000]
    fs.close()


def test_null_chunks_are_not_fetched(made: Made, tmp_path: Path) -> None:
    index = Index.from_bytes(made.caibx.read_bytes())
    null = index.digest.null_chunk_id(index.chunk_size_max)
    zeros = [i for i in range(len(index)) if index.chunk_id(i) == null]
    assert zeros  # the 200 000 zero bytes hold at least one full null chunk
    chunk = index.chunk(zeros[0])
    fs = made.fs(store_with_only(made, set(), tmp_path / "empty"))
    with fs.open(str(made.caibx)) as f:
        f.seek(chunk.start)
        assert f.read(chunk.size) == bytes(chunk.size)
    assert fs.reader(str(made.caibx)).fetches == 0


def test_a_corrupt_chunk_fails_verification(made: Made, tmp_path: Path) -> None:
    store = tmp_path / "corrupt"
    shutil.copytree(made.store, store)
    index = Index.from_bytes(made.caibx.read_bytes())
    victim, donor = index.chunk(3), index.chunk(4)
    # a valid chunk file with the wrong content for its name
    shutil.copyfile(chunk_file(store, donor.id), chunk_file(store, victim.id))
    fs = made.fs(store)
    with fs.open(str(made.caibx)) as f:
        f.seek(victim.start)
        with pytest.raises(IntegrityError, match=victim.id.hex()):
            f.read(10)
        f.seek(donor.start)
        assert f.read(10) == made.data[donor.start:donor.start + 10]


def test_numpy_loads_a_blob_through_fs_open(tmp_path: Path) -> None:
    array = np.random.default_rng(3).standard_normal((300, 200))
    np.save(tmp_path / "a.npy", array)
    run_desync("make", "-s", tmp_path / "store", "-m", CHUNKS, tmp_path / "a.caibx",
               tmp_path / "a.npy")
    fs = DesyncFileSystem(store=str(tmp_path / "store"), skip_instance_cache=True)
    with fs.open(str(tmp_path / "a.caibx")) as f:
        assert np.array_equal(np.load(f), array)
    fs.close()


def test_a_replaced_index_file_is_read_again(made: Made, tmp_path: Path) -> None:
    """The instance caches indexes, but a local index file replaced on disk (as
    ``desync make`` writes it: a new file renamed over the old) is noticed."""
    fs = made.fs()
    target = tmp_path / "x.caibx"
    shutil.copyfile(made.caibx, target)
    assert fs.cat_file(str(target), start=0, end=1000) == made.data[:1000]
    other = tmp_path / "other.bin"
    other.write_bytes(b"another blob " * 10_000)
    run_desync("make", "-s", made.store, "-m", CHUNKS, target, other)
    assert fs.cat_file(str(target)) == other.read_bytes()
    assert fs.size(str(target)) == other.stat().st_size
    fs.invalidate_cache()
    assert fs.cat_file(str(target), start=5, end=18) == other.read_bytes()[5:18]
    fs.close()


# -- archive indexes ---------------------------------------------------------------------


def source_tree(root: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            out[str(full.relative_to(root))] = full.lstat()
    return out


def archive_tree(fs: DesyncFileSystem, caidx: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def walk(path: str) -> None:
        for info in fs.ls(path):
            rel = info["name"][len(caidx) + 1:]
            out[rel] = info
            if info["type"] == "directory":
                walk(info["name"])

    walk(caidx)
    return out


def test_caidx_lists_as_its_source_tree(made: Made, fs: DesyncFileSystem) -> None:
    caidx = str(made.caidx)
    listed = archive_tree(fs, caidx)
    source = source_tree(made.tree)
    assert sorted(listed) == sorted(source)
    kinds = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}
    for rel, st in source.items():
        info = listed[rel]
        assert info["type"] == kinds[stat.S_IFMT(st.st_mode)], rel
        assert info["mode"] == st.st_mode, rel
        assert info["mtime_ns"] == st.st_mtime_ns, rel
        assert info["uid"] == st.st_uid
        assert info["gid"] == st.st_gid
        if stat.S_ISREG(st.st_mode):
            assert info["size"] == st.st_size, rel
        if stat.S_ISLNK(st.st_mode):
            assert info["destination"] == os.readlink(made.tree / rel)
        assert fs.info(f"{caidx}/{rel}") == info
    assert fs.info(caidx)["type"] == "directory"
    assert fs.ls(f"{caidx}/sub", detail=False) == [
        f"{caidx}/sub/big.bin", f"{caidx}/sub/deeper", f"{caidx}/sub/exec.sh",
        f"{caidx}/sub/up"]
    assert fs.isdir(f"{caidx}/sub/deeper")
    assert fs.isfile(f"{caidx}/hello.txt")
    assert fs.ls(f"{caidx}/empty") == []
    assert fs.ls(f"{caidx}/hello.txt", detail=False) == [f"{caidx}/hello.txt"]
    assert sorted(fs.find(caidx)) == sorted(
        f"{caidx}/{rel}" for rel, st in source.items() if not stat.S_ISDIR(st.st_mode))
    assert fs.modified(f"{caidx}/hello.txt").timestamp() == pytest.approx(
        (made.tree / "hello.txt").stat().st_mtime)


def test_caidx_files_read_as_their_sources(made: Made, fs: DesyncFileSystem) -> None:
    caidx = str(made.caidx)
    for rel, st in source_tree(made.tree).items():
        if stat.S_ISREG(st.st_mode):
            assert fs.cat_file(f"{caidx}/{rel}") == (made.tree / rel).read_bytes(), rel
    big = (made.tree / "sub" / "big.bin").read_bytes()
    rng = random.Random(9)
    with fs.open(f"{caidx}/sub/big.bin") as f:
        assert f.size == len(big)
        for _ in range(100):
            offset, size = rng.randrange(len(big)), rng.randrange(1, 200_000)
            f.seek(offset)
            assert f.read(size) == big[offset:offset + size]
        f.seek(len(big) - 5)
        assert f.read(100) == big[-5:]  # a read stops at the file's end, not the stream's
    # symlinks inside the archive are followed
    assert fs.cat_file(f"{caidx}/link") == big
    assert fs.cat_file(f"{caidx}/sub/up") == b"hello\n"
    assert fs.cat_file(f"{caidx}/sub/up/../sub/exec.sh") == b"#!/bin/sh\necho hi\n"
    with fs.open(f"{caidx}/array.npy") as f:
        assert np.array_equal(np.load(f), np.arange(50_000).reshape(500, 100))


@pytest.mark.casync
def test_indexes_made_by_casync(made: Made, casync: str, tmp_path: Path) -> None:
    store = tmp_path / "casync.castr"
    subprocess.run([casync, "make", f"--store={store}", str(tmp_path / "t.caidx"),
                    str(made.tree)], check=True, capture_output=True)
    subprocess.run([casync, "make", f"--store={store}", str(tmp_path / "b.caibx"),
                    str(made.blob)], check=True, capture_output=True)
    fs = made.fs(store)
    caidx = str(tmp_path / "t.caidx")
    assert sorted(archive_tree(fs, caidx)) == sorted(source_tree(made.tree))
    big = (made.tree / "sub" / "big.bin").read_bytes()
    assert fs.cat_file(f"{caidx}/sub/big.bin", start=777, end=300_000) == big[777:300_000]
    assert fs.cat_file(str(tmp_path / "b.caibx"), start=5, end=999_999) == made.data[5:999_999]
    fs.close()


def test_reading_one_archive_member_fetches_only_its_chunks(made: Made) -> None:
    fs = made.fs()
    caidx = str(made.caidx)
    index = Index.from_bytes(made.caidx.read_bytes())
    fs.ls(caidx)  # builds the entry table: metadata chunks only
    reader = fs.reader(caidx)
    after_table = reader.fetches
    big = 1_500_000
    assert after_table < len(index) // 2  # the big file's content was skipped
    with fs.open(f"{caidx}/sub/big.bin") as f:
        f.seek(big // 2)
        assert f.read(1000) == (made.tree / "sub" / "big.bin").read_bytes()[
            big // 2:big // 2 + 1000]
    assert reader.fetches - after_table <= 2  # the one or two chunks under those bytes
    fs.close()


def test_pandas_reads_a_csv_inside_a_caidx(made: Made) -> None:
    import pandas as pd  # installed by the testing extra: a missing pandas fails
    url = f"desync://{made.caidx}/data.csv"
    with fsspec.open(url, "rt", stores=[str(made.store)]) as f:
        frame = pd.read_csv(f)
    assert list(frame.columns) == ["a", "b", "c"]
    assert len(frame) == 2000
    assert int(frame["b"].iloc[-1]) == 1999 * 1999
    by_url = pd.read_csv(url, storage_options={"stores": [str(made.store)]})
    assert by_url.equals(frame)


def test_fsspec_open_with_a_desync_url(made: Made) -> None:
    url = f"desync://{made.caidx}/data.csv"
    with fsspec.open(url, "rt", stores=[str(made.store)]) as f:
        lines = f.read().splitlines()
    assert lines[0] == "a,b,c"
    assert lines[-1] == "1999,3996001,x1999"
    with fsspec.open(f"desync://{made.caibx}", "rb", store=str(made.store)) as f:
        f.seek(900_000)
        assert f.read(10) == bytes(10)


def test_filesystems_and_open_files_pickle(made: Made, fs: DesyncFileSystem) -> None:
    """As dask and multiprocessing ship them to workers: an open file comes back at
    its position, reading the same bytes."""
    caidx = str(made.caidx)
    again = pickle.loads(pickle.dumps(fs))
    assert again.stores == fs.stores
    assert again.cat_file(f"{caidx}/hello.txt") == b"hello\n"
    with fs.open(f"{caidx}/sub/big.bin") as f:
        f.seek(12345)
        copy = pickle.loads(pickle.dumps(f))
    assert copy.tell() == 12345
    assert copy.read(100) == (made.tree / "sub" / "big.bin").read_bytes()[12345:12445]
    copy.close()


# -- registration, errors ----------------------------------------------------------------


def test_the_entry_point_names_the_filesystem() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="fsspec.specs") if e.name == "desync"]
    assert ep.value == "desync_core.fsspec_fs:DesyncFileSystem"
    assert fsspec.get_filesystem_class("desync") is DesyncFileSystem
    fs = fsspec.filesystem("desync", stores=["/nonexistent-store"])
    assert isinstance(fs, DesyncFileSystem)
    assert fs.stores == ["/nonexistent-store"]


def test_missing_paths_raise_file_not_found(made: Made, fs: DesyncFileSystem) -> None:
    caidx = str(made.caidx)
    for path in (str(made.root / "nope.caibx"), f"{caidx}/nope", f"{caidx}/sub/nope/x",
                 f"{caidx}/hello.txt/x", str(made.root / "nope.caidx" / "a"),
                 f"{made.caibx}/x"):
        with pytest.raises(FileNotFoundError):
            fs.open(path)
        with pytest.raises(FileNotFoundError):
            fs.info(path)
        assert not fs.exists(path)
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{caidx}/nope")
    with pytest.raises(FileNotFoundError):  # outside the archive
        fs.open(f"{caidx}/dangling")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{caidx}/sub")
    with pytest.raises(IsADirectoryError):
        fs.open(caidx)
    with pytest.raises(IsADirectoryError):  # a local directory is not an index
        fs.open(str(made.root))
    assert fs.isdir(str(made.root))
    assert str(made.caibx) in fs.ls(str(made.root), detail=False)


WRITES: list[tuple[str, Callable[[DesyncFileSystem, str], Any]]] = [
    ("open-wb", lambda fs, p: fs.open(p, "wb")),
    ("open-ab", lambda fs, p: fs.open(p, "ab")),
    ("pipe", lambda fs, p: fs.pipe(p, b"x")),
    ("touch", lambda fs, p: fs.touch(p)),
    ("rm", lambda fs, p: fs.rm(p)),
    ("rm_file", lambda fs, p: fs.rm_file(p)),
    ("mkdir", lambda fs, p: fs.mkdir(p + "-new")),
    ("makedirs", lambda fs, p: fs.makedirs(p + "-new/x")),
    ("rmdir", lambda fs, p: fs.rmdir(p)),
    ("mv", lambda fs, p: fs.mv(p, p + "-moved")),
    ("copy", lambda fs, p: fs.copy(p, p + "-copy")),
]


@pytest.mark.parametrize(("what", "write"), WRITES, ids=[w for w, _ in WRITES])
def test_writes_are_refused(made: Made, fs: DesyncFileSystem, what: str,
                            write: Callable[[DesyncFileSystem, str], Any]) -> None:
    before = sorted(p.name for p in made.root.iterdir())
    for path in (str(made.caibx), f"{made.caidx}/hello.txt"):
        with pytest.raises(OSError, match="read-only") as caught:
            write(fs, path)
        assert caught.value.errno == errno.EROFS
    assert sorted(p.name for p in made.root.iterdir()) == before
    assert made.caibx.read_bytes()  # untouched


def test_no_store_is_a_clear_error(made: Made) -> None:
    from desync_core.errors import UsageError

    fs = DesyncFileSystem(skip_instance_cache=True)
    assert fs.info(str(made.caibx))["size"] == len(made.data)  # indexes need no store
    with pytest.raises(UsageError, match="no store"):
        fs.open(str(made.caibx))


# -- the README's example ----------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
README_HEADING = "## fsspec: indexes as files, without FUSE (`desync://`)"


def readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's fsspec section."""
    text = README.read_text()
    if README_HEADING not in text:
        pytest.skip("the fsspec section is not in README.md")
    section = text.split(README_HEADING, 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in section.split(f"```{language}\n")[1:]]


def test_readme_example(workdir: Path) -> None:
    """The section's shell commands and first Python block, run as written."""
    rng = random.Random(5)
    disk = rng.randbytes(3 << 20)
    (workdir / "disk.img").write_bytes(disk)
    (workdir / "tree" / "sub").mkdir(parents=True)
    (workdir / "tree" / "data.csv").write_text("a,b\n1,2\n")
    weights = np.linspace(0, 1, 10_000).reshape(100, 100)
    np.save(workdir / "tree" / "sub" / "weights.npy", weights)
    (shell,) = readme_blocks("sh")
    for line in shell.splitlines():
        args = shlex.split(line, comments=True)
        assert args[0] == "desync"
        run_desync(*args[1:], cwd=workdir)
    namespace: dict[str, Any] = {}
    exec(readme_blocks("python")[0], namespace)
    namespace["fs"].close()
    assert namespace["block"] == disk[1 << 20:(1 << 20) + 4096]
    assert namespace["names"] == ["tree.caidx/data.csv", "tree.caidx/sub"]
    assert namespace["info"]["type"] == "file"
    assert namespace["info"]["size"] == (workdir / "tree" / "sub" / "weights.npy").stat().st_size
    assert np.array_equal(namespace["weights"], weights)
    assert namespace["header"] == "a,b\n"
