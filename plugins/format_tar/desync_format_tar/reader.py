"""tar -> node stream, for ``desync tar --input-format=tar`` (``catar.md`` §8.1).

Reads every format Python's :mod:`tarfile` reads: v7, USTAR, PAX (sub-second
``mtime``, ``SCHILY.xattr.*``/``LIBARCHIVE.xattr.*`` attributes, ``SCHILY.acl.*``)
and GNU (long names, sparse files); gzip/bzip2/xz compression is detected too.

Unlike desync, the members need not come in any particular order: the tree is
collected first and emitted in catar order (children sorted), so the archive is
always one casync accepts. File contents are not held in memory: they are read from
the tar file when the catar is written or, for a pipe or compressed input, from a
temporary spool file.

Rules (desync's, made strict where desync silently loses data):

* the first member is the archive root and must be a directory; every other member
  must lie below it (with ``--tar-add-root`` a root directory is synthesised and all
  members are placed in it);
* member names are cleaned (``./a/`` -> ``a``, leading ``/`` dropped); a name with a
  ``..`` component is refused;
* directories missing from the tar are created (mode 0755, owner 0, mtime 0);
* a later member with the same name replaces the earlier one (as tar extraction does);
* hard links are refused with a hint to create the tar with ``--hard-dereference``;
* member types catar cannot hold (volume labels...) are skipped with a warning.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
import struct
import sys
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation, localcontext
from typing import IO, Any

from desync_core.plugin_api import (
    DIR_END,
    XATTR_ACL_ACCESS,
    XATTR_ACL_DEFAULT,
    ArchiveFormat,
    ArchiveFormatError,
    ArchiveOptions,
    DesyncError,
    Node,
    NodeStream,
    Payload,
    classify,
    display,
)

_BLOCK = 1 << 20
_DIR_MODE = stat.S_IFDIR | 0o755
_PERMS = {"r": 4, "w": 2, "x": 1, "-": 0}
_ACL_TAGS = {"user": (0x01, 0x02), "u": (0x01, 0x02), "group": (0x04, 0x08),
             "g": (0x04, 0x08), "mask": (0x10, 0x10), "m": (0x10, 0x10),
             "other": (0x20, 0x20), "o": (0x20, 0x20)}


class _SpoolPayload(Payload):
    """Content copied to the spool file while the tar stream was read."""

    def __init__(self, spool: IO[bytes], offset: int, size: int) -> None:
        self.spool = spool
        self.offset = offset
        self.size = size

    def blocks(self) -> Iterator[bytes]:
        fd = self.spool.fileno()
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            block = os.pread(fd, min(_BLOCK, end - pos), pos)
            if not block:
                raise DesyncError("tar spool file truncated")
            pos += len(block)
            yield block


class _MemberPayload(Payload):
    """Content of a member of a seekable, uncompressed tar file."""

    def __init__(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.tar = tar
        self.member = member
        self.size = member.size

    def blocks(self) -> Iterator[bytes]:
        f = self.tar.extractfile(self.member)
        if f is None:
            return
        try:
            remaining = self.size
            while remaining:
                block = f.read(min(_BLOCK, remaining))
                if not block:
                    raise ArchiveFormatError(f"tar member {self.member.name!r} is truncated")
                remaining -= len(block)
                yield block
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveFormatError(f"cannot read tar member {self.member.name!r}: "
                                     f"{exc}") from None


class _Entry:
    """A node of the collected tree."""

    __slots__ = ("children", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.children: dict[bytes, _Entry] | None = {} if node.is_dir else None


def pax_time(value: str) -> int:
    """A PAX time (``"1234.5678"``, possibly negative) in ns, truncated toward -inf."""
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            return int((Decimal(value) * 1_000_000_000).to_integral_value(rounding="ROUND_FLOOR"))
        except InvalidOperation:
            raise ArchiveFormatError(f"invalid PAX time {value!r}") from None


def acl_text_to_xattr(text: str) -> bytes:
    """A textual ACL (GNU tar's ``SCHILY.acl.*``) as a ``system.posix_acl_*`` value."""
    entries = []
    for item in text.replace("\n", ",").split(","):
        item = item.split("#", 1)[0].strip()
        if not item:
            continue
        fields = item.split(":")
        if len(fields) < 3 or fields[0] not in _ACL_TAGS:
            raise ArchiveFormatError(f"invalid ACL entry {item!r}")
        tag, qualifier, perms = fields[0], fields[1], fields[2]
        obj_tag, named_tag = _ACL_TAGS[tag]
        perm = 0
        for ch in perms:
            if ch not in _PERMS:
                raise ArchiveFormatError(f"invalid ACL permissions {perms!r}")
            perm |= _PERMS[ch]
        if qualifier and named_tag != obj_tag:
            ident = _acl_id(qualifier, group=obj_tag == 0x04)
            entries.append((named_tag, perm, ident))
        else:
            entries.append((obj_tag, perm, 0xFFFFFFFF))
    entries.sort(key=lambda e: (e[0], e[2]))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _acl_id(qualifier: str, *, group: bool) -> int:
    if qualifier.isdigit():
        return int(qualifier)
    try:
        return grp.getgrnam(qualifier).gr_gid if group else pwd.getpwnam(qualifier).pw_uid
    except KeyError:
        raise ArchiveFormatError(f"unknown {'group' if group else 'user'} {qualifier!r} "
                                 "in ACL") from None


def _pax_xattrs(member: tarfile.TarInfo) -> list[tuple[bytes, bytes]]:
    """Extended attributes recorded in a member's PAX headers."""
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out.append((key[13:].encode("utf-8", "surrogateescape"),
                        value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote_to_bytes(key[17:])
            raw = value.encode("ascii", "surrogateescape")
            out.append((name, base64.b64decode(raw + b"=" * (-len(raw) % 4))))
        elif key == "SCHILY.acl.access":
            out.append((XATTR_ACL_ACCESS, acl_text_to_xattr(value)))
        elif key == "SCHILY.acl.default":
            out.append((XATTR_ACL_DEFAULT, acl_text_to_xattr(value)))
    return out


class TarReader:
    """Collect a tar archive into a tree and emit it as a node stream."""

    def __init__(self, source: str, options: ArchiveOptions) -> None:
        self.source = source
        self.options = options
        self.flags = options.feature_flags

    # -- opening -------------------------------------------------------------------

    def _open(self) -> tuple[tarfile.TarFile, IO[bytes] | None, Any]:
        """``(tar, spool, file)``: random access for plain files, a spool otherwise."""
        kwargs: dict[str, Any] = {"encoding": "utf-8", "errors": "surrogateescape"}
        if self.source == "-":
            f: Any = sys.stdin.buffer
        else:
            try:
                f = open(self.source, "rb")  # noqa: SIM115
            except OSError as exc:
                raise DesyncError(f"{self.source}: {exc.strerror}") from None
            try:
                if f.seekable():
                    try:
                        return tarfile.open(fileobj=f, mode="r:", **kwargs), None, f
                    except tarfile.ReadError:
                        f.seek(0)  # compressed (or not a tar): read it as a stream
            except BaseException:
                f.close()
                raise
        try:
            tar = tarfile.open(fileobj=f, mode="r|*", **kwargs)  # noqa: SIM115
        except tarfile.TarError as exc:
            if f is not sys.stdin.buffer:
                f.close()
            raise ArchiveFormatError(f"{self.source}: not a tar archive ({exc})") from None
        return tar, tempfile.TemporaryFile(prefix="desync-tar-"), f

    # -- collecting ----------------------------------------------------------------

    def _parts(self, member: tarfile.TarInfo) -> list[bytes]:
        raw = os.fsencode(member.name)
        parts = [p for p in raw.split(b"/") if p and p != b"."]
        if b".." in parts:
            raise ArchiveFormatError(f"tar member {member.name!r} contains '..'")
        return parts

    def _node(self, member: tarfile.TarInfo, spool: IO[bytes] | None,
              tar: tarfile.TarFile) -> Node | None:
        if member.islnk():
            raise ArchiveFormatError(
                f"tar member {member.name!r} is a hard link to {member.linkname!r}; hard "
                "links are not supported, create the tar with --hard-dereference")
        perm = member.mode & 0o7777
        if member.isreg():
            mode = stat.S_IFREG | perm
        elif member.isdir():
            mode = stat.S_IFDIR | perm
        elif member.issym():
            mode = stat.S_IFLNK | 0o777
        elif member.ischr():
            mode = stat.S_IFCHR | perm
        elif member.isblk():
            mode = stat.S_IFBLK | perm
        elif member.isfifo():
            mode = stat.S_IFIFO | perm
        else:
            self.options.warning(f"skipping '{member.name}' : unsupported tar member type "
                                 f"{member.type!r}")
            return None
        if self.options.no_time:
            mtime = 0
        elif "mtime" in member.pax_headers:
            mtime = pax_time(member.pax_headers["mtime"])
        else:
            mtime = int(member.mtime) * 1_000_000_000
        node = Node(mode=mode, uid=member.uid, gid=member.gid, mtime=mtime)
        if member.uname:
            node.user = member.uname.encode("utf-8", "surrogateescape")
        if member.gname:
            node.group = member.gname.encode("utf-8", "surrogateescape")
        pairs = _pax_xattrs(member) if member.pax_headers else None
        if pairs:
            classify(node, pairs, self.flags)
        if member.issym():
            node.target = os.fsencode(member.linkname)
            if not node.target:
                raise ArchiveFormatError(f"tar member {member.name!r}: empty symlink target")
        elif member.ischr() or member.isblk():
            node.rdev_major, node.rdev_minor = member.devmajor, member.devminor
        elif member.isreg():
            node.size = member.size
            if spool is None:
                node.payload = _MemberPayload(tar, member)
            else:
                node.payload = self._spool(tar, member, spool)
        return node

    def _spool(self, tar: tarfile.TarFile, member: tarfile.TarInfo,
               spool: IO[bytes]) -> Payload:
        offset = spool.seek(0, os.SEEK_END)
        f = tar.extractfile(member)
        copied = 0
        if f is not None:
            while True:
                block = f.read(_BLOCK)
                if not block:
                    break
                spool.write(block)
                copied += len(block)
        if copied != member.size:
            raise ArchiveFormatError(f"tar member {member.name!r} is truncated")
        spool.flush()
        return _SpoolPayload(spool, offset, member.size)

    def _collect(self, tar: tarfile.TarFile, spool: IO[bytes] | None) -> _Entry:
        root: _Entry | None = None
        prefix: list[bytes] = []
        if self.options.tar_add_root:
            root = _Entry(Node(mode=_DIR_MODE))
        for member in tar:
            parts = self._parts(member)
            if root is None:
                node = self._node(member, spool, tar)
                if node is None:
                    continue
                if not node.is_dir:
                    raise ArchiveFormatError(
                        f"the first tar member {member.name!r} is not a directory; use "
                        "--tar-add-root to put all members into a common root")
                root, prefix = _Entry(node), parts
                continue
            if parts[:len(prefix)] != prefix:
                raise ArchiveFormatError(
                    f"tar member {member.name!r} is outside the archive root "
                    f"{display(b'/'.join(prefix))!r}; use --tar-add-root")
            rel = parts[len(prefix):]
            node = self._node(member, spool, tar)
            if node is None:
                continue
            if not rel:
                if not node.is_dir:
                    raise ArchiveFormatError(f"tar member {member.name!r} replaces the "
                                             "archive root with a non-directory")
                root.node = node
                continue
            self._insert(root, rel, node, member.name)
        if root is None:
            raise ArchiveFormatError(f"{self.source}: tar archive has no members")
        return root

    def _insert(self, root: _Entry, rel: list[bytes], node: Node, member: str) -> None:
        entry = root
        path = b""
        for part in rel[:-1]:
            path = path + b"/" + part if path else part
            assert entry.children is not None
            child = entry.children.get(part)
            if child is None:
                child = entry.children[part] = _Entry(Node(mode=_DIR_MODE, name=part,
                                                           path=path))
            elif child.children is None:
                raise ArchiveFormatError(f"tar member {member!r}: {display(path)!r} is not "
                                         "a directory")
            entry = child
        name = rel[-1]
        node.name = name
        node.path = path + b"/" + name if path else name
        assert entry.children is not None
        old = entry.children.get(name)
        if old is not None and old.children is not None and node.is_dir:
            old.node = node  # a directory listed again: new metadata, same children
        else:
            entry.children[name] = _Entry(node)

    # -- emitting ------------------------------------------------------------------

    def nodes(self) -> NodeStream:
        """Yield the tar's tree in catar order."""
        tar, spool, f = self._open()
        try:
            try:
                root = self._collect(tar, spool)
            except (tarfile.TarError, EOFError) as exc:
                raise ArchiveFormatError(f"{self.source}: {exc}") from None
            yield root.node
            stack = [iter(sorted(root.children.items()))]  # type: ignore[union-attr]
            while stack:
                item = next(stack[-1], None)
                if item is None:
                    stack.pop()
                    yield DIR_END
                    continue
                entry = item[1]
                yield entry.node
                if entry.children is not None:
                    stack.append(iter(sorted(entry.children.items())))
        finally:
            tar.close()
            if spool is not None:
                spool.close()
            if f is not sys.stdin.buffer:
                f.close()


class TarInputFormat(ArchiveFormat):
    """``--input-format=tar``: a tar file, or ``-`` for stdin."""

    name = "tar"
    can_read = True

    def read(self, source: str, options: ArchiveOptions) -> NodeStream:
        return TarReader(source, options).nodes()


__all__ = ["TarInputFormat", "TarReader", "acl_text_to_xattr", "pax_time"]
