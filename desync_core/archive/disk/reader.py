"""Reading a directory tree into a node stream (``tar``)."""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import stat
import struct
from collections.abc import Callable, Iterator
from typing import Any

from desync_core import flags as ff
from desync_core.archive.base import (
    DIR_END,
    WITH_CHATTR,
    ArchiveOptions,
    Node,
    NodeStream,
    Payload,
    check_writable_flags,
    display,
)
from desync_core.archive.disk.common import (
    FS_IOC_FSGETXATTR,
    FS_IOC_GETFLAGS,
    FS_NODUMP_FL,
    OPEN_DIR,
    OPEN_FILE,
    READ_BLOCK,
    XATTR_FLAGS,
    chattr_to_flags,
    flags_to_chattr,
    ioctl_int,
    os_error,
)
from desync_core.archive.xattrs import (
    classify,
)
from desync_core.errors import DesyncError, UsageError

# -- reading -----------------------------------------------------------------------------


class _FilePayload(Payload):
    """Content of an open regular file; the descriptor is closed once read."""

    __slots__ = ("fd", "path", "size")

    def __init__(self, fd: int, size: int, path: bytes) -> None:
        self.fd = fd
        self.size = size
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _short(self, got: int) -> DesyncError:
        return DesyncError(f"{display(self.path)}: file changed while archiving "
                           f"(read {got} bytes, expected {self.size})")

    def read_all(self) -> bytes:
        try:
            data = os.read(self.fd, self.size) if self.size else b""
            while len(data) < self.size:
                more = os.read(self.fd, self.size - len(data))
                if not more:
                    raise self._short(len(data))
                data += more
            return data
        except OSError as exc:
            raise os_error(self.path, exc, "cannot read") from None
        finally:
            self.close()

    def readinto(self, view: memoryview) -> int:
        n = 0
        try:
            while n < len(view):
                got = os.readv(self.fd, [view[n:]])
                if not got:
                    break
                n += got
            return n
        except OSError as exc:
            raise os_error(self.path, exc, "cannot read") from None
        finally:
            self.close()

    def blocks(self) -> Iterator[bytes]:
        remaining = self.size
        try:
            while remaining:
                block = os.read(self.fd, min(READ_BLOCK, remaining))
                if not block:
                    raise self._short(self.size - remaining)
                remaining -= len(block)
                yield block
        except OSError as exc:
            raise os_error(self.path, exc, "cannot read") from None
        finally:
            self.close()


def memo(cache: dict[Any, Any], key: Any, lookup: Callable[[], Any]) -> Any:
    """``cache[key]``, computed once with ``lookup()`` (None if it raises KeyError)."""
    try:
        return cache[key]
    except KeyError:
        pass
    try:
        value = lookup()
    except KeyError:
        value = None
    cache[key] = value
    return value


class _NameCache:
    """uid/gid -> name lookups, as casync stores them (none for 0 or unknown ids)."""

    def __init__(self) -> None:
        self.users: dict[int, bytes | None] = {0: None}
        self.groups: dict[int, bytes | None] = {0: None}

    def user(self, uid: int) -> bytes | None:
        return memo(self.users, uid, lambda: os.fsencode(pwd.getpwuid(uid).pw_name))

    def group(self, gid: int) -> bytes | None:
        return memo(self.groups, gid, lambda: os.fsencode(grp.getgrgid(gid).gr_name))


