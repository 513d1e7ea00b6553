"""The catar archive format (``catar.md``): encoder, validating decoder, GOODBYE tables.

:class:`CatarEncoder` turns a node stream into catar bytes exactly as casync writes
them for the same feature set (element order, casync's XATTR form, mode/time/uid
normalisation, GOODBYE tables with SipHash-2-4 name hashes in BST order).

:class:`CatarDecoder` turns catar bytes back into a node stream and refuses anything
casync would not have written: unknown or misplaced elements, bad sizes, names that
are empty, ``.``, ``..`` or contain ``/``, children out of order or duplicated,
GOODBYE tables that do not describe the directory, inconsistent feature flags,
truncation and trailing data. Every problem is an :class:`ArchiveFormatError` naming
the offset and path; nothing is yielded for the element that failed.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import struct
import sys
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import lru_cache
from typing import Any, Literal, cast, overload

from desync_core import flags as ff
from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    DESYNC_FEATURE_FLAGS,
    DIR_END,
    ENTRY_FLAG_BITS,
    Acl,
    AclEntry,
    ArchiveFormat,
    ArchiveOptions,
    DirEnd,
    Node,
    NodeStream,
    Payload,
    PlainFile,
    display,
    time_granularity,
)
from desync_core.archive.siphash import name_hashes
from desync_core.errors import ArchiveFormatError, DesyncError

# -- element types (catar.md §2) --------------------------------------------------------

ENTRY = 0x1396FABCEA5BBB51
USER = 0xF453131AAEEACCB3
GROUP = 0x25EB6AC969396A52
XATTR = 0xB8157091F80BC486
ACL_USER = 0x297DC88B2EF12FAF
ACL_GROUP = 0x36F2ACB56CB3DD0B
ACL_GROUP_OBJ = 0x23047110441F38F3
ACL_DEFAULT = 0xFE3EEDA6823C8CD0
ACL_DEFAULT_USER = 0xBDF03DF9BD010A91
ACL_DEFAULT_GROUP = 0xA0CB1168782D1F51
FCAPS = 0xF7267DB0AFED0629
QUOTA_PROJID = 0x161BAF2D8772A72B
SELINUX = 0x46FAF0602FD26C59
SYMLINK = 0x664A6FB6830E0D6C
DEVICE = 0xAC3DACE369DFE643
PAYLOAD = 0x8B9E1D93D6DCFFC9
FILENAME = 0x6DBB6EBCB3161F0B
GOODBYE = 0xDFD35C5E8327C403
GOODBYE_TAIL_MARKER = 0x57446FA533702943

ELEMENT_NAMES = {
    ENTRY: "ENTRY", USER: "USER", GROUP: "GROUP", XATTR: "XATTR", ACL_USER: "ACL_USER",
    ACL_GROUP: "ACL_GROUP", ACL_GROUP_OBJ: "ACL_GROUP_OBJ", ACL_DEFAULT: "ACL_DEFAULT",
    ACL_DEFAULT_USER: "ACL_DEFAULT_USER", ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    FCAPS: "FCAPS", QUOTA_PROJID: "QUOTA_PROJID", SELINUX: "SELINUX", SYMLINK: "SYMLINK",
    DEVICE: "DEVICE", PAYLOAD: "PAYLOAD", FILENAME: "FILENAME", GOODBYE: "GOODBYE",
}

_U64 = 0xFFFFFFFFFFFFFFFF
_HEADER = struct.Struct("<QQ")
_ENTRY = struct.Struct("<8Q")
_ENTRY_BODY = struct.Struct("<6Q")
_QQQ = struct.Struct("<QQQ")
_QQQQ = struct.Struct("<QQQQ")
_Q = struct.Struct("<Q")
_ITEM = struct.Struct("<QQQ")

#: Limits casync applies (catar.md §2).
MAX_NAME = 256  # filename incl. NUL
MAX_USER = 256
MAX_XATTR = 16 + 255 + 1 + 65536
MAX_FCAPS = 16 + 65536
MAX_SELINUX = 16 + 4096
MAX_SYMLINK = 16 + 4096

#: Bytes per block handed to consumers of an encoded stream.
BLOCK_SIZE = 1 << 20
#: Files up to this size are copied into the output buffer; larger ones are streamed.
_SMALL_FILE = 1 << 16
#: Output block buffer: a block is handed out once it holds BLOCK_SIZE bytes.
_BLOCK_CAPACITY = BLOCK_SIZE + _SMALL_FILE + (1 << 16)

_UID_FLAGS = ff.WITH_16BIT_UIDS | ff.WITH_32BIT_UIDS
_USER_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_-]*")


def _valid_user_name(name: bytes) -> bool:
    """casync's rule for USER/GROUP names: ``[A-Za-z_][A-Za-z0-9_-]*``, not ``root``."""
    return len(name) < MAX_USER and name != b"root" and _USER_NAME.fullmatch(name) is not None


