"""kill -9 during ``make`` and ``extract``: the store still verifies, no partial file
appears under a final name, and a re-run produces the exact result (#19).

Kill points are chosen by events, not by timing: ``make`` reads a FIFO the test feeds
(so it cannot finish before the kill), ``extract`` is killed while it writes, and once
while blocked on a chunk file that is a FIFO.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from desync_core.testing.fixtures import run_desync

PATIENCE = 60.0


def desync_proc(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "desync_core", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> bool:
    """Poll ``condition`` until it holds (True) or the process ended (False)."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.02)
    pytest.fail("the kill point was not reached in time")


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # SIGKILL
    proc.wait(timeout=PATIENCE)


def chunk_files(store: Path) -> list[Path]:
    return list(store.rglob("*.cacnk")) if store.exists() else []


def assert_store_verifies(cli: Callable[..., Any], store: Path) -> None:
    """``desync verify`` (in-process: the same command, without interpreter start-up)."""
    result = cli("verify", "-s", store)
    assert result.code == 0, result.err


@pytest.mark.parametrize("kill_after_chunks", [1, 50, 400])
def test_kill_make(tmp_path: Path, kill_after_chunks: int, cli, ok) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:  # random data until told to stop (make never sees the end)
        try:
            with open(fifo, "wb") as f:
                while not stop.is_set():
                    f.write(os.urandom(256 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    proc = desync_proc("make", "-m", "2:4:8", "-s", store, tmp_path / "x.caibx", fifo)
    try:
        assert wait_until(lambda: len(chunk_files(store)) >= kill_after_chunks, proc)
        assert proc.poll() is None  # still running: its input has not ended
        kill9(proc)
    finally:
        stop.set()
        if proc.poll() is None:
            kill9(proc)
        writer.join(timeout=PATIENCE)
    assert not (tmp_path / "x.caibx").exists()  # the index comes last, whole
    assert_store_verifies(cli, store)
    # The same store takes a complete run afterwards.
    (tmp_path / "in").write_bytes(os.urandom(1_000_000))
    ok("make", "-m", "2:4:8", "-s", store, tmp_path / "x.caibx", tmp_path / "in")
    assert_store_verifies(cli, store)
    ok("extract", "-s", store, tmp_path / "x.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "in").read_bytes()


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path, bytes]:
    data = os.urandom(24_000_000)
    (tmp_path / "in").write_bytes(data)
    run_desync("make", "-s", tmp_path / "store", tmp_path / "x.caibx", tmp_path / "in")
    return tmp_path / "store", tmp_path / "x.caibx", data


def temp_outputs(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".out.")]


def finish_and_check(tmp_path: Path, store: Path, index: Path, data: bytes,
                     cli: Callable[..., Any]) -> None:
    out = tmp_path / "out"
    assert not out.exists() or out.read_bytes() == data  # never a partial output
    assert_store_verifies(cli, store)
    result = cli("extract", "-s", store, index, out)
    assert result.code == 0, result.err
    assert out.read_bytes() == data


def test_kill_extract_while_writing(tmp_path: Path, made: tuple[Path, Path, bytes],  # type: ignore[no-untyped-def]
                                    cli) -> None:
    store, index, data = made
    proc = desync_proc("extract", "-s", store, index, tmp_path / "out")
    try:
        wait_until(lambda: any(p.stat().st_size > 0 for p in temp_outputs(tmp_path)
                               if p.exists()), proc)
    finally:
        kill9(proc)
    finish_and_check(tmp_path, store, index, data, cli)


def test_kill_extract_blocked_on_a_chunk(tmp_path: Path,  # type: ignore[no-untyped-def]
                                        made: tuple[Path, Path, bytes], cli) -> None:
    store, index, data = made
    chunks = sorted(chunk_files(store))
    blocking = chunks[len(chunks) // 2]
    saved = tmp_path / "saved.cacnk"
    os.rename(blocking, saved)
    os.mkfifo(blocking)  # reading it blocks until a writer comes: a fixed kill point
    proc = desync_proc("extract", "-s", store, index, tmp_path / "out")
    try:
        assert wait_until(lambda: bool(temp_outputs(tmp_path)), proc)
        assert proc.poll() is None
    finally:
        kill9(proc)
    os.unlink(blocking)
    os.rename(saved, blocking)
    finish_and_check(tmp_path, store, index, data, cli)
