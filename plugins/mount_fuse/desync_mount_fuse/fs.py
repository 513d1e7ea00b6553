"""The FUSE filesystems (mfusepy ``Operations``): one blob file, or an archive's tree.

Every read goes through a :class:`~desync_mount_fuse.blob.Blob`; each open file handle
has its own :class:`~desync_mount_fuse.blob.ReadStream` (readahead state). A store
error becomes ``EIO`` for the reader (the loader has printed one line about it).
Both filesystems are read-only: anything that would write gets ``EROFS``.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import time
from typing import Any

import mfusepy  # type: ignore[import-untyped,unused-ignore]

from desync_mount_fuse.blob import Blob, ReadStream
from desync_mount_fuse.tree import Tree, attrs

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC
ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)


def _fail(code: int) -> mfusepy.FuseOSError:
    return mfusepy.FuseOSError(code)


class _Base(mfusepy.Operations):
    """Handles, read-only refusals and the session pointer both filesystems share."""

    use_ns = True

    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self._streams: dict[int, ReadStream] = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()
        #: Set once libfuse has called ``init`` (the mount is up).
        self.started = threading.Event()
        #: Set by a stop signal: the next request ends the FUSE loop.
        self.stopping = threading.Event()
        #: Called (on a new thread) by ``init`` when a stop came before the mount was up:
        #: it must make the kernel send a request.
        self.provoke_request: Any = None
        self.uid, self.gid = os.getuid(), os.getgid()

    def init(self, path: str) -> None:
        self.started.set()
        if self.stopping.is_set() and self.provoke_request is not None:
            threading.Thread(target=self.provoke_request, daemon=True).start()

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        if self.stopping.is_set():
            mfusepy.fuse_exit()  # must run on a FUSE thread: this one
        return self.attributes(path)

    def attributes(self, path: str) -> dict[str, int]:
        """``stat`` of ``path``.

        Raises:
            FuseOSError: ENOENT.
        """
        raise NotImplementedError

    def _new_handle(self, fi: Any) -> None:
        if fi.flags & _WRITE_FLAGS:
            raise _fail(errno.EROFS)
        fh = next(self._handles)
        with self._lock:
            self._streams[fh] = ReadStream()
        fi.fh = fh
        fi.keep_cache = 1  # the content never changes: keep the kernel's page cache

    def release(self, path: str, fi: Any) -> int:
        with self._lock:
            self._streams.pop(fi.fh, None)
        return 0

    def _read(self, offset: int, size: int, fh: int, limit: int | None = None) -> bytes:
        stream = self._streams.get(fh)
        try:
            return self.blob.read(offset, size, stream, limit)
        except Exception:
            raise _fail(errno.EIO) from None

    def statfs(self, path: str) -> dict[str, int]:
        blocks = (self.blob.length + 4095) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_namemax": 255}

    def access(self, path: str, amode: int) -> int:
        if amode & os.W_OK:
            raise _fail(errno.EROFS)
        return 0


class BlobFS(_Base):
    """A directory holding one regular file: the index's blob (``mount-index``).

    Args:
        blob: the blob's reader.
        name: the file's name (the index's name without its extension).
    """

    def __init__(self, blob: Blob, name: str) -> None:
        super().__init__(blob)
        self.name = name
        self.path = "/" + name
        self.mtime = time.time_ns()

    def attributes(self, path: str) -> dict[str, int]:
        common = {"st_uid": self.uid, "st_gid": self.gid, "st_mtime": self.mtime,
                  "st_atime": self.mtime, "st_ctime": self.mtime}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_ino": 1, "st_nlink": 2, **common}
        if path == self.path:
            size = self.blob.length
            return {"st_mode": stat.S_IFREG | 0o444, "st_ino": 2, "st_nlink": 1,
                    "st_size": size, "st_blocks": (size + 511) // 512, **common}
        raise _fail(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[Any]:
        if path != "/":
            raise _fail(errno.ENOTDIR)
        # inode numbers in every entry: readdir(3) hides entries whose d_ino is 0
        here = {"st_mode": stat.S_IFDIR, "st_ino": 1}
        return [(".", here, 0), ("..", here, 0),
                (self.name, {"st_mode": stat.S_IFREG, "st_ino": 2}, 0)]

    def open(self, path: str, fi: Any) -> int:
        if path != self.path:
            raise _fail(errno.ENOENT)
        self._new_handle(fi)
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        return self._read(offset, size, fh.fh)


class TreeFS(_Base):
    """The directory tree of a ``.caidx`` archive (like ``casync mount``).

    Args:
        blob: the archive stream's reader.
        tree: the archive's entries (from :func:`~desync_mount_fuse.tree.build_tree`).
    """

    def __init__(self, blob: Blob, tree: Tree) -> None:
        super().__init__(blob)
        self.tree = tree
        self._files: dict[int, Any] = {}  # open handle -> its entry

    def _entry(self, path: str) -> Any:
        entry = self.tree.lookup(path)
        if entry is None:
            raise _fail(errno.ENOENT)
        return entry

    def attributes(self, path: str) -> dict[str, int]:
        return attrs(self._entry(path))

    def readdir(self, path: str, fh: int) -> list[Any]:
        entry = self._entry(path)
        if entry.children is None:
            raise _fail(errno.ENOTDIR)
        # inode numbers in every entry: readdir(3) hides entries whose d_ino is 0
        here = {"st_mode": stat.S_IFDIR, "st_ino": entry.number}
        return [(".", here, 0), ("..", {"st_mode": stat.S_IFDIR, "st_ino": 1}, 0),
                *((name, {"st_mode": child.mode, "st_ino": child.number}, 0)
                  for name, child in entry.children.items())]

    def readlink(self, path: str) -> str:
        entry = self._entry(path)
        if not stat.S_ISLNK(entry.mode):
            raise _fail(errno.EINVAL)
        return os.fsdecode(entry.target)

    def open(self, path: str, fi: Any) -> int:
        entry = self._entry(path)
        if not stat.S_ISREG(entry.mode):
            raise _fail(errno.EISDIR if entry.children is not None else errno.EACCES)
        self._new_handle(fi)
        with self._lock:
            self._files[fi.fh] = entry
        return 0

    def release(self, path: str, fi: Any) -> int:
        with self._lock:
            self._files.pop(fi.fh, None)
        return super().release(path, fi)

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        entry = self._files.get(fh.fh)
        if entry is None:
            raise _fail(errno.EBADF)
        size = min(size, entry.size - offset)
        if size <= 0:
            return b""
        return self._read(entry.offset + offset, size, fh.fh, entry.offset + entry.size)

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        values = self._entry(path).xattrs
        if not values or name not in values:
            raise _fail(ENOATTR)
        return values[name]

    def listxattr(self, path: str) -> list[str]:
        return list(self._entry(path).xattrs or ())


__all__ = ["BlobFS", "TreeFS"]
