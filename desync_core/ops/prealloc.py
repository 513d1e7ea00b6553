"""Allocating ``extract``'s output on tmpfs while the command is still starting up.

On tmpfs every page written to a new file is allocated (and charged) by the writing
call: measured on the 2-core benchmark machine, ~40% of the kernel time of writing
400 MB. The command's start-up (imports, numpy above all) keeps one core busy and
leaves the other idle for ~0.1 s. :func:`start` uses that core: a thread opens an
unnamed file (``O_TMPFILE``) in the output's directory and allocates it
(``fallocate``) piece by piece, until :meth:`Preallocation.take` stops it. The
assembly then adopts the file under the temporary name it would have created
(:func:`~desync_core.ops.extract.target.open_target`), punches the null-chunk runs
back into holes (so the output is as sparse as without this), and writes into pages
that already exist.

The file has no name until it is adopted: a run that fails or is interrupted before
leaves nothing behind. Anything unusual (not tmpfs, no ``O_TMPFILE``, an index that
is not a plain local file) just means no preallocation. This module imports no numpy:
it runs before the heavy imports.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from typing import Any

#: ``statfs.f_type`` of tmpfs (linux/magic.h).
TMPFS_MAGIC = 0x01021994
#: Bytes allocated per call: the allocation holds the file's lock, so a piece bounds
#: how long :meth:`Preallocation.take` (and a writer) can wait for the thread.
PIECE = 8 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
# The end of a caibx index: the last item (end offset, chunk id), then the table tail
# (two zero words, index offset, table size, marker) - index.md §1.
_LAST_ITEM_AND_TAIL = struct.Struct("<Q32sQQQQQ")
_TAIL_MARKER = 0x4B4F050E5549ECD1
_MIN_TABLE = 16 + 40 + 40  # table header, one item, tail


class Preallocation:
    """An unnamed file being allocated for a blob of ``length`` bytes (see module)."""

    def __init__(self, directory: str, index_path: str) -> None:
        self.directory = directory
        self.index_path = index_path
        self.fd = -1
        self.length = -1
        #: bytes allocated from the start of the file (final once taken)
        self.allocated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="desync-prealloc",
                                        daemon=True)

    def _run(self) -> None:
        try:
            length = blob_length(self.index_path)
            if length is None or length < PIECE or not on_tmpfs(self.directory):
                return
            fd = os.open(self.directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
        except Exception:  # best effort only: the run then creates its file as usual
            return
        self.fd, self.length = fd, length
        try:
            while self.allocated < length and not self._stop.is_set():
                piece = min(PIECE, length - self.allocated)
                os.posix_fallocate(fd, self.allocated, piece)
                self.allocated += piece
        except OSError:
            pass  # (no space: the writes will say so) what is allocated stays usable

    def wait(self) -> None:
        """Wait until the thread is done (the whole file allocated, or given up)."""
        self._thread.join()

    def take(self, length: int) -> tuple[int, int] | None:
        """Stop allocating; ``(fd, allocated bytes)`` of the file for a blob of
        ``length`` bytes, now owned by the caller, or None (nothing to adopt)."""
        self._stop.set()
        self._thread.join()
        fd, self.fd = self.fd, -1
        if fd < 0:
            return None
        if length != self.length or self.allocated <= 0:
            os.close(fd)
            return None
        return fd, self.allocated

    def discard(self) -> None:
        """Stop and close the file if nobody took it."""
        self._stop.set()
        self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def start(index_path: str, output: str) -> Preallocation | None:
    """Start preallocating for extracting ``index_path`` (a local file) into a new
    temporary file next to ``output``; None where it cannot apply (Linux only)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "O_TMPFILE"):
        return None
    if index_path == "-" or "://" in index_path:
        return None
    prealloc = Preallocation(os.path.dirname(os.path.abspath(output)), index_path)
    prealloc._thread.start()
    return prealloc


def blob_length(index_path: str) -> int | None:
    """The blob length an index file declares (its last item's end offset), read from
    its end only; None if it does not look like an index. (Only a hint: the adopted
    file must match the index as read and checked later.)"""
    with open(index_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 64 + _MIN_TABLE - 16:
            return None
        f.seek(size - _LAST_ITEM_AND_TAIL.size)
        raw = f.read(_LAST_ITEM_AND_TAIL.size)
    if len(raw) != _LAST_ITEM_AND_TAIL.size:
        return None
    end, _id, zero1, zero2, _offset, table_size, marker = _LAST_ITEM_AND_TAIL.unpack(raw)
    if marker != _TAIL_MARKER or zero1 or zero2 or table_size < _MIN_TABLE:
        return None
    return int(end)


def on_tmpfs(directory: str) -> bool:
    """Whether ``directory`` is on tmpfs (``statfs``)."""
    import ctypes

    libc: Any = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if libc.statfs(os.fsencode(directory), buf) != 0:
        return False
    return int(struct.unpack_from("@l", buf.raw)[0]) == TMPFS_MAGIC


def punch_holes(fd: int, ranges: list[tuple[int, int]]) -> None:
    """Deallocate ``(start, end)`` byte ranges of ``fd`` again (they read as zeros)."""
    if not ranges:
        return
    import ctypes

    libc: Any = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    for a, b in ranges:
        if libc.fallocate(fd, mode, a, b - a) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


__all__ = ["Preallocation", "blob_length", "on_tmpfs", "punch_holes", "start"]
