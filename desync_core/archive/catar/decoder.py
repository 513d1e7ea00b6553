"""Decoding catar archives into node streams, checked as hostile input."""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Generator, Iterator
from typing import Literal, overload

from desync_core import flags as ff
from desync_core.archive.base import (
    DESYNC_FEATURE_FLAGS,
    DIR_END,
    ENTRY_FLAG_BITS,
    Acl,
    AclEntry,
    DirEnd,
    Node,
    NodeStream,
    Payload,
    PlainFile,
    display,
)
from desync_core.archive.catar.elements import (
    ACL_DEFAULT,
    ACL_DEFAULT_GROUP,
    ACL_DEFAULT_USER,
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_USER,
    BLOCK_SIZE,
    DEVICE,
    ELEMENT_NAMES,
    ENTRY,
    ENTRY_STRUCT,
    FCAPS,
    FILENAME,
    GOODBYE,
    GOODBYE_TAIL_MARKER,
    GROUP,
    HEADER,
    MAX_FCAPS,
    MAX_NAME,
    MAX_SELINUX,
    MAX_SYMLINK,
    MAX_USER,
    MAX_XATTR,
    PAYLOAD,
    QUOTA_PROJID,
    SELINUX,
    SYMLINK,
    U64_MAX,
    U64_STRUCT,
    USER,
    XATTR,
    OpenDir,
)
from desync_core.archive.siphash import name_hashes
from desync_core.errors import ArchiveFormatError

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
        size, kind = HEADER.unpack_from(inp.buf, inp.pos)
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
        stack = [OpenDir(self._entry_offset, b"")]
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
                size, kind = HEADER.unpack_from(buf, pos)
                end = pos + size
                if (kind == FILENAME and 18 <= size <= 16 + MAX_NAME and avail >= size + 80
                        and buf[end - 1] == 0):
                    name = bytes(buf[pos + 16:end - 1])
                    names = frame.names
                    (esize, ekind, eflags, mode, entry_flags, uid, gid,
                     mtime) = ENTRY_STRUCT.unpack_from(buf, end)
                    kind_bits = mode & 0o170000
                    if (b"\0" not in name and b"/" not in name and name != b"."
                            and name != b".." and (not names or name > names[-1])
                            and ekind == ENTRY and esize == 64 and eflags == flags
                            and not mode & ~0o177777 and not entry_flags & ~ENTRY_FLAG_BITS
                            and uid <= 0xFFFFFFFF and gid <= 0xFFFFFFFF):
                        nsize, nkind = HEADER.unpack_from(buf, end + 64)
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
                                stack.append(OpenDir(offset + size, path))
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
                    stack.append(OpenDir(self._entry_offset, path))
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
        size, kind, flags, mode, eflags, uid, gid, mtime = ENTRY_STRUCT.unpack_from(
            inp.buf, inp.pos)
        if kind != ENTRY:
            self._peek()  # report an invalid size first
            raise self._error(f"expected ENTRY, found {_type_name(kind)}", offset)
        if size != 64:
            raise self._error(f"invalid ENTRY size {size}", offset)
        inp.pos += 64
        if self.feature_flags is None:
            if flags & ~ff.FEATURE_FLAGS_MAX or flags == U64_MAX:
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
            size, kind = HEADER.unpack_from(buf, pos)
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
                (node.quota_projid,) = U64_STRUCT.unpack(self._body(24, 24, "QUOTA_PROJID"))
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
            (value,) = U64_STRUCT.unpack(self._body(24, 24, "ACL_GROUP_OBJ"))
            acl.group_obj = perm(value)
        elif kind == ACL_DEFAULT:
            if size != 48:
                raise self._error(f"invalid ACL_DEFAULT size {size}", offset)
            values = [None if v == U64_MAX else perm(v)
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

    def _goodbye(self, frame: OpenDir, size: int, offset: int) -> None:
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


