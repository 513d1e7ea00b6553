"""``make`` from a FIFO opens it exactly once (#19.8).

The CLI used to open the FIFO to size the progress bar and close it again. That open
paired with the writer; the close left the writer without a reader, so a write landing
in the gap failed with EPIPE, the writer went away, and make's real open then waited
forever for a writer (about 1 run in 40 under CPU load). Timing alone reproduces it
only sometimes, so the test counts with inotify how often a reader closed the FIFO:
once, at the end. (Closes are counted, not opens: inotify merges identical events in a
row, and the writer's and make's opens happen together.)
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20
IN_NONBLOCK = 0o4000
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class ReaderCloseCounter:
    """Counts closes of a path opened read-only (inotify through libc); opens and
    writers' closes are watched too so that consecutive reader closes stay distinct."""

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            pytest.fail(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        if self.libc.inotify_add_watch(self.fd, os.fsencode(path),
                                       IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE) < 0:
            pytest.fail(f"inotify_add_watch: {os.strerror(ctypes.get_errno())}")
        self.closes = 0

    def drain(self) -> int:
        """Read the pending events; the number of reader closes seen so far."""
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 4096)
            pos = 0
            while pos < len(data):
                _wd, mask, _cookie, length = EVENT.unpack_from(data, pos)
                self.closes += bool(mask & IN_CLOSE_NOWRITE)
                pos += EVENT.size + length
        return self.closes

    def close(self) -> None:
        os.close(self.fd)


def test_make_opens_its_fifo_input_once(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob = os.urandom(1_000_000)
    (tmp_path / "blob").write_bytes(blob)
    expected = desync("make", "-m", "2:8:32", "-", str(tmp_path / "blob")).stdout
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    counter = ReaderCloseCounter(fifo)
    lost_reader: list[BaseException] = []

    def feed() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(blob)
        except BrokenPipeError as exc:
            lost_reader.append(exc)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    proc = subprocess.Popen([sys.executable, "-m", "desync_core", "make", "-m", "2:8:32",
                             str(tmp_path / "x.caibx"), str(fifo)], stderr=subprocess.PIPE)
    try:
        writer.join(timeout=60)
        if lost_reader:  # make would now wait forever for a writer: give it one
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        closes = counter.drain()
        counter.close()
    assert closes == 1, f"a reader closed the FIFO {closes} times (make opens it once)"
    assert not lost_reader
    assert proc.returncode == 0, err.decode(errors="replace")
    assert (tmp_path / "x.caibx").read_bytes() == expected
