"""Ctrl-C (SIGINT) and SIGTERM sent to the real CLI while its workers run: exit status
130 with ``Error: interrupted``, no output or temporary file left, and no worker
process left behind.

To interrupt at a known point without timing, the command is made to block: a chunk
file of the store, or the input file, is a FIFO, and reading it blocks until the
process is signalled. The test waits (polling a state, not a time) until the command
has forked its workers and one of them is blocked there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.index import Index
from desync_core.testing.procfs import alive, children_of, wchan


def desync(*args: str | os.PathLike[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "desync_core", *map(str, args)],
                          capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]


def start(*args: str | os.PathLike[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "desync_core", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(autouse=True)
def sigint_not_ignored() -> Iterator[None]:
    """The commands start with SIGINT handled as usual even where the tests run with it
    ignored (started in the background by a script: ``cmd &`` without job control,
    ``nohup``). An ignored SIGINT stays ignored across ``exec``, so Python installs no
    handler and the command rightly ignores the test's SIGINT (it hung until the safety
    net); a handled one is reset to the default by ``exec``."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def blocked_on_fifo(pid: int) -> bool:
    """Whether process ``pid`` waits for a FIFO's writer."""
    return wchan(pid) in ("wait_for_partner", "fifo_open", "pipe_read", "pipe_wait")


def interrupt_when_blocked(proc: subprocess.Popen[bytes], sig: int, workers: int
                           ) -> tuple[bytes, list[int]]:
    """Wait until ``proc`` has ``workers`` children, one blocked on the FIFO; send
    ``sig``; return its stderr and the children it had."""
    try:
        kids: list[int] = []
        for _ in range(2400):  # a safety net against a hang, not a timing assertion
            if proc.poll() is not None:
                raise AssertionError(f"ended first: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            kids = children_of(proc.pid)
            if len(kids) >= workers and any(blocked_on_fifo(k) for k in kids):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no worker reached the blocking point")
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err, kids


def assert_interrupted(proc: subprocess.Popen[bytes], err: bytes, kids: list[int]) -> None:
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1] == "Error: interrupted", err.decode()
    assert [k for k in kids if alive(k)] == []


def chunk_file(store: Path, chunk_id: bytes) -> Path:
    return store / chunk_id.hex()[:4] / f"{chunk_id.hex()}.cacnk"


def block_a_chunk(store: Path, index_path: Path) -> None:
    """Replace a chunk file in the middle of the index (not the null chunk) by a FIFO."""
    index = Index.from_bytes(index_path.read_bytes(), str(index_path))
    null = index.digest.null_chunk_id(index.chunk_size_max)
    k = next(i for i in range(len(index) // 2, len(index)) if index.chunk_id(i) != null)
    path = chunk_file(store, index.chunk_id(k))
    path.unlink()
    os.mkfifo(path)


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],
                                  ids=["SIGINT", "SIGTERM"])


@SIGNALS
def test_interrupted_extract_on_forked_workers(tmp_path: Path, sig: int) -> None:
    data = random.Random(1).randbytes(8 << 20)
    (tmp_path / "blob").write_bytes(data)
    store = tmp_path / "store"
    desync("make", "-s", store, tmp_path / "blob.caibx", tmp_path / "blob")
    block_a_chunk(store, tmp_path / "blob.caibx")
    out = tmp_path / "out"
    out.mkdir()
    proc = start("extract", "-n", "2", "-s", store, tmp_path / "blob.caibx", out / "image")
    # (the other worker may have finished every other task and exited by then)
    err, kids = interrupt_when_blocked(proc, sig, 1)
    assert_interrupted(proc, err, kids)
    assert list(out.iterdir()) == []


@SIGNALS
def test_interrupted_untar_of_an_index(tmp_path: Path, sig: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(2)
    for i in range(40):
        (src / f"f{i:02}").write_bytes(rnd.randbytes(100_000))
    store = tmp_path / "store"
    desync("tar", "-i", "-s", store, tmp_path / "a.caidx", src)
    block_a_chunk(store, tmp_path / "a.caidx")
    proc = start("untar", "-i", "-s", store, tmp_path / "a.caidx", tmp_path / "out")
    # two children: the writer and the fetcher (blocked on the chunk)
    err, kids = interrupt_when_blocked(proc, sig, 2)
    assert_interrupted(proc, err, kids)
    assert len(kids) == 2


@SIGNALS
def test_interrupted_chop(tmp_path: Path, sig: int) -> None:
    # Large enough for chop's worker processes (32 MiB and more).
    data = random.Random(3).randbytes(40 << 20)
    (tmp_path / "blob").write_bytes(data)
    desync("make", tmp_path / "blob.caibx", tmp_path / "blob")
    (tmp_path / "blob").unlink()
    os.mkfifo(tmp_path / "input")  # the workers block opening it
    store = tmp_path / "store"
    store.mkdir()
    proc = start("chop", "-n", "2", "-s", store, tmp_path / "blob.caibx", tmp_path / "input")
    err, kids = interrupt_when_blocked(proc, sig, 2)
    assert_interrupted(proc, err, kids)
    assert list(store.rglob("*")) == []
