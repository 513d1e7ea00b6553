"""Unmounting (SIGINT, SIGTERM, ``fusermount3 -u``), ``--store-file`` reloads on
SIGHUP, and one-line errors for bad command lines."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PATIENCE, MountProcess, is_mounted

Mount = Callable[..., MountProcess]


def read_file(path: Path) -> bytes | int:
    """The file's bytes, or the errno of the failed read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return exc.errno or -1


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3 -u"])
def test_unmount(mount: Mount, blob: tuple[Path, Path, Path], how: str) -> None:
    """Each way of stopping unmounts cleanly and the process exits 0, even while a file
    is open."""
    data, index, store = blob
    m = mount("-s", store, index)
    f = open(m.mountpoint / "image.bin", "rb")  # noqa: SIM115
    try:
        assert f.read(1000) == data.read_bytes()[:1000]
        if how == "fusermount3 -u":
            f.close()  # an open file makes the unmount busy
            subprocess.run(["fusermount3", "-u", str(m.mountpoint)], check=True, timeout=30)
        else:
            m.proc.send_signal(getattr(signal, how))
        assert m.wait_exit() == 0, m.stderr
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the connection is gone
            f.close()
    assert not is_mounted(m.mountpoint)
    assert "Traceback" not in m.stderr


def test_sighup_reloads_the_store_file(mount: Mount, blob: tuple[Path, Path, Path],
                                       tmp_path: Path) -> None:
    """Mounted on an empty store reads fail with EIO; after the store file names the real
    store and SIGHUP, the same file reads fine, without unmounting. An invalid store file
    is reported and the working stores stay."""
    data, index, store = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(empty)]}))
    m = mount("--store-file", store_file, index)
    path = m.mountpoint / "image.bin"
    assert read_file(path) == errno.EIO
    store_file.write_text(json.dumps({"stores": [str(store)], "cache": ""}))
    m.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + PATIENCE
    while read_file(path) != data.read_bytes():  # the reload is asynchronous
        assert time.monotonic() < deadline, m.stderr
        time.sleep(0.1)
    store_file.write_text("{not json")
    m.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + PATIENCE
    while "failed to reload configuration" not in m.stderr:
        assert time.monotonic() < deadline, m.stderr
        time.sleep(0.05)
    assert read_file(path) == data.read_bytes()
    line = next(x for x in m.stderr.splitlines() if "failed to reload" in x)
    assert f"failed to read store-file '{store_file}'" in line
    assert m.proc.poll() is None
    assert is_mounted(m.mountpoint)
    m.proc.send_signal(signal.SIGTERM)
    assert m.wait_exit() == 0


def run_cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "desync_core", "mount-index",
                           *map(str, args)], capture_output=True, text=True, timeout=60)


def test_bad_command_lines(blob: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Usage errors are one ``Error:`` line with exit code 2; nothing is mounted."""
    _data, index, store = blob
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    store_file = tmp_path / "s.json"
    store_file.write_text(json.dumps({"stores": [str(store)]}))
    cases = [
        (["--store-file", store_file, "-s", store, index, mnt],
         "--store and --store-file can't be used together"),
        (["--store-file", store_file, "-c", store, index, mnt],
         "--cache and --store-file can't be used together"),
        ([index, mnt], "no store provided"),
        (["-s", store, index, tmp_path / "missing"], "is not a directory"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [f"Error: {message}"] or (
            len(result.stderr.splitlines()) == 1 and message in result.stderr), result.stderr
    assert not is_mounted(mnt)


def test_bad_index_and_store_file(blob: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A broken index or an unreadable store file: one ``Error:`` line, non-zero exit."""
    _data, index, store = blob
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bad = tmp_path / "bad.caibx"
    bad.write_bytes(b"not an index")
    result = run_cli("-s", store, bad, mnt)
    assert result.returncode == 6, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: ")
    result = run_cli("--store-file", tmp_path / "nope.json", index, mnt)
    assert result.returncode != 0, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "failed to read store-file" in result.stderr
    assert not is_mounted(mnt)
