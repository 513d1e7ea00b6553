"""``.caidx`` archive indexes mount as their directory tree (like ``casync mount``)."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PATIENCE, MountProcess, chunk_files, is_mounted

from desync_core.plugin_api import Index
from desync_core.testing.servers import stop_process
from desync_core.testing.trees import diff, snapshot

Mount = Callable[..., MountProcess]
ROOT = os.geteuid() == 0


def make_tree(root: Path) -> None:
    """Files (two large random ones), directories, a symlink, a FIFO, user xattrs,
    nanosecond mtimes; as root also devices, other owners and setuid bits."""
    rng = random.Random(7)
    (root / "big").mkdir(parents=True)
    (root / "big" / "a.bin").write_bytes(rng.randbytes(1_500_000))
    (root / "big" / "b.bin").write_bytes(rng.randbytes(1_200_000))
    docs = root / "docs" / "deep" / "er"
    docs.mkdir(parents=True)
    for i in range(30):
        (root / "docs" / f"note{i:02}.txt").write_text(f"note {i}\n" * (i * 7))
    (docs / "leaf.txt").write_text("leaf\n")
    (root / "empty-dir").mkdir()
    (root / "empty-file").write_bytes(b"")
    (root / "link").symlink_to("docs/note03.txt")
    (root / "dangling").symlink_to("no/such/target")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "big" / "a.bin", "user.kind", b"random")
    os.setxattr(root / "docs", "user.empty", b"")
    os.chmod(root / "docs" / "note01.txt", 0o600)
    os.chmod(root / "big", 0o750)
    if ROOT:
        os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
        os.mknod(root / "loop", 0o660 | 0o060000, os.makedev(7, 0))
        os.chown(root / "docs" / "note02.txt", 1234, 5678)
        os.chmod(root / "docs" / "note04.txt", 0o4755)
    for i, path in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(path, ns=(1_000_000_000 + i, 1_234_567_890_123_456_789 + i * 1001),
                 follow_symlinks=False)
    os.utime(root, ns=(0, 1_600_000_000_000_000_007))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, casync: str) -> tuple[Path, Path, Path]:
    """``(tree, index, store)``: a source tree and its ``casync make`` archive index."""
    base = tmp_path_factory.mktemp("tree")
    tree, index, store = base / "src", base / "tree.caidx", base / "store"
    make_tree(tree)
    subprocess.run([casync, "make", f"--store={store}", str(index), str(tree)], check=True,
                   capture_output=True, timeout=120)
    return tree, index, store


@pytest.fixture
def casync_mount(casync: str, tmp_path: Path) -> Iterator[Callable[[Path, Path], Path]]:
    """``casync mount --store=STORE INDEX DIR`` in the background; unmounted at the end."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(index: Path, store: Path) -> Path:
        mnt = tmp_path / f"casync{len(started)}"
        mnt.mkdir()
        proc = subprocess.Popen([casync, "mount", f"--store={store}", str(index), str(mnt)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((proc, mnt))
        deadline = time.monotonic() + PATIENCE
        while not is_mounted(mnt):
            assert proc.poll() is None, "casync mount failed"
            assert time.monotonic() < deadline, "casync mount did not mount"
            time.sleep(0.05)
        return mnt

    yield start
    for proc, mnt in started:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        stop_process(proc)


def test_tree_equals_source_and_casync_mount(
        mount: Mount, archive: tuple[Path, Path, Path],
        casync_mount: Callable[[Path, Path], Path]) -> None:
    """Names, types, modes, owners, mtimes, contents, symlink targets, devices and user
    xattrs of the mounted tree equal the source's and those of ``casync mount``."""
    tree, index, store = archive
    m = mount("-s", store, index)
    ours = snapshot(m.mountpoint)
    assert diff(snapshot(tree), ours) == []
    assert diff(snapshot(casync_mount(index, store)), ours) == []
    assert os.readlink(m.mountpoint / "dangling") == "no/such/target"
    assert os.getxattr(m.mountpoint / "big" / "a.bin", "user.kind") == b"random"
    if ROOT:
        st = os.lstat(m.mountpoint / "null")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    with pytest.raises(OSError, match=r"Read-only file system|Permission denied"):
        (m.mountpoint / "new-file").write_bytes(b"x")
    assert m.proc.poll() is None


def test_reading_a_file_fetches_only_its_chunks(mount: Mount, archive: tuple[Path, Path, Path],
                                                tmp_path: Path) -> None:
    """Every chunk fetched lands in the cache (``-c``): mounting fetches the metadata
    chunks only; reading one large file adds its chunks but not the other's."""
    tree, index, store = archive
    ids = {c.id.hex() for c in Index.from_bytes(index.read_bytes())}
    cache = tmp_path / "cache"

    def cached() -> set[str]:
        return {p.name.split(".")[0] for p in chunk_files(cache)} if cache.exists() else set()

    m = mount("-s", store, "-c", cache, index)
    after_mount = cached()
    assert after_mount < ids
    assert len(after_mount) < len(ids) // 2
    assert (m.mountpoint / "big" / "a.bin").read_bytes() == \
        (tree / "big" / "a.bin").read_bytes()
    after_a = cached()
    assert after_mount < after_a < ids
    assert (m.mountpoint / "big" / "b.bin").read_bytes() == \
        (tree / "big" / "b.bin").read_bytes()
    assert cached() == ids


def test_random_reads_inside_files(mount: Mount, archive: tuple[Path, Path, Path]) -> None:
    """Reads at random offsets of a mounted file, and past its end, equal the source."""
    tree, index, store = archive
    m = mount("-s", store, index)
    source = (tree / "big" / "b.bin").read_bytes()
    rng = random.Random(3)
    fd = os.open(m.mountpoint / "big" / "b.bin", os.O_RDONLY)
    try:
        for _ in range(60):
            offset, size = rng.randrange(len(source) + 10), rng.randrange(1, 100_000)
            assert os.pread(fd, size, offset) == source[offset:offset + size]
    finally:
        os.close(fd)
