"""Writing a node stream into a directory, safely (``untar``): no path leaves the
target, metadata as the archive says where the kernel allows."""

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

from desync_core.archive.base import (
    DIR_END,
    WITH_CHATTR,
    ArchiveOptions,
    DirEnd,
    Node,
    PlainFile,
    display,
    plain_node,
    valid_name,
)
from desync_core.archive.disk.common import (
    CHATTR_KNOWN,
    CREATE_FILE,
    FS_IOC_GETFLAGS,
    FS_IOC_SETFLAGS,
    OPEN_DIR,
    flags_to_chattr,
    ioctl_int,
    os_error,
)
from desync_core.archive.disk.reader import memo
from desync_core.archive.xattrs import (
    XATTR_ACL_ACCESS,
    XATTR_ACL_DEFAULT,
    XATTR_CAPABILITY,
    XATTR_SELINUX,
    acl_access_xattr,
    acl_default_xattr,
)
from desync_core.errors import ArchiveFormatError, DesyncError

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
            raise os_error(d.node.path, exc, "cannot set metadata of") from None
        finally:
            os.close(d.fd)

    def _open_made_dir(self, parent: int, made: MadeDir) -> _OpenDir:
        """Open a directory a :class:`DiskDirector` created (never following a link)."""
        node = made.node
        _check_name(node)
        try:
            fd = os.open(node.name, OPEN_DIR, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise DesyncError(f"{display(node.path)} exists and is not a directory") \
                    from None
            raise os_error(node.path, exc, "cannot create") from None
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
            raise os_error(node.path, exc, "cannot create") from None
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
            fd = os.open(name, OPEN_DIR, dir_fd=parent)
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
            fd = os.open(name, CREATE_FILE, initial, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            fd = os.open(name, CREATE_FILE, initial, dir_fd=parent)
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
                fd = os.open(name, CREATE_FILE, initial, dir_fd=dir_fd)
            except FileExistsError:
                self._remove(dir_fd, name)
                fd = os.open(name, CREATE_FILE, initial, dir_fd=dir_fd)
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
            raise os_error(path, exc, "cannot create") from None

    # -- metadata ------------------------------------------------------------------------

    def _owner(self, node: Node) -> tuple[int, int]:
        """The owner to set: names from the archive win when they exist here (casync)."""
        uid, gid = node.uid, node.gid
        user, group = node.user, node.group
        if user:
            found = memo(self._uids, user, lambda: pwd.getpwnam(os.fsdecode(user)).pw_uid)
            uid = uid if found is None else found
        if group:
            found = memo(self._gids, group, lambda: grp.getgrnam(os.fsdecode(group)).gr_gid)
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
            current = ioctl_int(fd, FS_IOC_GETFLAGS)
            new_flags = (current & ~CHATTR_KNOWN) | attrs
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
                raise os_error(item.path, exc, "cannot create") from None
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


