"""The ``disk`` archive format: walk a directory tree, or extract a node stream safely.

Reading (``desync tar DIR``) follows casync's encoder: children in ``strcmp`` order,
symlinks never followed, regular files and directories opened with ``O_NOFOLLOW`` and
described by ``fstat`` of the open descriptor, only the metadata the feature flags
store is collected, files with the ``nodump`` attribute left out under
exclude-nodump, other filesystems left out with ``-x`` (exclude-submounts).

Writing (``desync untar``) never touches anything outside the target directory:
every object is created relative to its parent's directory descriptor, directories
are entered with ``O_NOFOLLOW | O_DIRECTORY`` (an existing symlink is an error, never
followed), files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` after removing
whatever was there. Names are checked again here, so a hostile producer cannot
smuggle ``..`` or ``/`` through. Metadata follows desync (``catar.md`` §7): owner,
extended attributes (incl. file capabilities and SELinux labels), ACLs, mode,
mtime, chattr attributes; directories get theirs when they are complete.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import shutil
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from desync_core import flags as ff
from desync_core.archive.base import (
    DIR_END,
    WITH_CHATTR,
    ArchiveFormat,
    ArchiveOptions,
    DirEnd,
    ForkedWriterParts,
    Node,
    NodeStream,
    Payload,
    PlainFile,
    check_writable_flags,
    display,
    plain_node,
    valid_name,
)
from desync_core.archive.xattrs import (
    XATTR_ACL_ACCESS,
    XATTR_ACL_DEFAULT,
    XATTR_CAPABILITY,
    XATTR_SELINUX,
    acl_access_xattr,
    acl_default_xattr,
    classify,
)
from desync_core.errors import ArchiveFormatError, DesyncError, UsageError

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
_CHATTR_KNOWN = sum(attr for _, attr in CHATTR_BITS)
_XATTR_FLAGS = ff.WITH_XATTRS | ff.WITH_ACL | ff.WITH_SELINUX | ff.WITH_FCAPS
_READ_BLOCK = 1 << 20
_SMALL = 1 << 16
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def chattr_to_flags(attrs: int) -> int:
    """chattr attributes -> catar flag bits."""
    return sum(bit for bit, attr in CHATTR_BITS if attrs & attr)


def flags_to_chattr(flags: int) -> int:
    """catar flag bits -> chattr attributes."""
    return sum(attr for bit, attr in CHATTR_BITS if flags & bit)


def _ioctl_int(fd: int, request: int) -> int:
    """An ``int``-returning ioctl (0 where the filesystem does not support it)."""
    try:
        return _INT.unpack(fcntl.ioctl(fd, request, _ZERO_LONG))[0]
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            return 0
        raise


_INT = struct.Struct("<iI")
_ZERO_LONG = bytes(8)


def _os_error(path: bytes, exc: OSError, action: str = "") -> DesyncError:
    what = f"{action} " if action else ""
    return DesyncError(f"{what}{display(path)}: {exc.strerror or exc}")


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
            raise _os_error(self.path, exc, "cannot read") from None
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
            raise _os_error(self.path, exc, "cannot read") from None
        finally:
            self.close()

    def blocks(self) -> Iterator[bytes]:
        remaining = self.size
        try:
            while remaining:
                block = os.read(self.fd, min(_READ_BLOCK, remaining))
                if not block:
                    raise self._short(self.size - remaining)
                remaining -= len(block)
                yield block
        except OSError as exc:
            raise _os_error(self.path, exc, "cannot read") from None
        finally:
            self.close()


def _memo(cache: dict[Any, Any], key: Any, lookup: Callable[[], Any]) -> Any:
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
        return _memo(self.users, uid, lambda: os.fsencode(pwd.getpwuid(uid).pw_name))

    def group(self, gid: int) -> bytes | None:
        return _memo(self.groups, gid, lambda: os.fsencode(grp.getgrgid(gid).gr_name))


class DiskReader:
    """Walk a directory tree into a node stream (``tar --input-format=disk``)."""

    def __init__(self, root: str, options: ArchiveOptions) -> None:
        check_writable_flags(options.feature_flags)
        self.root = root
        self.options = options
        flags = options.feature_flags
        self.flags = flags
        self.want_xattrs = bool(flags & _XATTR_FLAGS)
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
                            fd = os.open(name, _OPEN_DIR if is_dir else _OPEN_FILE,
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
                    raise _os_error(path, exc) from None
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
            raise _os_error(path, exc, "cannot read directory") from None
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
            attrs = _ioctl_int(fd, FS_IOC_GETFLAGS)
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


# -- writing -----------------------------------------------------------------------------


class _OpenDir:
    """A directory being extracted: its descriptor and node."""

    __slots__ = ("fd", "fresh", "mode_done", "node")

    def __init__(self, fd: int, node: Node, *, fresh: bool, mode_done: bool) -> None:
        self.fd = fd
        self.node = node
        self.fresh = fresh  # made by this run: new objects in it belong to us
        self.mode_done = mode_done  # created with its final permissions


def _check_name(node: Node) -> None:
    if not valid_name(node.name):
        raise ArchiveFormatError(f"refusing to create {display(node.path)!r}: "
                                 "invalid file name")


class DiskWriter:
    """Extract a node stream below a target directory, never writing outside it.

    Cheap paths for the common case (they change no result): a file or directory whose
    permissions survive the umask is created with them (no ``chmod``), and an object
    created in a directory made by this run already belongs to the extracting user and
    group, so ``chown`` is skipped when that is the owner the archive wants.
    """

    def __init__(self, target: str, options: ArchiveOptions) -> None:
        self.target = target
        self.options = options
        self.same_owner = not options.no_same_owner
        self.same_perms = not options.no_same_permissions
        self._uids: dict[bytes, int | None] = {}
        self._gids: dict[bytes, int | None] = {}
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.ids = (os.geteuid(), os.getegid())
        self.uid, self.gid = self.ids
        # permission bits a file cannot be created with (they need a chmod)
        self._special_or_masked = 0o7000 | self.umask

    def write(self, nodes: Iterable[Node | DirEnd | PlainFile | MadeDir]) -> None:
        """Create every node of the stream; the root maps to the target.

        A directory's own metadata is applied once everything in it is written. The
        stream may contain :data:`~desync_core.archive.base.PlainFile` tuples and
        :class:`MadeDir` items (directories a :class:`DiskDirector` created).
        """
        it = iter(nodes)
        root = next(it, None)
        if type(root) is tuple:
            root = plain_node(root)
        if not isinstance(root, Node):
            raise ArchiveFormatError("archive contains no entries")
        if not root.is_dir:
            self._write_single(root, it)
            return
        stack = [_OpenDir(self.open_root(), root, fresh=False, mode_done=False)]
        try:
            # Read the stream to its end even after the root is complete: the decoder
            # checks for trailing data only when asked for more.
            for node in it:
                if type(node) is tuple:
                    if not stack:
                        raise ArchiveFormatError("archive has more than one root")
                    self._plain_file(stack[-1], *node)
                    continue
                if node is DIR_END:
                    if not stack:
                        raise ArchiveFormatError("archive closes more directories than it "
                                                 "opens")
                    d = stack.pop()
                    self._finish_dir(d, stack[-1].fresh if stack else False)
                    continue
                if not stack:
                    raise ArchiveFormatError("archive has more than one root")
                parent = stack[-1]
                if type(node) is MadeDir:
                    stack.append(self._open_made_dir(parent.fd, node))
                    continue
                assert isinstance(node, Node)
                entry = self._create(parent.fd, node, parent.fresh)
                if entry is not None:
                    stack.append(entry)
            if stack:
                raise ArchiveFormatError("archive ended inside a directory")
        finally:
            for d in stack:
                os.close(d.fd)

    def open_root(self) -> int:
        """Create the target directory if needed; its descriptor."""
        try:
            os.makedirs(self.target, exist_ok=True)
            return os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileExistsError:
            raise DesyncError(f"{self.target} exists and is not a directory") from None
        except OSError as exc:
            raise DesyncError(f"{self.target}: {exc.strerror}") from None

    def _finish_dir(self, d: _OpenDir, parent_fresh: bool) -> None:
        """Apply a complete directory's metadata and close it."""
        try:
            self._apply(d.fd, d.node, parent_fresh, d.mode_done)
        except OSError as exc:
            raise _os_error(d.node.path, exc, "cannot set metadata of") from None
        finally:
            os.close(d.fd)

    def _open_made_dir(self, parent: int, made: MadeDir) -> _OpenDir:
        """Open a directory a :class:`DiskDirector` created (never following a link)."""
        node = made.node
        _check_name(node)
        try:
            fd = os.open(node.name, _OPEN_DIR, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise DesyncError(f"{display(node.path)} exists and is not a directory") \
                    from None
            raise _os_error(node.path, exc, "cannot create") from None
        return _OpenDir(fd, node, fresh=made.fresh, mode_done=made.mode_done)

    def _write_single(self, node: Node,
                      rest: Iterator[Node | DirEnd | PlainFile | MadeDir]) -> None:
        """An archive whose root is not a directory becomes the file ``target``."""
        directory, name = os.path.split(os.path.abspath(self.target))
        node.name = os.fsencode(name)
        node.path = node.name
        try:
            parent = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise DesyncError(f"{directory}: {exc.strerror}") from None
        try:
            self._create(parent, node, False)
        finally:
            os.close(parent)
        if next(rest, None) is not None:
            raise ArchiveFormatError("archive has more than one root")

    # -- creation ------------------------------------------------------------------------

    def _initial_mode(self, node: Node, private: int) -> tuple[int, bool]:
        """``(mode to create with, whether it is already final)``.

        The archive's permissions when the umask leaves them intact and they hold no
        setuid/setgid/sticky bit; else ``private`` (a later ``chmod`` sets them). With
        ``--no-same-permissions``: 0666/0777 and the umask, final.
        """
        if not self.same_perms:
            return (0o777 if private == 0o700 else 0o666), True
        mode = node.mode & 0o7777
        if mode & (0o7000 | self.umask) or (private == 0o700 and mode & 0o700 != 0o700):
            return private, False
        return mode, True

    def _create(self, parent: int, node: Node, fresh: bool) -> _OpenDir | None:
        """Create one node in ``parent`` (``fresh``: made by this run).

        Returns the open directory for directories, None for anything else.
        """
        _check_name(node)
        name = node.name
        kind = stat.S_IFMT(node.mode)
        try:
            if kind == stat.S_IFDIR:
                return self._make_dir(parent, node)
            if kind == stat.S_IFREG:
                self._make_file(parent, node, fresh)
            elif kind == stat.S_IFLNK:
                self._replace(parent, node, lambda: os.symlink(node.target, name,
                                                                 dir_fd=parent))
                self._finish_path(parent, node, symlink=True)
            elif kind in (stat.S_IFBLK, stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK):
                device = os.makedev(node.rdev_major, node.rdev_minor)
                initial = 0o666 if not self.same_perms else 0o600
                self._replace(parent, node, lambda: os.mknod(name, kind | initial, device,
                                                              dir_fd=parent))
                self._finish_path(parent, node, symlink=False)
            else:
                raise ArchiveFormatError(f"{display(node.path)}: unsupported file type")
        except OSError as exc:
            raise _os_error(node.path, exc, "cannot create") from None
        return None

    def _replace(self, parent: int, node: Node, create: Any) -> None:
        """Run ``create``; if the name is taken, remove what is there and retry."""
        try:
            create()
        except FileExistsError:
            self._remove(parent, node.name)
            create()

    def _remove(self, parent: int, name: bytes) -> None:
        """Remove ``name`` in ``parent`` (recursively, without following symlinks)."""
        try:
            os.unlink(name, dir_fd=parent)
        except IsADirectoryError:
            shutil.rmtree(os.fsdecode(name), dir_fd=parent)

    def _make_dir(self, parent: int, node: Node) -> _OpenDir:
        name = node.name
        initial, final = self._initial_mode(node, 0o700)
        created = True
        try:
            os.mkdir(name, initial, dir_fd=parent)
        except FileExistsError:
            created = final = False
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise DesyncError(f"{display(node.path)} exists and is not a directory") \
                    from None
            raise
        if created:
            # A setgid parent passes its group (and the setgid bit) on: then neither the
            # owner of what is created inside nor this directory's mode is as assumed.
            st = os.fstat(fd)
            created = (st.st_uid, st.st_gid) == self.ids and not st.st_mode & stat.S_ISGID
            final = final and created
        return _OpenDir(fd, node, fresh=created, mode_done=final)

    def _make_file(self, parent: int, node: Node, fresh: bool) -> None:
        name = node.name
        initial, final = self._initial_mode(node, 0o600)
        try:
            fd = os.open(name, _CREATE_FILE, initial, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            fd = os.open(name, _CREATE_FILE, initial, dir_fd=parent)
        try:
            payload = node.payload
            if node.size and payload is not None:
                for block in payload.blocks():  # views of the archive stream: no copies
                    written = os.write(fd, block)
                    if written != len(block):
                        _write_all(fd, memoryview(block)[written:])
            self._apply(fd, node, fresh, final)
        finally:
            os.close(fd)

    def _plain_file(self, parent: _OpenDir, name: bytes, path: bytes, mode: int, uid: int,
                    gid: int, mtime: int, buf: bytes | bytearray | memoryview, start: int,
                    size: int) -> None:
        """``_create`` + ``_make_file`` + ``_apply`` for a :data:`PlainFile`, inlined.

        The same system calls as for a regular-file :class:`Node` with these fields:
        this is the hot path of ``untar``.
        """
        if (not name or name == b"." or name == b".." or b"/" in name
                or b"\0" in name):  # valid_name, inlined
            raise ArchiveFormatError(f"refusing to create {display(path)!r}: "
                                     "invalid file name")
        perms = mode & 0o7777
        if not self.same_perms:  # _initial_mode, inlined
            initial = 0o666
            final = True
        else:
            final = not perms & self._special_or_masked
            initial = perms if final else 0o600
        dir_fd = parent.fd
        try:
            try:
                fd = os.open(name, _CREATE_FILE, initial, dir_fd=dir_fd)
            except FileExistsError:
                self._remove(dir_fd, name)
                fd = os.open(name, _CREATE_FILE, initial, dir_fd=dir_fd)
            try:
                if size:
                    view = memoryview(buf)[start:start + size]
                    written = os.write(fd, view)
                    if written != size:
                        _write_all(fd, view[written:])
                if self.same_owner and (not parent.fresh or uid != self.uid
                                        or gid != self.gid):
                    os.fchown(fd, uid, gid)
                if not final:
                    os.fchmod(fd, perms)
                if mtime:
                    os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(path, exc, "cannot create") from None

    # -- metadata ------------------------------------------------------------------------

    def _owner(self, node: Node) -> tuple[int, int]:
        """The owner to set: names from the archive win when they exist here (casync)."""
        uid, gid = node.uid, node.gid
        user, group = node.user, node.group
        if user:
            found = _memo(self._uids, user, lambda: pwd.getpwnam(os.fsdecode(user)).pw_uid)
            uid = uid if found is None else found
        if group:
            found = _memo(self._gids, group, lambda: grp.getgrnam(os.fsdecode(group)).gr_gid)
            gid = gid if found is None else found
        return uid, gid

    def _xattr_list(self, node: Node) -> list[tuple[bytes, bytes]]:
        """Extended attributes to set, in application order (owner-related first)."""
        out: list[tuple[bytes, bytes]] = []
        if self.same_owner:
            out.extend(node.xattrs or ())
            if node.selinux:
                out.append((XATTR_SELINUX, node.selinux + b"\0"))
            if node.fcaps and stat.S_ISREG(node.mode):
                out.append((XATTR_CAPABILITY, node.fcaps))
        if self.same_perms and node.acl:
            access = acl_access_xattr(node.acl, node.mode)
            if access:
                out.append((XATTR_ACL_ACCESS, access))
            if stat.S_ISDIR(node.mode):
                default = acl_default_xattr(node.acl, node.mode)
                if default:
                    out.append((XATTR_ACL_DEFAULT, default))
        return out

    def _apply(self, fd: int, node: Node, fresh: bool = False, mode_done: bool = False) -> None:
        """Owner, xattrs, ACLs, mode, mtime and attributes of an open file/directory.

        Args:
            fd: the open file or directory.
            node: what it should look like.
            fresh: it was created by this run in a directory made by this run, so it
                belongs to the extracting user and group already.
            mode_done: it was created with its final permissions.
        """
        if self.same_owner:
            owner = self._owner(node)
            if not fresh or owner != self.ids:
                os.fchown(fd, *owner)
        if node.xattrs or node.acl or node.selinux or node.fcaps:
            for name, value in self._xattr_list(node):
                _set_xattr(fd, name, value, node)
        if self.same_perms and not mode_done:
            os.fchmod(fd, node.mode & 0o7777)
        if node.mtime:
            _set_mtime(lambda: os.utime(fd, ns=(node.mtime, node.mtime)), node)
        attrs = flags_to_chattr(node.flags & WITH_CHATTR) if node.flags else 0
        if attrs:
            # Like chattr(1): keep the attributes catar does not know (e.g. extents).
            current = _ioctl_int(fd, FS_IOC_GETFLAGS)
            new_flags = (current & ~_CHATTR_KNOWN) | attrs
            try:
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<i", new_flags) + bytes(4))
            except OSError as exc:
                if exc.errno not in (errno.ENOTTY, errno.EOPNOTSUPP):
                    raise

    def _finish_path(self, parent: int, node: Node, *, symlink: bool) -> None:
        """Metadata of a node that cannot be opened (symlink, device, FIFO, socket)."""
        name = node.name
        if self.same_owner:
            os.chown(name, *self._owner(node), dir_fd=parent, follow_symlinks=False)
        xattrs = self._xattr_list(node)
        if xattrs:
            path = f"/proc/self/fd/{parent}/{os.fsdecode(name)}"
            for xname, value in xattrs:
                _set_xattr(path, xname, value, node)
        if self.same_perms and not symlink:
            os.chmod(name, node.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        if node.mtime:
            _set_mtime(lambda: os.utime(name, ns=(node.mtime, node.mtime), dir_fd=parent,
                                        follow_symlinks=False), node)


#: setxattr errors that mean "this name or value is not acceptable", not "you may not".
_REFUSED_XATTR = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ERANGE,
                            errno.E2BIG})


def _set_xattr(target: int | str, name: bytes, value: bytes, node: Node) -> None:
    """Set one extended attribute; a name or value the kernel refuses (an unknown
    namespace, a malformed ACL or capability) is the archive's fault: exit 6."""
    try:
        if isinstance(target, int):
            os.setxattr(target, name, value)
        else:
            os.setxattr(target, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _REFUSED_XATTR:
            raise ArchiveFormatError(
                f"{display(node.path)}: the kernel refused extended attribute "
                f"{name.decode(errors='replace')!r}: {exc.strerror}") from None
        raise


def _set_mtime(apply: Callable[[], None], node: Node) -> None:
    """Set a modification time; one the kernel cannot represent is the archive's fault."""
    try:
        apply()
    except (OverflowError, ValueError) as exc:
        raise ArchiveFormatError(f"{display(node.path)}: invalid modification time "
                                 f"{node.mtime}: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise ArchiveFormatError(f"{display(node.path)}: the kernel refused modification "
                                     f"time {node.mtime}: {exc.strerror}") from None
        raise


class MadeDir:
    """A directory a :class:`DiskDirector` created: the writer opens it, as it would
    open the one it created (``fresh``, ``mode_done``: see :class:`_OpenDir`)."""

    __slots__ = ("fresh", "mode_done", "node")

    def __init__(self, node: Node, fresh: bool, mode_done: bool) -> None:
        self.node = node
        self.fresh = fresh
        self.mode_done = mode_done

    def __reduce__(self) -> tuple[Any, ...]:
        return (MadeDir, (self.node, self.fresh, self.mode_done))


class DiskDirector:
    """The share of a two-process extraction done where the archive is decoded.

    :class:`~desync_core.archive.pipeline.ForkedWriter` passes every item here before
    sending it to the writing process (a :class:`DiskWriter`). Directories are created
    here (and sent as :class:`MadeDir`, which the writer opens), so that plain files
    can be written by either process: :meth:`take` writes a plain file here when
    ``busy()`` says the writer is behind, which keeps both processes working. The
    checks and system calls are the writer's own (same object, same methods).

    One difference to extraction in one process: if the writer fails, files this
    process wrote after the failing element stay (the error is reported all the same).
    """

    def __init__(self, writer: DiskWriter) -> None:
        self.writer = writer
        self.stack: list[_OpenDir] = []
        self.started = False

    def take(self, item: Any, busy: bool) -> Any:
        """Handle ``item`` here, in part or whole; what to send to the writer (None:
        nothing)."""
        writer = self.writer
        stack = self.stack
        if type(item) is tuple:
            if busy and stack:
                writer._plain_file(stack[-1], *item)
                return None
            return item
        if item is DIR_END:
            if stack:
                os.close(stack.pop().fd)
            return item
        if not self.started:  # the root
            self.started = True
            if isinstance(item, Node) and item.is_dir:
                stack.append(_OpenDir(writer.open_root(), item, fresh=False,
                                      mode_done=False))
            return item
        if isinstance(item, Node) and item.is_dir and stack:
            _check_name(item)
            try:
                made = writer._make_dir(stack[-1].fd, item)
            except OSError as exc:
                raise _os_error(item.path, exc, "cannot create") from None
            stack.append(made)
            return MadeDir(item, made.fresh, made.mode_done)
        return item

    def close(self) -> None:
        """Close the directories still open here."""
        while self.stack:
            os.close(self.stack.pop().fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class DiskFormat(ArchiveFormat):
    """A directory on local disk."""

    name = "disk"
    can_read = True
    can_write = True
    accepts_plain_files = True

    def read(self, source: str, options: ArchiveOptions) -> NodeStream:
        return DiskReader(source, options).nodes()

    def write(self, nodes: Iterable[Node | DirEnd], target: str,
              options: ArchiveOptions) -> None:
        DiskWriter(target, options).write(nodes)

    def forked_writer(self, target: str, options: ArchiveOptions) -> ForkedWriterParts:
        # Files are written by the forked child; directories are made where the
        # archive is decoded (the director), so plain files can be written early.
        writer = DiskWriter(target, options)
        director = DiskDirector(writer)
        return ForkedWriterParts(writer.write, director.take, director.close)


__all__ = [
    "CHATTR_BITS",
    "DiskDirector",
    "DiskFormat",
    "DiskReader",
    "DiskWriter",
    "MadeDir",
    "chattr_to_flags",
    "flags_to_chattr",
]
