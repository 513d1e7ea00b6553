"""node stream -> GNU tar, for ``desync untar --output-format=gnu-tar`` (``catar.md`` §8.2).

The bytes are desync's (Go ``archive/tar`` in GNU format): one 512-byte header per
node in archive order, the root named ``.``, directories without a trailing ``/``,
the mode field holding Go's ``os.FileMode`` value (base-256 when it does not fit in
octal), ``ustar `` magic, empty user/group names, two zero blocks at the end and no
padding to a record. ``complex.gnu-tar`` is reproduced byte for byte.

Where desync is wrong this writer is not (``catar.md`` lists both): character devices
get typeflag ``3`` (not ``4``), FIFOs are written (typeflag ``6``), the setuid, setgid
and sticky bits are also set where tar readers look for them (``0o7000``), and extended
attributes, file capabilities, SELinux labels and ACLs are kept in a PAX extended
header before the entry (``SCHILY.xattr.<name>``, plus ``SCHILY.acl.*`` text for ACLs,
as GNU tar writes them) instead of failing. Sockets cannot be stored in tar and are
skipped with a warning.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator

from desync_core.plugin_api import (
    XATTR_ACL_ACCESS,
    XATTR_ACL_DEFAULT,
    XATTR_CAPABILITY,
    XATTR_SELINUX,
    ArchiveFormat,
    ArchiveOptions,
    DesyncError,
    DirEnd,
    Node,
    acl_access_xattr,
    acl_default_xattr,
    parse_acl_xattr,
    write_blocks,
)

BLOCK = 512
_ZEROS = bytes(BLOCK)

# Go os.FileMode bits (what desync stores in the header's mode field).
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHAR_DEVICE = 1 << 21
_GO_STICKY = 1 << 20

_TYPEFLAGS = {
    stat.S_IFREG: b"0", stat.S_IFLNK: b"2", stat.S_IFCHR: b"3", stat.S_IFBLK: b"4",
    stat.S_IFDIR: b"5", stat.S_IFIFO: b"6",
}


def go_file_mode(mode: int) -> int:
    """A Linux ``st_mode`` as Go's ``os.FileMode``, plus the POSIX setuid/setgid/sticky
    bits (``0o7000``, unused by Go) so that GNU tar and Go, which read the low 12 bits
    of the field, restore them too (desync writes only the Go bits and loses them)."""
    out = mode & 0o7777
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFDIR:
        out |= _GO_DIR
    elif kind == stat.S_IFLNK:
        out |= _GO_SYMLINK
    elif kind == stat.S_IFBLK:
        out |= _GO_DEVICE
    elif kind == stat.S_IFCHR:
        out |= _GO_DEVICE | _GO_CHAR_DEVICE
    elif kind == stat.S_IFIFO:
        out |= _GO_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        out |= _GO_SOCKET
    if mode & stat.S_ISUID:
        out |= _GO_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_STICKY
    return out


def numeric(value: int, length: int) -> bytes:
    """A GNU numeric field: octal + NUL if it fits, else base-256 (two's complement)."""
    if 0 <= value < 8 ** (length - 1):
        return b"%0*o\0" % (length - 1, value)
    raw = (value & ((1 << (8 * length)) - 1)).to_bytes(length, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def header(name: bytes, *, mode: int, uid: int, gid: int, size: int, mtime: int,
           typeflag: bytes, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
           magic: bytes = b"ustar  \0") -> bytes:
    """One 512-byte header block with its checksum."""
    h = bytearray(BLOCK)
    h[0:len(name[:100])] = name[:100]
    h[100:108] = numeric(mode, 8)
    h[108:116] = numeric(uid, 8)
    h[116:124] = numeric(gid, 8)
    h[124:136] = numeric(size, 12)
    h[136:148] = numeric(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:157 + len(linkname[:100])] = linkname[:100]
    h[257:265] = magic
    h[329:337] = numeric(devmajor, 8)
    h[337:345] = numeric(devminor, 8)
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _padding(size: int) -> bytes:
    return _ZEROS[:-size % BLOCK] if size % BLOCK else b""


def _long(name: bytes, typeflag: bytes) -> bytes:
    """A GNU ``././@LongLink`` header (+ data) carrying a name longer than 100 bytes."""
    data = name + b"\0"
    return header(b"././@LongLink", mode=0, uid=0, gid=0, size=len(data), mtime=0,
                  typeflag=typeflag) + data + _padding(len(data))


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


_ACL_TEXT_TAGS = {0x01: "user", 0x02: "user", 0x04: "group", 0x08: "group", 0x10: "mask",
                  0x20: "other"}


def acl_text(value: bytes) -> bytes:
    """A ``system.posix_acl_*`` value as GNU tar's ``SCHILY.acl.*`` text (numeric ids)."""
    lines = []
    for tag, perm, ident in parse_acl_xattr(value):
        qualifier = str(ident) if tag in (0x02, 0x08) else ""
        perms = "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
        lines.append(f"{_ACL_TEXT_TAGS.get(tag, 'other')}:{qualifier}:{perms}\n")
    return "".join(lines).encode()


def _pax_records(node: Node) -> list[tuple[bytes, bytes]]:
    """PAX records for a node's extended attributes, capability, label and ACLs.

    Everything is a ``SCHILY.xattr.<name>`` record (``tar --xattrs``); ACLs are also
    written as ``SCHILY.acl.access``/``.default`` text, which ``tar --acls`` restores.
    """
    xattrs = list(node.xattrs or ())
    acls = []
    if node.selinux:
        xattrs.append((XATTR_SELINUX, node.selinux + b"\0"))
    if node.fcaps:
        xattrs.append((XATTR_CAPABILITY, node.fcaps))
    if node.acl:
        access = acl_access_xattr(node.acl, node.mode)
        if access:
            xattrs.append((XATTR_ACL_ACCESS, access))
            acls.append((b"SCHILY.acl.access", acl_text(access)))
        default = acl_default_xattr(node.acl, node.mode) if node.is_dir else None
        if default:
            xattrs.append((XATTR_ACL_DEFAULT, default))
            acls.append((b"SCHILY.acl.default", acl_text(default)))
    return acls + [(b"SCHILY.xattr." + name, value) for name, value in xattrs]


class GnuTarWriter:
    """Turn a node stream into GNU tar blocks."""

    def __init__(self, options: ArchiveOptions) -> None:
        self.options = options

    def blocks(self, nodes: Iterable[Node | DirEnd]) -> Iterator[bytes]:
        """The tar file, in pieces (headers, contents, padding, the two end blocks)."""
        for node in nodes:
            if not isinstance(node, Node):
                continue
            kind = stat.S_IFMT(node.mode)
            typeflag = _TYPEFLAGS.get(kind)
            name = node.path or b"."
            if typeflag is None:
                self.options.warning(f"skipping '{name.decode(errors='replace')}' : "
                                     "sockets cannot be stored in tar")
                continue
            pax = _pax_records(node)
            size = node.size if kind == stat.S_IFREG else 0
            mtime = node.mtime // 1_000_000_000
            if pax:
                records = b"".join(_pax_record(k, v) for k, v in pax)
                pax_name = b"PaxHeaders.0/" + (node.name or b".")
                yield header(pax_name, mode=0o644, uid=0, gid=0, size=len(records),
                             mtime=mtime, typeflag=b"x", magic=b"ustar\x0000")
                yield records + _padding(len(records))
            if len(name) > 100:
                yield _long(name, b"L")
            if kind == stat.S_IFLNK and len(node.target) > 100:
                yield _long(node.target, b"K")
            yield header(
                name, mode=go_file_mode(node.mode), uid=node.uid, gid=node.gid, size=size,
                mtime=mtime, typeflag=typeflag,
                linkname=node.target if kind == stat.S_IFLNK else b"",
                devmajor=node.rdev_major, devminor=node.rdev_minor)
            if size and node.payload is not None:
                written = 0
                for block in node.payload.blocks():
                    written += len(block)
                    yield bytes(block)
                if written != size:
                    raise DesyncError(f"{node.display_path}: read {written} bytes, "
                                      f"expected {size}")
                yield _padding(size)
        yield _ZEROS + _ZEROS


class GnuTarFormat(ArchiveFormat):
    """``--output-format=gnu-tar``: a GNU tar file, or ``-`` for stdout."""

    name = "gnu-tar"
    can_write = True

    def write(self, nodes: Iterable[Node | DirEnd], target: str,
              options: ArchiveOptions) -> None:
        write_blocks(GnuTarWriter(options).blocks(nodes), target)


__all__ = ["GnuTarFormat", "GnuTarWriter", "go_file_mode", "header", "numeric"]
