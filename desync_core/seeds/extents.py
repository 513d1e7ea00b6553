"""Moving bytes between files: reflink clones, copies, hole punching (``extract.md`` §5).

Cloning (``FICLONERANGE``) shares extents between files on filesystems that support
it (btrfs, XFS, recent ZFS): nothing is read or written, whatever the size. It needs
offsets and lengths that are multiples of the filesystem block size, and source and
destination offsets that are congruent modulo it. Whether cloning works between two
places is probed at run time (:func:`probe_clone`); everything falls back to copying.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import struct
from dataclasses import dataclass
from functools import cache

from desync_core.fileio import pread_exact, pwrite_all

#: ``_IOW(0x94, 13, struct file_clone_range)``.
FICLONERANGE = 0x4020940D
#: ``fallocate`` modes.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
#: Bytes moved per read/write when copying through user space.
COPY_BUFFER = 1024 * 1024
_ZEROS = bytes(COPY_BUFFER)


@dataclass
class Moved:
    """Bytes written by copying and by cloning."""

    copied: int = 0
    cloned: int = 0

    def add(self, other: Moved) -> None:
        """Accumulate ``other`` into this."""
        self.copied += other.copied
        self.cloned += other.cloned


def clone_range(src_fd: int, src_off: int, length: int, dst_fd: int, dst_off: int) -> None:
    """Share ``length`` bytes of ``src_fd`` at ``src_off`` into ``dst_fd`` at ``dst_off``.

    Raises:
        OSError: the filesystem cannot clone these ranges (EOPNOTSUPP, EXDEV, EINVAL
            for unaligned ranges...).
    """
    fcntl.ioctl(dst_fd, FICLONERANGE, struct.pack("qQQQ", src_fd, src_off, length, dst_off))


def probe_clone(dst_dir: str, src_dir: str) -> bool:
    """Whether files in ``src_dir`` can be cloned into files in ``dst_dir``.

    Creates an empty temporary file in each directory and clones zero bytes from one
    to the other, as desync does; any failure (read-only directory, unsupported
    filesystem, different filesystems) means no.
    """
    made: list[str] = []
    fds: list[int] = []
    try:
        for directory in (dst_dir, src_dir):
            path = os.path.join(directory, f".tmp-clone-probe.{secrets.randbits(32)}")
            fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            made.append(path)
        clone_range(fds[1], 0, 0, fds[0], 0)
        return True
    except OSError:
        return False
    finally:
        for fd in fds:
            os.close(fd)
        for path in made:
            with contextlib.suppress(OSError):
                os.unlink(path)


def copy_range(src_fd: int, src_off: int, length: int, dst_fd: int, dst_off: int) -> None:
    """Copy bytes between files, in the kernel where possible (``copy_file_range``)."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, dst_fd, length - done, src_off + done, dst_off + done)
            if n <= 0:
                break
            done += n
    except OSError as exc:
        # Not supported between these files (other filesystems, devices, old kernels):
        # copy the rest through user space. Real I/O errors surface there again.
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                             errno.EBADF, errno.EPERM, errno.ETXTBSY):
            raise
    if done < length:
        buf = bytearray(min(COPY_BUFFER, length - done))
        view = memoryview(buf)
        while done < length:
            n = min(len(buf), length - done)
            pread_exact(src_fd, view[:n], src_off + done)
            pwrite_all(dst_fd, view[:n], dst_off + done)
            done += n


def clone_or_copy(src_fd: int, src_off: int, length: int, dst_fd: int, dst_off: int,
                  blocksize: int, can_clone: bool) -> Moved:
    """Write a range of ``src_fd`` into ``dst_fd``, cloning the block-aligned middle.

    Cloning needs ``src_off ≡ dst_off (mod blocksize)``; the unaligned head and tail
    are copied. A clone call that fails (e.g. data not yet committed on ZFS) falls back
    to copying that range. Unlike desync, an already aligned first block is cloned too.
    """
    moved = Moved()
    if not can_clone or length <= 0 or src_off % blocksize != dst_off % blocksize:
        copy_range(src_fd, src_off, length, dst_fd, dst_off)
        moved.copied = length
        return moved
    a = -(-src_off // blocksize) * blocksize  # first block boundary at or after src_off
    b = (src_off + length) // blocksize * blocksize  # last block boundary before the end
    if b <= a:
        copy_range(src_fd, src_off, length, dst_fd, dst_off)
        moved.copied = length
        return moved
    if a > src_off:
        copy_range(src_fd, src_off, a - src_off, dst_fd, dst_off)
        moved.copied += a - src_off
    try:
        clone_range(src_fd, a, b - a, dst_fd, dst_off + (a - src_off))
        moved.cloned += b - a
    except OSError:
        copy_range(src_fd, a, b - a, dst_fd, dst_off + (a - src_off))
        moved.copied += b - a
    end = src_off + length
    if end > b:
        copy_range(src_fd, b, end - b, dst_fd, dst_off + (b - src_off))
        moved.copied += end - b
    return moved


@cache
def _fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    # The C library this process already uses; find_library (which runs ``ldconfig``
    # in a subprocess, ~20 ms) only if that fails.
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        from ctypes.util import find_library

        try:
            fn = ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True).fallocate
        except (OSError, AttributeError):
            return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Turn a range of a regular file into a hole (reads as zeros, frees the space).

    Returns False when the filesystem cannot do it; the range is then unchanged.
    """
    fn = _fallocate()
    if fn is None or length <= 0:
        return length <= 0
    return fn(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0


def zero_range(fd: int, offset: int, length: int) -> int:
    """Make a range read as zeros by writing zeros where it does not already.

    For targets that cannot punch holes (block devices, some filesystems): reading
    first avoids rewriting (and wearing) storage that is already zero. Returns the
    number of bytes written.
    """
    written = 0
    buf = bytearray(min(COPY_BUFFER, max(length, 1)))
    view = memoryview(buf)
    pos = offset
    end = offset + length
    while pos < end:
        n = min(len(buf), end - pos)
        got = os.preadv(fd, [view[:n]], pos)
        if got < n or view[:n] != _ZEROS[:n]:
            pwrite_all(fd, _ZEROS[:n], pos)
            written += n
        pos += n
    return written


__all__ = [
    "COPY_BUFFER",
    "FICLONERANGE",
    "Moved",
    "clone_or_copy",
    "clone_range",
    "copy_range",
    "pread_exact",
    "probe_clone",
    "punch_hole",
    "pwrite_all",
    "zero_range",
]
