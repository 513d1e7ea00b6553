"""Encoding node streams as catar (byte-identical to casync's archives)."""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable, Iterator

from desync_core import flags as ff
from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    DIR_END,
    ENTRY_FLAG_BITS,
    Acl,
    AclEntry,
    DirEnd,
    Node,
    time_granularity,
)
from desync_core.archive.catar.elements import (
    ACL_DEFAULT,
    ACL_DEFAULT_GROUP,
    ACL_DEFAULT_USER,
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_USER,
    BLOCK_CAPACITY,
    BLOCK_SIZE,
    DEVICE,
    ENTRY,
    ENTRY_STRUCT,
    FCAPS,
    FILENAME,
    GOODBYE,
    GOODBYE_TAIL_MARKER,
    GROUP,
    HEADER,
    MAX_NAME,
    PAYLOAD,
    QQQ,
    QQQQ,
    QUOTA_PROJID,
    SELINUX,
    SMALL_FILE,
    SYMLINK,
    U64_MAX,
    UID_FLAGS,
    USER,
    XATTR,
    OpenDir,
    goodbye_items,
    valid_user_name,
)
from desync_core.errors import ArchiveFormatError, DesyncError

# -- encoder ----------------------------------------------------------------------------



class CatarEncoder:
    """Serialise a node stream as catar, casync-compatible for ``feature_flags``.

    Args:
        feature_flags: the archive's flags, written into every ENTRY (digest bit
            included); metadata the flags do not cover is dropped, as casync does.
    """

    def __init__(self, feature_flags: int = DEFAULT_FEATURE_FLAGS | ff.SHA512_256) -> None:
        problem = ff.normalization_problem(feature_flags)
        if problem:
            raise DesyncError(f"invalid archive feature flags {feature_flags:#x}: {problem}")
        self.feature_flags = feature_flags
        self._granularity = time_granularity(feature_flags)
        self._uid_limit = 0xFFFF if feature_flags & ff.WITH_16BIT_UIDS else 0xFFFFFFFF
        self._allowed = {stat.S_IFDIR, stat.S_IFREG}
        for bit, kind in ((ff.WITH_SYMLINKS, (stat.S_IFLNK,)),
                          (ff.WITH_DEVICE_NODES, (stat.S_IFBLK, stat.S_IFCHR)),
                          (ff.WITH_FIFOS, (stat.S_IFIFO,)),
                          (ff.WITH_SOCKETS, (stat.S_IFSOCK,))):
            if feature_flags & bit:
                self._allowed.update(kind)

    def encode(self, nodes: Iterable[Node | DirEnd]) -> Iterator[bytes | memoryview]:
        """Yield the archive in blocks of about 1 MiB (large file contents as read).

        Elements and small files are copied into a preallocated block (file contents
        are read straight into it); every block is a fresh buffer, so callers may keep
        the blocks they receive.

        Raises:
            ArchiveFormatError: the node stream is not a well-formed tree (children
                unsorted, duplicated or badly named, directories not closed).
        """
        cap = BLOCK_CAPACITY
        view = memoryview(bytearray(cap))
        pos = 0  # bytes used in view
        base = 0  # stream offset of view[0]

        def flush() -> memoryview:
            """The filled part of the block; continue in a fresh one."""
            nonlocal view, pos, base
            out = view[:pos]
            base += pos
            view = memoryview(bytearray(cap))
            pos = 0
            return out

        dirs: list[OpenDir] = []
        allowed = self._allowed
        it = iter(nodes)
        started = False
        for node in it:
            content = None
            if node is DIR_END:
                if not dirs:
                    raise ArchiveFormatError("node stream closes more directories than it opens")
                head = self._goodbye(dirs.pop(), base + pos)
            else:
                assert isinstance(node, Node)
                if started and not dirs:
                    raise ArchiveFormatError("node stream has more than one root")
                kind = node.mode & 0o170000
                if kind not in allowed:
                    if not dirs:
                        raise ArchiveFormatError(f"{node.display_path}: unsupported file type")
                    continue  # casync leaves out what the feature set cannot store
                head = self._head(node, kind, dirs[-1] if dirs else None, base + pos)
                if kind == stat.S_IFDIR:
                    entry = base + pos + (17 + len(node.name) if dirs else 0)
                    dirs.append(OpenDir(entry, node.path))
                elif kind == stat.S_IFREG and node.size:
                    content = node
                started = True
            n = len(head)
            inline = content is not None and content.size <= SMALL_FILE
            if pos + n + (content.size if inline else 0) > cap:  # type: ignore[union-attr]
                if pos:
                    yield flush()
                if n > cap:  # a huge GOODBYE table or metadata: hand it out as is
                    base += n
                    yield head
                    head, n, inline = b"", 0, False
            view[pos:pos + n] = head
            pos += n
            if content is not None:
                size = content.size
                payload = content.payload
                if payload is None:
                    raise ArchiveFormatError(f"{content.display_path}: file content missing")
                if inline:
                    got = payload.readinto(view[pos:pos + size])
                    pos += size
                else:
                    if pos:
                        yield flush()
                    got = 0
                    for block in payload.blocks():
                        got += len(block)
                        yield block
                    base += size
                if got != size:
                    raise _size_changed(content, got)
            if pos >= BLOCK_SIZE:
                yield flush()
            if node is DIR_END and not dirs:
                break
        else:
            if dirs:
                raise ArchiveFormatError("node stream ended inside a directory")
            if not started:
                raise ArchiveFormatError("node stream is empty")
        if next(it, None) is not None:
            raise ArchiveFormatError("node stream has more than one root")
        if pos:
            yield flush()

    def _head(self, node: Node, kind: int, parent: OpenDir | None, offset: int) -> bytes:
        """FILENAME (for children), ENTRY, metadata and PAYLOAD header/SYMLINK/DEVICE."""
        if parent is not None:
            name = node.name
            if (not name or name == b"." or name == b".." or b"/" in name or b"\0" in name
                    or len(name) >= MAX_NAME):
                raise ArchiveFormatError(f"{node.display_path}: invalid file name")
            names = parent.names
            if names and name <= names[-1]:
                what = "duplicate" if name == names[-1] else "unsorted"
                raise ArchiveFormatError(f"{node.display_path}: {what} directory entry")
            parent.starts.append(offset)
            names.append(name)
            head = HEADER.pack(17 + len(name), FILENAME) + name + b"\0" + self._entry(node, kind)
        else:
            head = self._entry(node, kind)
        if (node.user is not None or node.group is not None or node.xattrs or node.acl
                or node.selinux or node.fcaps or node.quota_projid):
            head += self._metadata(node, kind)
        if kind == stat.S_IFREG:
            return head + HEADER.pack(16 + node.size, PAYLOAD)
        if kind == stat.S_IFLNK:
            return head + HEADER.pack(17 + len(node.target), SYMLINK) + node.target + b"\0"
        if kind == stat.S_IFBLK or kind == stat.S_IFCHR:
            return head + QQQQ.pack(32, DEVICE, node.rdev_major, node.rdev_minor)
        return head

    def _entry(self, node: Node, kind: int) -> bytes:
        """The ENTRY element of ``node``, normalised like casync for the feature set."""
        flags = self.feature_flags
        mode = node.mode
        if kind == stat.S_IFLNK:
            mode = stat.S_IFLNK | 0o777
        elif flags & (ff.WITH_PERMISSIONS | ff.WITH_ACL):
            mode &= 0o177777
        elif flags & ff.WITH_READ_ONLY:
            writable = mode & 0o222
            mode = kind | ((0o777 if writable else 0o555) if kind == stat.S_IFDIR
                           else (0o666 if writable else 0o444))
        else:
            mode = kind | (0o777 if kind == stat.S_IFDIR else 0o666)
        eflags = 0
        if node.flags and (kind == stat.S_IFREG or kind == stat.S_IFDIR):
            eflags = node.flags & flags & ENTRY_FLAG_BITS
            if kind == stat.S_IFREG:
                eflags &= ~(ff.WITH_SUBVOLUME | ff.WITH_SUBVOLUME_RO)
        uid = node.uid
        gid = node.gid
        if flags & UID_FLAGS:
            limit = self._uid_limit
            if not (0 <= uid < limit and 0 <= gid < limit) or uid == 0xFFFF or gid == 0xFFFF:
                value = gid if 0 <= uid < limit and uid != 0xFFFF else uid
                raise ArchiveFormatError(f"{node.display_path}: user/group id {value} cannot "
                                         "be stored (casync rejects it)")
        else:
            uid = gid = 0
        g = self._granularity
        mtime = node.mtime & U64_MAX  # two's complement for times before 1970, like casync
        if g != 1:
            mtime = 0 if g is None else (mtime // g) * g
        return ENTRY_STRUCT.pack(64, ENTRY, flags, mode, eflags, uid, gid, mtime)

    def _metadata(self, node: Node, kind: int) -> bytearray:
        """USER, GROUP, XATTR, ACL_*, SELINUX, FCAPS and QUOTA_PROJID, as the flags say."""
        flags = self.feature_flags
        buf = bytearray()
        if flags & ff.WITH_USER_NAMES:
            if node.user and node.uid and valid_user_name(node.user):
                _cstring(buf, USER, node.user)
            if node.group and node.gid and valid_user_name(node.group):
                _cstring(buf, GROUP, node.group)
        if node.xattrs and flags & ff.WITH_XATTRS:
            previous = None
            for name, value in node.xattrs:
                if previous is not None and name <= previous:
                    raise ArchiveFormatError(f"{node.display_path}: extended attributes "
                                             "unsorted or duplicated")
                previous = name
                buf += HEADER.pack(17 + len(name) + len(value), XATTR)
                buf += name
                buf += b"\0"
                buf += value
        if node.acl and flags & ff.WITH_ACL:
            self._acl(buf, node.acl)
        if node.selinux and flags & ff.WITH_SELINUX:
            _cstring(buf, SELINUX, node.selinux)
        if node.fcaps and flags & ff.WITH_FCAPS and kind == stat.S_IFREG:
            buf += HEADER.pack(16 + len(node.fcaps), FCAPS)
            buf += node.fcaps
        if node.quota_projid and flags & ff.WITH_QUOTA_PROJID:
            buf += QQQ.pack(24, QUOTA_PROJID, node.quota_projid)
        return buf

    def _acl(self, buf: bytearray, acl: Acl) -> None:
        flags = self.feature_flags
        ids = bool(flags & UID_FLAGS)
        names = bool(flags & ff.WITH_USER_NAMES)

        def entries(kind: int, items: list[AclEntry]) -> None:
            def key(e: AclEntry) -> tuple[int, int, bytes, int]:
                name = e.name if names and e.name else None
                return (e.id if ids else 0, name is not None, name or b"", e.permissions)

            for e in sorted(items, key=key):
                name = e.name if names and e.name and valid_user_name(e.name) else None
                size = 32 + (len(name) + 1 if name else 0)
                buf.extend(_ENTRY_HEAD.pack(size, kind, e.id if ids else 0, e.permissions))
                if name:
                    buf.extend(name)
                    buf.append(0)

        entries(ACL_USER, acl.users)
        entries(ACL_GROUP, acl.groups)
        if acl.group_obj is not None:
            buf += QQQ.pack(24, ACL_GROUP_OBJ, acl.group_obj)
        if (acl.default_user_obj is not None
                                or acl.default_group_obj is not None
                                or acl.default_other is not None
                                or acl.default_mask is not None):
            buf += HEADER.pack(48, ACL_DEFAULT)
            buf += struct.pack("<4Q", *(U64_MAX if v is None else v for v in (
                acl.default_user_obj, acl.default_group_obj, acl.default_other,
                acl.default_mask)))
        entries(ACL_DEFAULT_USER, acl.default_users)
        entries(ACL_DEFAULT_GROUP, acl.default_groups)

    def _goodbye(self, d: OpenDir, offset: int) -> bytes:
        items = goodbye_items(d.starts, d.names, offset)
        size = 16 + 24 * (len(items) + 1)
        flat = [size, GOODBYE]
        for item in items:
            flat.extend(item)
        flat.extend((offset - d.entry_offset, size, GOODBYE_TAIL_MARKER))
        return struct.pack(f"<{len(flat)}Q", *flat)


_ENTRY_HEAD = struct.Struct("<4Q")


def _cstring(buf: bytearray, kind: int, value: bytes) -> None:
    buf += HEADER.pack(17 + len(value), kind)
    buf += value
    buf += b"\0"


def _size_changed(node: Node, got: int) -> DesyncError:
    return DesyncError(f"{node.display_path}: file changed while archiving "
                       f"(read {got} bytes, expected {node.size})")


