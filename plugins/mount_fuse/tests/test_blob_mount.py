"""Blob mounts: the one file, whole and random reads, concurrent readers, stdin and
remote index locations, a missing chunk."""

from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MountProcess, chunk_files

from desync_core.plugin_api import Index
from desync_core.testing.servers import free_port, stop_process, wait_for_port

Mount = Callable[..., MountProcess]


def pread(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def test_one_read_only_file_with_the_blob(mount: Mount, blob: tuple[Path, Path, Path]) -> None:
    """The mount holds one 0444 file named after the index without its extension."""
    data, index, store = blob
    m = mount("-s", store, index)
    assert os.listdir(m.mountpoint) == ["image.bin"]
    path = m.mountpoint / "image.bin"
    st = path.stat()
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert st.st_size == data.stat().st_size
    assert path.read_bytes() == data.read_bytes()
    with pytest.raises(OSError, match=r"Read-only file system|Permission denied") as exc:
        open(path, "r+b")  # noqa: SIM115
    assert exc.value.errno in (errno.EROFS, errno.EACCES)


def test_random_offset_reads(mount: Mount, blob: tuple[Path, Path, Path]) -> None:
    """Reads at random offsets and lengths (chunk boundaries, the end) equal the source."""
    data, index, store = blob
    source = data.read_bytes()
    m = mount("-s", store, index)
    path = m.mountpoint / "image.bin"
    boundaries = Index.from_bytes(index.read_bytes()).ends.tolist()
    rng = random.Random(1)
    cases = [(0, 1), (len(source) - 1, 10), (len(source), 5), (boundaries[3] - 2, 4)]
    cases += [(rng.randrange(len(source)), rng.choice([1, 100, 4096, 70_000, 300_000]))
              for _ in range(150)]
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, size in cases:
            assert os.pread(fd, size, offset) == source[offset:offset + size], (offset, size)
    finally:
        os.close(fd)


def test_concurrent_readers(mount: Mount, blob: tuple[Path, Path, Path]) -> None:
    """Eight threads reading the file at once (whole and in random pieces) all get the
    source's bytes."""
    data, index, store = blob
    source = data.read_bytes()
    m = mount("-s", store, index, "-n", "4")
    path = m.mountpoint / "image.bin"
    failures: list[str] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            if seed % 2:
                if path.read_bytes() != source:
                    failures.append(f"reader {seed}: whole file differs")
                return
            for _ in range(40):
                offset = rng.randrange(len(source))
                size = rng.randrange(1, 200_000)
                if pread(path, offset, size) != source[offset:offset + size]:
                    failures.append(f"reader {seed}: {offset}+{size} differs")
        except OSError as exc:
            failures.append(f"reader {seed}: {exc}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_index_from_stdin(mount: Mount, blob: tuple[Path, Path, Path]) -> None:
    """``-`` reads the index from stdin (desync names the file ``-`` then)."""
    data, index, store = blob
    m = mount("-s", store, "-", stdin=index.read_bytes())
    assert os.listdir(m.mountpoint) == ["-"]
    assert (m.mountpoint / "-").read_bytes() == data.read_bytes()


def test_index_from_a_remote_index_store(mount: Mount, blob: tuple[Path, Path, Path],
                                         tmp_path: Path) -> None:
    """An index-store URL works like a file (served by a real HTTP server)."""
    from desync_core.plugin_api import get_registries

    if "http" not in get_registries().index_stores.names():
        pytest.skip("no http index store plugin installed (desync-store-http)")
    data, index, store = blob
    served = tmp_path / "indexes"
    served.mkdir()
    shutil.copy(index, served / "remote.caibx")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=server)
        m = mount("-s", store, f"http://127.0.0.1:{port}/remote.caibx")
        assert os.listdir(m.mountpoint) == ["remote"]
        assert (m.mountpoint / "remote").read_bytes() == data.read_bytes()
    finally:
        stop_process(server)


def test_missing_chunk_is_eio(mount: Mount, blob: tuple[Path, Path, Path],
                              tmp_path: Path) -> None:
    """A chunk missing from the store: reads touching it fail with EIO and the error is
    logged; every other read still works, and the mount stays usable and unmounts."""
    data, index, store = blob
    source = data.read_bytes()
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    idx = Index.from_bytes(index.read_bytes())
    victim = idx.chunk(1)
    hexid = victim.id.hex()
    (broken / hexid[:4] / f"{hexid}.cacnk").unlink()
    assert len(chunk_files(broken)) == len(chunk_files(store)) - 1
    m = mount("-s", broken, index)
    path = m.mountpoint / "image.bin"
    with pytest.raises(OSError, match="Input/output error") as exc:
        pread(path, victim.start + 10, 100)
    assert exc.value.errno == errno.EIO
    last = idx.chunk(len(idx) - 1)
    assert pread(path, last.start, last.size) == source[last.start:last.end]
    assert m.proc.poll() is None
    lines = [line for line in m.stderr.splitlines() if hexid in line]
    assert lines, m.stderr
    assert all(line.startswith("Error: ") for line in lines), m.stderr
    assert "Traceback" not in m.stderr
    subprocess.run(["fusermount3", "-u", str(m.mountpoint)], check=True, timeout=30)
    assert m.wait_exit() == 0


def test_corrupt_chunks_are_never_served(mount: Mount, blob: tuple[Path, Path, Path],
                                         tmp_path: Path) -> None:
    """A chunk file holding another chunk's data: from the store it is EIO (the error
    names the chunk); from a cache it is repaired from the store and read correctly."""
    data, index, store = blob
    source = data.read_bytes()
    idx = Index.from_bytes(index.read_bytes())
    victim, other = idx.chunk(2), idx.chunk(5)

    def chunk_file(base: Path, chunk_id: bytes) -> Path:
        return base / chunk_id.hex()[:4] / f"{chunk_id.hex()}.cacnk"

    bad_store = tmp_path / "bad-store"
    shutil.copytree(store, bad_store)
    shutil.copy(chunk_file(store, other.id), chunk_file(bad_store, victim.id))
    m = mount("-s", bad_store, index)
    with pytest.raises(OSError, match="Input/output error"):
        pread(m.mountpoint / "image.bin", victim.start, victim.size)
    assert victim.id.hex() in m.stderr
    assert pread(m.mountpoint / "image.bin", other.start, other.size) == \
        source[other.start:other.end]

    cache = tmp_path / "cache"
    chunk_file(cache, victim.id).parent.mkdir(parents=True)
    shutil.copy(chunk_file(store, other.id), chunk_file(cache, victim.id))
    m2 = mount("-s", store, "-c", cache, index)
    assert pread(m2.mountpoint / "image.bin", victim.start, victim.size) == \
        source[victim.start:victim.end]
    assert chunk_file(cache, victim.id).read_bytes() == chunk_file(store, victim.id).read_bytes()
