"""Inputs other than regular files, compared with casync: stdin, FIFOs, stdout, block
devices (real subprocesses, since stdin/stdout are involved)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from compat_util import random_bytes, store_files, text_bytes

pytestmark = pytest.mark.casync


@pytest.fixture(scope="module")
def blob_and_casync_index(tmp_path_factory: pytest.TempPathFactory, casync_run):  # type: ignore[no-untyped-def]
    """A 2.5 MB input with casync's index (2:8:32) and store."""
    base = tmp_path_factory.mktemp("io")
    blob = base / "blob"
    blob.write_bytes(random_bytes(21, 1_500_000) + text_bytes(22, 1_000_000))
    index = casync_run.make(base / "casync.caibx", blob, base / "casync.store", "2:8:32")
    return blob, index, base / "casync.store"


def test_make_from_stdin(blob_and_casync_index, tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob, expected, cstore = blob_and_casync_index
    desync("make", "-m", "2:8:32", "-s", str(tmp_path / "store"), str(tmp_path / "x.caibx"), "-",
           input=blob.read_bytes())
    assert (tmp_path / "x.caibx").read_bytes() == expected
    assert store_files(tmp_path / "store") == store_files(cstore)


def test_make_index_to_stdout(blob_and_casync_index, desync) -> None:  # type: ignore[no-untyped-def]
    blob, expected, _ = blob_and_casync_index
    proc = desync("make", "-m", "2:8:32", "-", str(blob))
    assert proc.stdout == expected


def test_make_from_stdin_to_stdout(blob_and_casync_index, desync) -> None:  # type: ignore[no-untyped-def]
    blob, expected, _ = blob_and_casync_index
    assert desync("make", "-m", "2:8:32", "-", "-", input=blob.read_bytes()).stdout == expected


def test_make_from_fifo(blob_and_casync_index, tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob, expected, _ = blob_and_casync_index
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(blob.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        desync("make", "-m", "2:8:32", str(tmp_path / "x.caibx"), str(fifo))
    finally:
        writer.join(timeout=60)
    assert (tmp_path / "x.caibx").read_bytes() == expected


def test_list_chunks_and_extract_read_index_from_stdin(blob_and_casync_index, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                        desync) -> None:
    blob, expected, cstore = blob_and_casync_index
    listed = desync("list-chunks", "-", input=expected).stdout.decode().split()
    cindex = tmp_path / "c.caibx"
    cindex.write_bytes(expected)
    assert listed == desync("list-chunks", str(cindex)).stdout.decode().split()
    desync("extract", "-s", str(cstore), "-", str(tmp_path / "out"), input=expected)
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """Attach ``image`` to a free loop device (needs root and losetup)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.fail("block-device tests need root and losetup (run the suite as root)")
    proc = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"losetup failed: {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)


@pytest.mark.root
def test_block_device_make_and_verify_index(tmp_path: Path, casync_run, desync) -> None:  # type: ignore[no-untyped-def]
    """A loop device: same index as casync's; verify-index checks the device."""
    image = tmp_path / "disk.img"
    data = random_bytes(31, 2 * 1024 * 1024) + text_bytes(32, 1024 * 1024)  # 3 MiB: 512-aligned
    image.write_bytes(data)
    with loop_device(image) as dev:
        expected = casync_run.make(tmp_path / "casync.caibx", Path(dev),
                                   tmp_path / "casync.store")
        desync("make", "-s", str(tmp_path / "store"), str(tmp_path / "dev.caibx"), dev)
        assert (tmp_path / "dev.caibx").read_bytes() == expected
        assert store_files(tmp_path / "store") == store_files(tmp_path / "casync.store")
        desync("verify-index", str(tmp_path / "dev.caibx"), dev)
        # The image changes under the device: verify-index must notice.
        with open(dev, "r+b") as f:
            f.seek(1_000_000)
            f.write(b"\xff" * 16)
        proc = desync("verify-index", str(tmp_path / "dev.caibx"), dev, check=False)
        assert proc.returncode == 5
        assert proc.stderr.decode().startswith("Error: seed index for ")
    desync("extract", "-s", str(tmp_path / "store"), str(tmp_path / "dev.caibx"),
           str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == data