class DiskReader:
    """Walk a directory tree into a node stream (``tar --input-format=disk``)."""

    def __init__(self, root: str, options: ArchiveOptions) -> None:
        check_writable_flags(options.feature_flags)
        self.root = root
        self.options = options
        flags = options.feature_flags
        self.flags = flags
        self.want_xattrs = bool(flags & XATTR_FLAGS)
        self.want_attrs = bool(flags & (WITH_CHATTR | ff.EXCLUDE_NODUMP))
        self.nodump = bool(flags & ff.EXCLUDE_NODUMP)
        # the chattr attributes the flags record (ext4 sets others, e.g. EXTENTS, always)
        self.chattr_mask = flags_to_chattr(flags & WITH_CHATTR)
        self.want_projid = bool(flags & ff.WITH_QUOTA_PROJID)
        self.names = _NameCache() if flags & ff.WITH_USER_NAMES else None
        self.submounts = bool(flags & ff.EXCLUDE_SUBMOUNTS) or options.one_file_system
        self.skip_types: set[int] = set()
        for bit, kinds in ((ff.WITH_SYMLINKS, (stat.S_IFLNK,)),
                           (ff.WITH_DEVICE_NODES, (stat.S_IFBLK, stat.S_IFCHR)),
                           (ff.WITH_FIFOS, (stat.S_IFIFO,)),
                           (ff.WITH_SOCKETS, (stat.S_IFSOCK,))):
            if not flags & bit:
                self.skip_types.update(kinds)

    def nodes(self) -> NodeStream:
        """Yield the tree's nodes; file contents are read when consumed."""
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise UsageError(f"{self.root} is not a directory") from None
        except OSError as exc:
            raise DesyncError(f"{self.root}: {exc.strerror}") from None
        stack: list[tuple[int, Iterator[tuple[bytes, bool, bool]], bytes, int]] = []
        pending: _FilePayload | None = None
        skip = self.options.skip
        try:
            st = os.fstat(root_fd)
            root = self._node(st, b"", b"", root_fd, -1)
            if root is None:  # (a directory is never left out; the types say it could)
                raise UsageError(f"{self.root} cannot be archived")
            yield root
            stack.append((root_fd, self._children(root_fd, b""), b"", st.st_dev))
            root_fd = -1
            while stack:
                if pending is not None:
                    pending.close()
                    pending = None
                dir_fd, children, dir_path, dev = stack[-1]
                child = next(children, None)
                if child is None:
                    os.close(dir_fd)
                    stack.pop()
                    yield DIR_END
                    continue
                name, is_dir, is_reg = child
                path = dir_path + b"/" + name if dir_path else name
                fd = -1
                try:
                    if is_dir or is_reg:
                        try:
                            fd = os.open(name, OPEN_DIR if is_dir else OPEN_FILE,
                                         dir_fd=dir_fd)
                        except FileNotFoundError:
                            continue  # vanished since the directory was read
                        st = os.fstat(fd)
                    else:
                        try:
                            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                    node = self._node(st, name, path, fd, dir_fd)
                except OSError as exc:
                    if fd >= 0:
                        os.close(fd)
                    raise os_error(path, exc) from None
                if node is None or (self.submounts and node.is_dir and st.st_dev != dev):
                    if fd >= 0:
                        os.close(fd)
                    continue
                if skip and (st.st_dev, st.st_ino) in skip:
                    self.options.warning(f"{display(path)} is the archive being written; "
                                         "not archived")
                    if fd >= 0:
                        os.close(fd)
                    continue
                if node.is_dir:
                    yield node
                    stack.append((fd, self._children(fd, path), path, st.st_dev))
                elif isinstance(node.payload, _FilePayload):
                    pending = node.payload
                    yield node
                else:
                    if fd >= 0:
                        os.close(fd)
                    yield node
        finally:
            if pending is not None:
                pending.close()
            if root_fd >= 0:
                os.close(root_fd)
            for dir_fd, *_ in stack:
                os.close(dir_fd)

    def _children(self, fd: int, path: bytes) -> Iterator[tuple[bytes, bool, bool]]:
        """``(name, is_dir, is_regular)`` of a directory's entries, in strcmp order."""
        try:
            with os.scandir(fd) as it:
                entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False),
                            e.is_file(follow_symlinks=False)) for e in it]
        except OSError as exc:
            raise os_error(path, exc, "cannot read directory") from None
        entries.sort()
        return iter(entries)

    def _node(self, st: os.stat_result, name: bytes, path: bytes, fd: int,
              dir_fd: int) -> Node | None:
        """Describe one object (``fd`` open for files/directories); None = leave out."""
        mode = st.st_mode
        kind = stat.S_IFMT(mode)
        if kind in self.skip_types:
            return None
        attrs = 0
        if fd >= 0 and self.want_attrs:
            attrs = ioctl_int(fd, FS_IOC_GETFLAGS)
            if self.nodump and attrs & FS_NODUMP_FL and path:
                return None
        node = Node(mode, name, path, st.st_uid, st.st_gid,
                    0 if self.options.no_time else st.st_mtime_ns)
        if attrs & self.chattr_mask:
            node.flags = chattr_to_flags(attrs)
        if self.names is not None:
            node.user = self.names.user(st.st_uid)
            node.group = self.names.group(st.st_gid)
        if self.want_xattrs and fd >= 0:
            # Like casync, only files and directories: it reads extended attributes
            # through a descriptor, which symlinks, devices, FIFOs and sockets lack.
            try:
                xnames = os.listxattr(fd)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EBADF, errno.ENOTSUP):
                    raise
                xnames = None
            if xnames:
                classify(node, self._xattrs(fd, xnames), self.flags)
        if self.want_projid and fd >= 0:
            buf = bytearray(28)
            try:
                fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
                node.quota_projid = struct.unpack_from("<I", buf, 12)[0]
            except OSError:
                pass
        if kind == stat.S_IFREG:
            node.size = st.st_size
            node.payload = _FilePayload(fd, st.st_size, path)
        elif kind == stat.S_IFLNK:
            node.target = os.readlink(name, dir_fd=dir_fd)
        elif kind in (stat.S_IFBLK, stat.S_IFCHR):
            node.rdev_major, node.rdev_minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        return node

    def _xattrs(self, fd: int, names: list[str]) -> Iterator[tuple[bytes, bytes]]:
        for xname in names:
            try:
                value = os.getxattr(fd, xname)
            except OSError as exc:
                if exc.errno == errno.ENODATA:
                    continue  # removed meanwhile
                raise
            yield os.fsencode(xname), value


