"""Copy-on-read: ``--cor-file``, ``--cor-state-save``, ``--cor-state-init``, ``--cor-init-n``
(state format of ``extract.md`` §6.8)."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PATIENCE, MountProcess

from desync_core.plugin_api import Index

Mount = Callable[..., MountProcess]


def bit(state: bytes, i: int) -> bool:
    return bool(state[i // 8] >> (i % 8) & 1)


def pread(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_copy_on_read_file_and_state(mount: Mount, blob: tuple[Path, Path, Path],
                                     tmp_path: Path) -> None:
    """Chunks read are written into the sparse file and marked in the state (saved on
    SIGHUP and at unmount); a second mount with the same file and state serves those
    chunks from the file alone (the store is empty) and fails the others with EIO."""
    data, index, store = blob
    source = data.read_bytes()
    idx = Index.from_bytes(index.read_bytes())
    cor, state = tmp_path / "blob.cor", tmp_path / "blob.state"
    m = mount("-s", store, "--cor-file", cor, "--cor-state-save", state, index)
    assert cor.stat().st_size == len(source)
    wanted = idx.chunk(2)
    assert pread(m.mountpoint / "image.bin", wanted.start, wanted.size) == \
        source[wanted.start:wanted.end]
    m.proc.send_signal(signal.SIGHUP)
    wait_for(state.exists, "state saved on SIGHUP")
    saved = state.read_bytes()
    assert len(saved) == (len(idx) + 7) // 8
    assert bit(saved, 2)
    assert pread(cor, wanted.start, wanted.size) == source[wanted.start:wanted.end]
    m.proc.send_signal(signal.SIGTERM)
    assert m.wait_exit() == 0, m.stderr
    saved = state.read_bytes()
    loaded = [i for i in range(len(idx)) if bit(saved, i)]
    assert 2 in loaded
    assert len(loaded) < len(idx)
    for i in loaded:
        c = idx.chunk(i)
        assert pread(cor, c.start, c.size) == source[c.start:c.end]

    empty = tmp_path / "empty"
    empty.mkdir()
    m2 = mount("-s", empty, "--cor-file", cor, "--cor-state-save", state, index)
    path = m2.mountpoint / "image.bin"
    assert pread(path, wanted.start, wanted.size) == source[wanted.start:wanted.end]
    missing = next(i for i in range(len(idx)) if not bit(saved, i)
                   and idx.chunk(i).id != idx.digest.null_chunk_id(idx.chunk_size_max))
    c = idx.chunk(missing)
    with pytest.raises(OSError, match="Input/output error") as exc:
        pread(path, c.start, c.size)
    assert exc.value.errno == errno.EIO


def test_state_init_preloads(mount: Mount, blob: tuple[Path, Path, Path],
                             tmp_path: Path) -> None:
    """``--cor-state-init`` loads every marked chunk into a new file in the background."""
    data, index, store = blob
    source = data.read_bytes()
    idx = Index.from_bytes(index.read_bytes())
    init = tmp_path / "init.state"
    marked = {0, 3, len(idx) - 1}
    state = bytearray((len(idx) + 7) // 8)
    for i in marked:
        state[i // 8] |= 1 << (i % 8)
    init.write_bytes(bytes(state))
    cor, saved = tmp_path / "new.cor", tmp_path / "saved.state"
    m = mount("-s", store, "--cor-file", cor, "--cor-state-init", init, "--cor-init-n", "2",
              "--cor-state-save", saved, index)

    def preloaded() -> bool:
        m.proc.send_signal(signal.SIGHUP)
        time.sleep(0.1)
        return saved.exists() and all(bit(saved.read_bytes(), i) for i in marked)

    wait_for(preloaded, "marked chunks preloaded")
    for i in marked:
        c = idx.chunk(i)
        assert pread(cor, c.start, c.size) == source[c.start:c.end]


def test_state_that_does_not_fit(mount: Mount, blob: tuple[Path, Path, Path],
                                 tmp_path: Path) -> None:
    """An init state of the wrong length is refused with desync's message."""
    _data, index, store = blob
    init = tmp_path / "wrong.state"
    init.write_bytes(b"\xff")
    m = mount("-s", store, "--cor-file", tmp_path / "x.cor", "--cor-state-init", init, index,
              wait=False)
    assert m.wait_exit() != 0
    assert m.stderr.strip().splitlines() == [
        "Error: sparse state file does not match the index"], m.stderr