# -- GOODBYE tables ---------------------------------------------------------------------


@lru_cache(maxsize=4096)
def bst_order(n: int) -> tuple[int, ...]:
    """For ``n`` hash-sorted items, the sorted index stored at each table position.

    casync's ``ca_make_bst`` (``catar.md`` §5.2): a complete binary search tree laid
    out like a heap, so a reader can binary-search the table by hash.
    """
    out = [0] * n

    def place(lo: int, count: int, levels: int, i: int) -> None:
        while count:
            p = 1 << (levels - 1)
            # left subtree size: full if the bottom level is at least half full
            k = p - 1 if count >= p - 1 + p // 2 else count - p // 2
            out[i] = lo + k
            place(lo, k, levels - 1, 2 * i + 1)
            lo, count, levels, i = lo + k + 1, count - k - 1, levels - 1, 2 * i + 2

    if n:
        place(0, n, n.bit_length(), 0)
    return tuple(out)


def make_bst(items: list[Any]) -> list[Any]:
    """Permute sorted ``items`` into BST order (the test vectors' ``make_bst``)."""
    return [items[i] for i in bst_order(len(items))]


def goodbye_items(starts: list[int], names: list[bytes],
                  goodbye_offset: int) -> list[tuple[int, int, int]]:
    """The ``(offset, size, hash)`` items of a directory's GOODBYE table, in table order.

    Args:
        starts: absolute offsets of the children's FILENAME elements.
        names: the children's names.
        goodbye_offset: absolute offset of the GOODBYE element.

    Equal hashes are ordered like casync does (earlier child first).
    """
    n = len(starts)
    hashes = name_hashes(names)
    ends = [*starts[1:], goodbye_offset]
    keyed = sorted(range(n), key=lambda i: (hashes[i], i))
    return [
        (goodbye_offset - starts[j], ends[j] - starts[j], hashes[j])
        for j in (keyed[k] for k in bst_order(n))
    ]


# -- encoder ----------------------------------------------------------------------------


