"""What reading and writing directories share: chattr flags, ioctls, open flags, errors."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from desync_core import flags as ff
from desync_core.archive.base import (
    display,
)
from desync_core.errors import DesyncError

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_NODUMP_FL = 0x40

#: catar flag bit <-> chattr(1) attribute (``catar.md`` §3.1).
CHATTR_BITS = (
    (ff.WITH_FLAG_APPEND, 0x20),
    (ff.WITH_FLAG_NOATIME, 0x80),
    (ff.WITH_FLAG_COMPR, 0x4),
    (ff.WITH_FLAG_NOCOW, 0x800000),
    (ff.WITH_FLAG_NODUMP, 0x40),
    (ff.WITH_FLAG_DIRSYNC, 0x10000),
    (ff.WITH_FLAG_IMMUTABLE, 0x10),
    (ff.WITH_FLAG_SYNC, 0x8),
    (ff.WITH_FLAG_NOCOMP, 0x400),
    (ff.WITH_FLAG_PROJINHERIT, 0x20000000),
)
#: Every chattr attribute catar can express.
CHATTR_KNOWN = sum(attr for _, attr in CHATTR_BITS)
XATTR_FLAGS = ff.WITH_XATTRS | ff.WITH_ACL | ff.WITH_SELINUX | ff.WITH_FCAPS
READ_BLOCK = 1 << 20
_SMALL = 1 << 16
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def chattr_to_flags(attrs: int) -> int:
    """chattr attributes -> catar flag bits."""
    return sum(bit for bit, attr in CHATTR_BITS if attrs & attr)


def flags_to_chattr(flags: int) -> int:
    """catar flag bits -> chattr attributes."""
    return sum(attr for bit, attr in CHATTR_BITS if flags & bit)


def ioctl_int(fd: int, request: int) -> int:
    """An ``int``-returning ioctl (0 where the filesystem does not support it)."""
    try:
        return _INT.unpack(fcntl.ioctl(fd, request, _ZERO_LONG))[0]
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            return 0
        raise


_INT = struct.Struct("<iI")
_ZERO_LONG = bytes(8)


def os_error(path: bytes, exc: OSError, action: str = "") -> DesyncError:
    what = f"{action} " if action else ""
    return DesyncError(f"{what}{display(path)}: {exc.strerror or exc}")


