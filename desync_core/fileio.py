"""Positional reads and writes that do not stop short.

``preadv``/``pwrite`` may transfer less than asked (signals, pipes, some filesystems);
everything that reads a range of a file or writes one at an offset goes through these.
"""

from __future__ import annotations

import os


def pread_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset``.

    Raises:
        EOFError: the file ends first (the message gives the offset; callers add what
            it means for them).
    """
    got = 0
    total = len(view)
    while got < total:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            raise EOFError(f"unexpected end of file at offset {offset + got}")
        got += n


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


__all__ = ["pread_exact", "pwrite_all"]