class _Dir:
    """A directory being encoded or decoded: where its ENTRY is, its children so far."""

    __slots__ = ("entry_offset", "names", "path", "starts")

    def __init__(self, entry_offset: int, path: bytes) -> None:
        self.entry_offset = entry_offset
        self.path = path
        self.starts: list[int] = []
        self.names: list[bytes] = []


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
        cap = _BLOCK_CAPACITY
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

        dirs: list[_Dir] = []
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
                    dirs.append(_Dir(entry, node.path))
                elif kind == stat.S_IFREG and node.size:
                    content = node
                started = True
            n = len(head)
            inline = content is not None and content.size <= _SMALL_FILE
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

    def _head(self, node: Node, kind: int, parent: _Dir | None, offset: int) -> bytes:
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
            head = _HEADER.pack(17 + len(name), FILENAME) + name + b"\0" + self._entry(node, kind)
        else:
            head = self._entry(node, kind)
        if (node.user is not None or node.group is not None or node.xattrs or node.acl
                or node.selinux or node.fcaps or node.quota_projid):
            head += self._metadata(node, kind)
        if kind == stat.S_IFREG:
            return head + _HEADER.pack(16 + node.size, PAYLOAD)
        if kind == stat.S_IFLNK:
            return head + _HEADER.pack(17 + len(node.target), SYMLINK) + node.target + b"\0"
        if kind == stat.S_IFBLK or kind == stat.S_IFCHR:
            return head + _QQQQ.pack(32, DEVICE, node.rdev_major, node.rdev_minor)
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
        if flags & _UID_FLAGS:
            limit = self._uid_limit
            if not (0 <= uid < limit and 0 <= gid < limit) or uid == 0xFFFF or gid == 0xFFFF:
                value = gid if 0 <= uid < limit and uid != 0xFFFF else uid
                raise ArchiveFormatError(f"{node.display_path}: user/group id {value} cannot "
                                         "be stored (casync rejects it)")
        else:
            uid = gid = 0
        g = self._granularity
        mtime = node.mtime & _U64  # two's complement for times before 1970, like casync
        if g != 1:
            mtime = 0 if g is None else (mtime // g) * g
        return _ENTRY.pack(64, ENTRY, flags, mode, eflags, uid, gid, mtime)

    def _metadata(self, node: Node, kind: int) -> bytearray:
        """USER, GROUP, XATTR, ACL_*, SELINUX, FCAPS and QUOTA_PROJID, as the flags say."""
        flags = self.feature_flags
        buf = bytearray()
        if flags & ff.WITH_USER_NAMES:
            if node.user and node.uid and _valid_user_name(node.user):
                _cstring(buf, USER, node.user)
            if node.group and node.gid and _valid_user_name(node.group):
                _cstring(buf, GROUP, node.group)
        if node.xattrs and flags & ff.WITH_XATTRS:
            previous = None
            for name, value in node.xattrs:
                if previous is not None and name <= previous:
                    raise ArchiveFormatError(f"{node.display_path}: extended attributes "
                                             "unsorted or duplicated")
                previous = name
                buf += _HEADER.pack(17 + len(name) + len(value), XATTR)
                buf += name
                buf += b"\0"
                buf += value
        if node.acl and flags & ff.WITH_ACL:
            self._acl(buf, node.acl)
        if node.selinux and flags & ff.WITH_SELINUX:
            _cstring(buf, SELINUX, node.selinux)
        if node.fcaps and flags & ff.WITH_FCAPS and kind == stat.S_IFREG:
            buf += _HEADER.pack(16 + len(node.fcaps), FCAPS)
            buf += node.fcaps
        if node.quota_projid and flags & ff.WITH_QUOTA_PROJID:
            buf += _QQQ.pack(24, QUOTA_PROJID, node.quota_projid)
        return buf

    def _acl(self, buf: bytearray, acl: Acl) -> None:
        flags = self.feature_flags
        ids = bool(flags & _UID_FLAGS)
        names = bool(flags & ff.WITH_USER_NAMES)

        def entries(kind: int, items: list[AclEntry]) -> None:
            def key(e: AclEntry) -> tuple[int, int, bytes, int]:
                name = e.name if names and e.name else None
                return (e.id if ids else 0, name is not None, name or b"", e.permissions)

            for e in sorted(items, key=key):
                name = e.name if names and e.name and _valid_user_name(e.name) else None
                size = 32 + (len(name) + 1 if name else 0)
                buf.extend(_ENTRY_HEAD.pack(size, kind, e.id if ids else 0, e.permissions))
                if name:
                    buf.extend(name)
                    buf.append(0)

        entries(ACL_USER, acl.users)
        entries(ACL_GROUP, acl.groups)
        if acl.group_obj is not None:
            buf += _QQQ.pack(24, ACL_GROUP_OBJ, acl.group_obj)
        if (acl.default_user_obj is not None
                                or acl.default_group_obj is not None
                                or acl.default_other is not None
                                or acl.default_mask is not None):
            buf += _HEADER.pack(48, ACL_DEFAULT)
            buf += struct.pack("<4Q", *(_U64 if v is None else v for v in (
                acl.default_user_obj, acl.default_group_obj, acl.default_other,
                acl.default_mask)))
        entries(ACL_DEFAULT_USER, acl.default_users)
        entries(ACL_DEFAULT_GROUP, acl.default_groups)

    def _goodbye(self, d: _Dir, offset: int) -> bytes:
        items = goodbye_items(d.starts, d.names, offset)
        size = 16 + 24 * (len(items) + 1)
        flat = [size, GOODBYE]
        for item in items:
            flat.extend(item)
        flat.extend((offset - d.entry_offset, size, GOODBYE_TAIL_MARKER))
        return struct.pack(f"<{len(flat)}Q", *flat)


_ENTRY_HEAD = struct.Struct("<4Q")


def _cstring(buf: bytearray, kind: int, value: bytes) -> None:
    buf += _HEADER.pack(17 + len(value), kind)
    buf += value
    buf += b"\0"


def _size_changed(node: Node, got: int) -> DesyncError:
    return DesyncError(f"{node.display_path}: file changed while archiving "
                       f"(read {got} bytes, expected {node.size})")


# -- decoder ----------------------------------------------------------------------------

#: Metadata elements that may follow ENTRY, and whether they may repeat.
_META = {
    USER: False, GROUP: False, XATTR: True, ACL_USER: True, ACL_GROUP: True,
    ACL_GROUP_OBJ: False, ACL_DEFAULT: False, ACL_DEFAULT_USER: True,
    ACL_DEFAULT_GROUP: True, SELINUX: False, FCAPS: False, QUOTA_PROJID: False,
}
_KNOWN_TYPES = frozenset(
    {stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFBLK, stat.S_IFCHR, stat.S_IFIFO,
     stat.S_IFSOCK})


class _Input:
    """Buffered reading of a byte stream with absolute offsets."""

    __slots__ = ("base", "buf", "pos", "read")

    def __init__(self, read: Callable[[int], bytes | bytearray | memoryview]) -> None:
        self.read = read
        self.buf: bytes | bytearray | memoryview = b""
        self.pos = 0
        self.base = 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``; False if the stream ends first."""
        while len(self.buf) - self.pos < n:
            data = self.read(max(BLOCK_SIZE, n))
            if not data:
                return False
            rest = self.buf[self.pos:]
            self.base += self.pos
            self.pos = 0
            self.buf = bytes(rest) + bytes(data) if rest else data
        return True


class _StreamPayload(Payload):
    """A PAYLOAD's content, read from the archive stream on demand."""

    __slots__ = ("decoder", "remaining", "size")

    def __init__(self, decoder: CatarDecoder, size: int) -> None:
        self.decoder = decoder
        self.size = size
        self.remaining = size

    def blocks(self) -> Iterator[bytes | memoryview]:
        for buf, start, length in self.regions():
            yield memoryview(buf)[start:start + length]

    def regions(self) -> Iterator[tuple[bytes | bytearray | memoryview, int, int]]:
        inp = self.decoder._in
        while self.remaining:
            avail = len(inp.buf) - inp.pos
            if not avail:
                if not inp.fill(1):
                    raise self.decoder._truncated()
                avail = len(inp.buf) - inp.pos
            k = min(avail, self.remaining)
            pos = inp.pos
            inp.pos = pos + k
            self.remaining -= k
            yield inp.buf, pos, k

    def read_all(self) -> bytes:
        inp = self.decoder._in
        size = self.remaining
        if size and (len(inp.buf) - inp.pos >= size or inp.fill(size)):
            data = bytes(inp.buf[inp.pos:inp.pos + size])
            inp.pos += size
            self.remaining = 0
            return data
        return b"".join(bytes(b) for b in self.blocks())

    def readinto(self, view: memoryview) -> int:
        inp = self.decoder._in
        size = self.remaining
        if size <= len(inp.buf) - inp.pos and size <= len(view):
            pos = inp.pos
            view[:size] = inp.buf[pos:pos + size]  # the whole content is buffered
            inp.pos = pos + size
            self.remaining = 0
            return size
        return super().readinto(view)

    def skip(self) -> None:
        inp = self.decoder._in
        if self.remaining <= len(inp.buf) - inp.pos:
            inp.pos += self.remaining
            self.remaining = 0
            return
        for _ in self.blocks():
            pass


class CatarDecoder:
    """Decode a catar stream into a node stream, validating it like casync.

    Args:
        read: ``read(n)`` returning up to ``n`` bytes, ``b""`` at the end (a file's
            ``read``, a chunk stream...).
        name: what to call the archive in error messages.
        xattr_form: how to read XATTR values: ``"casync"`` (everything after the
            name's NUL), ``"desync"`` (drop desync's trailing NUL) or ``"auto"``
            (desync's form for archives with desync's feature flags).

    Attributes:
        feature_flags: the archive's feature flags (known after the first node).
    """

    def __init__(self, read: Callable[[int], bytes | bytearray | memoryview], *,
                 name: str = "archive", xattr_form: str = "auto") -> None:
        self._in = _Input(read)
        #: where the entry being decoded starts (for directories' goodbye checks)
        self._entry_offset = 0
        self.name = name
        self.xattr_form = xattr_form
        self.feature_flags: int | None = None
        self._strip_xattr_nul = xattr_form == "desync"
        self._path = b""

    @property
    def offset(self) -> int:
        """Archive offset of the next byte the decoder consumes.

        Right after a regular file's node is yielded it is where the file's content
        starts, so a reader with random access (a mount) can read files in place.
        """
        return self._in.offset

    # -- errors ------------------------------------------------------------------------

    def _error(self, message: str, offset: int | None = None) -> ArchiveFormatError:
        where = self._in.offset if offset is None else offset
        return ArchiveFormatError(f"{self.name}: {message} at offset {where} "
                                  f"(in {display(self._path)})")

    def _truncated(self) -> ArchiveFormatError:
        return ArchiveFormatError(f"{self.name}: archive is truncated at offset "
                                  f"{self._in.offset + len(self._in.buf) - self._in.pos} "
                                  f"(in {display(self._path)})")

    # -- low level -----------------------------------------------------------------------

    def _peek(self) -> tuple[int, int] | None:
        """``(size, type)`` of the next element, or None at the end of the stream."""
        inp = self._in
        if len(inp.buf) - inp.pos < 16 and not inp.fill(16):
            if len(inp.buf) - inp.pos:
                raise self._truncated()
            return None
        size, kind = _HEADER.unpack_from(inp.buf, inp.pos)
        if size < 16:
            raise self._error(f"invalid element size {size}")
        return size, kind

    def _body(self, size: int, limit: int, what: str) -> bytes:
        """Consume an element of ``size`` bytes (header included); return its body."""
        if size > limit:
            raise self._error(f"{what} element too large ({size} bytes)")
        inp = self._in
        if len(inp.buf) - inp.pos < size and not inp.fill(size):
            raise self._truncated()
        body = bytes(inp.buf[inp.pos + 16:inp.pos + size])
        inp.pos += size
        return body

    def _cstring(self, size: int, limit: int, what: str) -> bytes:
        offset = self._in.offset
        body = self._body(size, limit, what)
        if len(body) < 2 or body.find(b"\0") != len(body) - 1:
            raise self._error(f"malformed {what} element", offset)
        return body[:-1]

    # -- decoding ------------------------------------------------------------------------

    def __iter__(self) -> NodeStream:
        return self.nodes()

    @overload
    def nodes(self, *, plain_files: Literal[False] = False) -> Generator[Node | DirEnd]: ...

    @overload
    def nodes(self, *, plain_files: bool) -> Generator[Node | DirEnd | PlainFile]: ...

    def nodes(self, *, plain_files: bool = False) -> Generator[Node | DirEnd | PlainFile]:
        """Yield the archive's nodes (with :data:`DIR_END` after each directory).

        File contents are read when the consumer iterates a node's payload; whatever
        it leaves unread is skipped before the next node.

        Args:
            plain_files: yield regular files without metadata whose content is in the
                read buffer as :data:`~desync_core.archive.base.PlainFile` tuples.
        """
        if self._peek() is None:
            raise ArchiveFormatError(f"{self.name}: archive is empty")
        root = self._entry(b"", b"")
        yield root
        if not root.is_dir:
            self._skip_payload(root)
            self._expect_end()
            return
        stack = [_Dir(self._entry_offset, b"")]
        previous = root
        inp = self._in
        flags = self.feature_flags
        while stack:
            payload = previous.payload
            if payload is not None and isinstance(payload, _StreamPayload) and payload.remaining:
                payload.skip()
            frame = stack[-1]
            # Fast path for the common child: FILENAME + ENTRY (+ PAYLOAD header) of a
            # file or directory without metadata, all in the buffer. It only accepts
            # what the checked path below accepts, and leaves everything unusual
            # (including every error) to that path, so errors are reported the same.
            buf = inp.buf
            pos = inp.pos
            avail = len(buf) - pos
            if avail >= 114:  # FILENAME of a 1-byte name + ENTRY + a 16-byte header
                size, kind = _HEADER.unpack_from(buf, pos)
                end = pos + size
                if (kind == FILENAME and 18 <= size <= 16 + MAX_NAME and avail >= size + 80
                        and buf[end - 1] == 0):
                    name = bytes(buf[pos + 16:end - 1])
                    names = frame.names
                    (esize, ekind, eflags, mode, entry_flags, uid, gid,
                     mtime) = _ENTRY.unpack_from(buf, end)
                    kind_bits = mode & 0o170000
                    if (b"\0" not in name and b"/" not in name and name != b"."
                            and name != b".." and (not names or name > names[-1])
                            and ekind == ENTRY and esize == 64 and eflags == flags
                            and not mode & ~0o177777 and not entry_flags & ~ENTRY_FLAG_BITS
                            and uid <= 0xFFFFFFFF and gid <= 0xFFFFFFFF):
                        nsize, nkind = _HEADER.unpack_from(buf, end + 64)
                        if kind_bits == stat.S_IFREG:
                            plain = nkind == PAYLOAD and nsize >= 16
                        else:
                            plain = kind_bits == stat.S_IFDIR and nkind not in _META
                        if plain:
                            offset = inp.base + pos
                            frame.starts.append(offset)
                            names.append(name)
                            path = frame.path + b"/" + name if frame.path else name
                            self._path = path
                            if mtime >> 63:
                                mtime -= 1 << 64
                            if kind_bits == stat.S_IFREG:
                                size = nsize - 16
                                start = end + 80
                                if plain_files and not entry_flags and avail >= start - pos + size:
                                    inp.pos = start + size
                                    yield (name, path, mode, uid, gid, mtime, buf, start, size)
                                    continue
                                node = Node(mode, name, path, uid, gid, mtime, entry_flags)
                                inp.pos = start
                                node.size = size
                                node.payload = _StreamPayload(self, size)
                                yield node
                            else:
                                node = Node(mode, name, path, uid, gid, mtime, entry_flags)
                                inp.pos = end + 64
                                self._entry_offset = offset + size
                                yield node
                                stack.append(_Dir(offset + size, path))
                            previous = node
                            continue
            self._path = frame.path
            head = self._peek()
            if head is None:
                raise self._truncated()
            size, kind = head
            offset = self._in.offset
            if kind == FILENAME:
                name = self._cstring(size, 16 + MAX_NAME, "FILENAME")
                if name == b"." or name == b".." or b"/" in name:
                    raise self._error(f"invalid file name {display(name)!r}", offset)
                if frame.names and name <= frame.names[-1]:
                    what = "duplicate" if name == frame.names[-1] else "out-of-order"
                    raise self._error(f"{what} file name {display(name)!r}", offset)
                frame.starts.append(offset)
                frame.names.append(name)
                path = frame.path + b"/" + name if frame.path else name
                self._path = path
                node = self._entry(name, path)
                yield node
                if node.is_dir:
                    stack.append(_Dir(self._entry_offset, path))
                previous = node
            elif kind == GOODBYE:
                self._goodbye(frame, size, offset)
                stack.pop()
                yield DIR_END
            else:
                raise self._error(f"unexpected {_type_name(kind)} element", offset)
        self._expect_end()

    def _skip_payload(self, node: Node) -> None:
        payload = node.payload
        if isinstance(payload, _StreamPayload) and payload.remaining:
            payload.skip()

    def _expect_end(self) -> None:
        inp = self._in
        if inp.fill(1):
            raise ArchiveFormatError(f"{self.name}: unexpected data after the end of the "
                                     f"archive at offset {inp.offset}")

    def _entry(self, name: bytes, path: bytes) -> Node:
        """Read ENTRY, its metadata, and PAYLOAD/SYMLINK/DEVICE; return the node."""
        inp = self._in
        offset = inp.offset
        if len(inp.buf) - inp.pos < 64 and not inp.fill(64):
            head = self._peek()  # a shorter element, or a truncated archive
            if head is None or head[1] == ENTRY:
                raise self._truncated()
            raise self._error(f"expected ENTRY, found {_type_name(head[1])}", offset)
        size, kind, flags, mode, eflags, uid, gid, mtime = _ENTRY.unpack_from(inp.buf, inp.pos)
        if kind != ENTRY:
            self._peek()  # report an invalid size first
            raise self._error(f"expected ENTRY, found {_type_name(kind)}", offset)
        if size != 64:
            raise self._error(f"invalid ENTRY size {size}", offset)
        inp.pos += 64
        if self.feature_flags is None:
            if flags & ~ff.FEATURE_FLAGS_MAX or flags == _U64:
                raise self._error(f"unknown feature flags {flags:#x}", offset)
            self.feature_flags = flags
            if self.xattr_form == "auto":
                self._strip_xattr_nul = flags == DESYNC_FEATURE_FLAGS
        elif flags != self.feature_flags:
            raise self._error(f"feature flags {flags:#x} differ from the archive's "
                              f"{self.feature_flags:#x}", offset)
        kind_bits = mode & 0o170000
        if mode & ~0o177777 or kind_bits not in _KNOWN_TYPES:
            raise self._error(f"invalid mode {mode:#o}", offset)
        if eflags & ~ENTRY_FLAG_BITS:
            raise self._error(f"invalid entry flags {eflags:#x}", offset)
        if uid > 0xFFFFFFFF or gid > 0xFFFFFFFF:
            raise self._error(f"invalid user/group id {max(uid, gid)}", offset)
        self._entry_offset = offset
        node = Node(mode, name, path, uid, gid, mtime - (1 << 64) if mtime >> 63 else mtime,
                    eflags)
        buf, pos = inp.buf, inp.pos
        if len(buf) - pos >= 16 and kind_bits == stat.S_IFREG:
            size, kind = _HEADER.unpack_from(buf, pos)
            if kind == PAYLOAD and size >= 16:  # the common case: no metadata elements
                inp.pos = pos + 16
                node.size = size - 16
                node.payload = _StreamPayload(self, node.size)
                return node
        self._metadata(node)
        if kind_bits == stat.S_IFREG:
            payload_size = self._expect(PAYLOAD, "PAYLOAD")
            self._in.pos += 16
            node.size = payload_size - 16
            node.payload = _StreamPayload(self, node.size)
        elif kind_bits == stat.S_IFLNK:
            size = self._expect(SYMLINK, "SYMLINK")
            node.target = self._cstring(size, MAX_SYMLINK, "SYMLINK")
        elif kind_bits in (stat.S_IFBLK, stat.S_IFCHR):
            size = self._expect(DEVICE, "DEVICE")
            if size != 32:
                raise self._error(f"invalid DEVICE size {size}")
            major, minor = struct.unpack("<QQ", self._body(32, 32, "DEVICE"))
            if major >= 1 << 12 or minor >= 1 << 20:  # casync's (and the kernel's) limits
                raise self._error(f"invalid device number {major}:{minor}")
            node.rdev_major, node.rdev_minor = major, minor
        return node

    def _expect(self, kind: int, what: str) -> int:
        head = self._peek()
        if head is None:
            raise self._truncated()
        if head[1] != kind:
            raise self._error(f"expected {what}, found {_type_name(head[1])}")
        return head[0]

    def _metadata(self, node: Node) -> None:
        """Consume the metadata elements between ENTRY and the node's content."""
        seen: set[int] = set()
        acl: Acl | None = None
        xattrs: list[tuple[bytes, bytes]] | None = None
        while True:
            head = self._peek()
            if head is None:
                return
            size, kind = head
            repeatable = _META.get(kind)
            if repeatable is None:
                return
            offset = self._in.offset
            if not repeatable and kind in seen:
                raise self._error(f"duplicate {_type_name(kind)} element", offset)
            seen.add(kind)
            if kind in (USER, GROUP):
                value = self._cstring(size, 16 + MAX_USER, _type_name(kind))
                if kind == USER:
                    node.user = value
                else:
                    node.group = value
            elif kind == XATTR:
                body = self._body(size, MAX_XATTR, "XATTR")
                nul = body.find(b"\0", 0, 256)
                xname = body[:nul]
                if nul <= 0 or b"." not in xname[1:-1]:
                    raise self._error("malformed XATTR element", offset)
                value = body[nul + 1:]
                if self._strip_xattr_nul and value.endswith(b"\0"):
                    value = value[:-1]
                if xattrs is None:
                    xattrs = node.xattrs = []
                elif xname <= xattrs[-1][0]:
                    raise self._error("XATTR elements unsorted or duplicated", offset)
                xattrs.append((xname, value))
            elif kind == SELINUX:
                node.selinux = self._cstring(size, MAX_SELINUX, "SELINUX")
            elif kind == FCAPS:
                node.fcaps = self._body(size, MAX_FCAPS, "FCAPS")
                if not node.fcaps:
                    raise self._error("empty FCAPS element", offset)
            elif kind == QUOTA_PROJID:
                if size != 24:
                    raise self._error(f"invalid QUOTA_PROJID size {size}", offset)
                (node.quota_projid,) = _Q.unpack(self._body(24, 24, "QUOTA_PROJID"))
            else:
                if acl is None:
                    acl = node.acl = Acl()
                self._acl_element(acl, kind, size, offset)

    def _acl_element(self, acl: Acl, kind: int, size: int, offset: int) -> None:
        def perm(value: int) -> int:
            if value & ~7:
                raise self._error(f"invalid ACL permissions {value:#x}", offset)
            return value

        if kind == ACL_GROUP_OBJ:
            if size != 24:
                raise self._error(f"invalid ACL_GROUP_OBJ size {size}", offset)
            (value,) = _Q.unpack(self._body(24, 24, "ACL_GROUP_OBJ"))
            acl.group_obj = perm(value)
        elif kind == ACL_DEFAULT:
            if size != 48:
                raise self._error(f"invalid ACL_DEFAULT size {size}", offset)
            values = [None if v == _U64 else perm(v)
                      for v in struct.unpack("<4Q", self._body(48, 48, "ACL_DEFAULT"))]
            (acl.default_user_obj, acl.default_group_obj, acl.default_other,
             acl.default_mask) = values
        else:
            if size < 32:
                raise self._error(f"invalid {_type_name(kind)} size {size}", offset)
            body = self._body(size, 32 + MAX_USER, _type_name(kind))
            ident, value = struct.unpack_from("<QQ", body)
            name = None
            if len(body) > 16:
                raw = body[16:]
                if raw[-1] != 0 or 0 in raw[:-1] or len(raw) < 2:
                    raise self._error(f"malformed {_type_name(kind)} element", offset)
                name = raw[:-1]
            if ident > 0xFFFFFFFF:
                raise self._error(f"invalid ACL id {ident}", offset)
            entry = AclEntry(ident, perm(value), name)
            {ACL_USER: acl.users, ACL_GROUP: acl.groups, ACL_DEFAULT_USER: acl.default_users,
             ACL_DEFAULT_GROUP: acl.default_groups}[kind].append(entry)

    def _goodbye(self, frame: _Dir, size: int, offset: int) -> None:
        n = len(frame.starts)
        if size != 16 + 24 * (n + 1):
            raise self._error(f"GOODBYE table has {(size - 16) / 24 - 1:g} items for "
                              f"{n} directory entries", offset)
        body = self._body(size, size, "GOODBYE")
        values = struct.unpack(f"<{3 * (n + 1)}Q", body)
        tail_offset, tail_size, marker = values[-3:]
        if marker != GOODBYE_TAIL_MARKER:
            raise self._error("GOODBYE tail marker missing", offset)
        if tail_size != size or tail_offset != offset - frame.entry_offset:
            raise self._error("GOODBYE tail does not match its directory", offset)
        # Every item must describe one child exactly (offset, size and name hash). The
        # table order is not checked: old desync versions wrote the items in directory
        # order instead of BST order (cmd/desync/testdata/tree.catar), and casync reads
        # such archives too.
        items = sorted(zip(values[0:3 * n:3], values[1:3 * n:3], values[2:3 * n:3]))
        starts = frame.starts
        ends = [*starts[1:], offset]
        expected = sorted(zip([offset - start for start in starts],
                              [end - start for start, end in zip(starts, ends)],
                              name_hashes(frame.names)))
        if items != expected:
            raise self._error("inconsistent GOODBYE table", offset)


def _type_name(kind: int) -> str:
    return ELEMENT_NAMES.get(kind, f"unknown element type {kind:#018x}")


# -- the format ---------------------------------------------------------------------------


def open_input(source: str, *, readinto: bool = False) -> tuple[Callable[..., Any],
                                                                  Callable[[], None]]:
    """``(read, close)`` for a catar path or ``-`` (stdin); with ``readinto``, the
    input's ``readinto(buffer)`` instead of ``read(n)``."""
    if source == "-":
        stdin = cast(io.BufferedReader, sys.stdin.buffer)
        return (stdin.readinto if readinto else stdin.read), lambda: None
    try:
        f = open(source, "rb", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise DesyncError(f"{source}: {exc.strerror}") from None
    return (f.readinto if readinto else f.read), f.close


class CatarFormat(ArchiveFormat):
    """catar files: read (decode) and write (encode)."""

    name = "catar"
    can_read = True
    can_write = True

    def read(self, source: str, options: ArchiveOptions) -> NodeStream:
        read, close = open_input(source)
        try:
            yield from CatarDecoder(read, name=source).nodes()
        finally:
            close()

    def write(self, nodes: Iterable[Node | DirEnd], target: str,
              options: ArchiveOptions) -> None:
        """Encode with ``options.feature_flags`` to ``target`` (atomically) or ``-``."""
        write_blocks(CatarEncoder(options.feature_flags).encode(nodes), target,
                     opened=lambda st: options.skip.add((st.st_dev, st.st_ino)))


def write_blocks(blocks: Iterable[bytes | bytearray | memoryview], target: str, *,
                 opened: Callable[[os.stat_result], None] | None = None) -> int:
    """Write a stream to ``target`` atomically (temp file + rename), or to stdout.

    Args:
        blocks: the data.
        target: a path, or ``-`` for stdout.
        opened: called with the ``stat`` of the output file once it exists (before the
            first block is requested), so a reader can avoid archiving its own output.
    """
    if target == "-":
        out = sys.stdout.buffer
        if opened is not None:
            try:
                opened(os.fstat(out.fileno()))
            except (OSError, ValueError):
                pass  # not a file
        total = 0
        for block in blocks:
            try:
                out.write(block)
            except OSError as exc:
                raise _write_error("stdout", exc) from None
            total += len(block)
        try:
            out.flush()
        except OSError as exc:
            raise _write_error("stdout", exc) from None
        return total
    directory, base = os.path.split(os.path.abspath(target))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
    except OSError as exc:
        raise DesyncError(f"{target}: {exc.strerror}") from None
    total = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            if opened is not None:
                opened(os.fstat(fd))
            for block in blocks:
                view = memoryview(block)
                try:
                    while view:
                        view = view[f.write(view):]
                except OSError as exc:  # a full disk (ENOSPC), EIO, a quota: one line
                    raise _write_error(target, exc) from None
                total += len(block)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _write_error(target, exc) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return total


def _write_error(target: str, exc: OSError) -> DesyncError:
    return DesyncError(f"writing {target}: {exc.strerror or exc}")


__all__ = [
    "ELEMENT_NAMES",
    "GOODBYE_TAIL_MARKER",
    "CatarDecoder",
    "CatarEncoder",
    "CatarFormat",
    "bst_order",
    "goodbye_items",
    "make_bst",
    "open_input",
    "write_blocks",
]
