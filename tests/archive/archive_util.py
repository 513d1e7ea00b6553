"""Helpers of the archive tests: tree snapshots, element dumps, hand-made catar archives.

The archive builder here is independent of the production encoder: it writes elements
in exactly the order and with exactly the names it is given, so tests can craft what
a well-behaved encoder never produces (``..``, ``a/b``, duplicates, broken GOODBYE
tables) and check that the decoder and the extractor refuse it.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desync_core.archive.catar import (
    DEVICE,
    ELEMENT_NAMES,
    ENTRY,
    FILENAME,
    GOODBYE,
    GOODBYE_TAIL_MARKER,
    PAYLOAD,
    SYMLINK,
    XATTR,
    goodbye_items,
)
from desync_core.testing.trees import diff, snapshot

#: Feature flags of hand-made archives (our default set, SHA-512/256).
FLAGS = 0xA0000000F0001E22
#: What desync (Go) writes.
DESYNC_FLAGS = 0xB000000010001F22


# -- element dumps ----------------------------------------------------------------------


def elements(data: bytes) -> list[tuple[int, str, bytes]]:
    """``(offset, type name, body)`` of every element of a catar stream."""
    out = []
    off = 0
    while off < len(data):
        size, kind = struct.unpack_from("<QQ", data, off)
        out.append((off, ELEMENT_NAMES.get(kind, hex(kind)), data[off + 16:off + size]))
        off += size
    return out


def element_names(data: bytes) -> list[str]:
    """The sequence of element types of a catar stream."""
    return [name for _, name, _ in elements(data)]


# -- hand-made archives ---------------------------------------------------------------------


def element(kind: int, body: bytes) -> bytes:
    """One element: header + body."""
    return struct.pack("<QQ", 16 + len(body), kind) + body


def entry(mode: int, *, flags: int = FLAGS, uid: int = 0, gid: int = 0,
          mtime: int = 1_500_000_000_123_456_789) -> bytes:
    """An ENTRY element."""
    return element(ENTRY, struct.pack("<6Q", flags, mode, 0, uid, gid, mtime))


@dataclass
class File:
    """A regular file of a hand-made archive."""

    data: bytes = b""
    mode: int = 0o644
    meta: bytes = b""  # extra elements between ENTRY and PAYLOAD

    def encode(self, flags: int) -> bytes:
        return (entry(stat.S_IFREG | self.mode, flags=flags) + self.meta
                + element(PAYLOAD, self.data))


@dataclass
class Link:
    """A symlink of a hand-made archive."""

    target: bytes

    def encode(self, flags: int) -> bytes:
        return entry(stat.S_IFLNK | 0o777, flags=flags) + element(SYMLINK, self.target + b"\0")


@dataclass
class Dev:
    """A device node of a hand-made archive."""

    kind: int = stat.S_IFCHR
    major: int = 1
    minor: int = 3

    def encode(self, flags: int) -> bytes:
        return (entry(self.kind | 0o600, flags=flags)
                + element(DEVICE, struct.pack("<QQ", self.major, self.minor)))


@dataclass
class Dir:
    """A directory of a hand-made archive; children are written in the order given.

    ``goodbye`` may rewrite the directory's GOODBYE items and tail before they are
    written: ``goodbye(items, tail) -> (items, tail)``.
    """

    children: list[tuple[bytes, Any]] = field(default_factory=list)
    mode: int = 0o755
    goodbye: Callable[[list[list[int]], list[int]], tuple[list[list[int]], list[int]]] | None \
        = None

    def encode_at(self, offset: int, flags: int) -> bytes:
        out = bytearray(entry(stat.S_IFDIR | self.mode, flags=flags))
        starts, names = [], []
        for name, child in self.children:
            starts.append(offset + len(out))
            names.append(name)
            out += element(FILENAME, name + b"\0")
            child_offset = offset + len(out)
            out += (child.encode_at(child_offset, flags) if isinstance(child, Dir)
                    else child.encode(flags))
        goodbye_offset = offset + len(out)
        items = [list(i) for i in goodbye_items(starts, names, goodbye_offset)]
        size = 16 + 24 * (len(items) + 1)
        tail = [goodbye_offset - offset, size, GOODBYE_TAIL_MARKER]
        if self.goodbye is not None:
            items, tail = self.goodbye(items, tail)
        body = b"".join(struct.pack("<3Q", *i) for i in items) + struct.pack("<3Q", *tail)
        out += struct.pack("<QQ", 16 + len(body), GOODBYE) + body
        return bytes(out)


def build(root: Dir, flags: int = FLAGS) -> bytes:
    """The catar bytes of a hand-made tree."""
    return root.encode_at(0, flags)


def xattr(name: bytes, value: bytes) -> bytes:
    """An XATTR element in casync's form."""
    return element(XATTR, name + b"\0" + value)


# -- real trees -------------------------------------------------------------------------------

ACL_USER_1000_RW = bytes.fromhex(  # u::rw-, u:1000:rw-, g::r--, m::rw-, o::r--
    "02000000" "0100" "0600" "ffffffff" "0200" "0600" "e8030000" "0400" "0400" "ffffffff"
    "1000" "0600" "ffffffff" "2000" "0400" "ffffffff")
DEFAULT_ACL_GROUP_100 = bytes.fromhex(  # u::rwx, g::r-x, g:100:r-x, m::r-x, o::r-x
    "02000000" "0100" "0700" "ffffffff" "0400" "0500" "ffffffff" "0800" "0500" "64000000"
    "1000" "0500" "ffffffff" "2000" "0500" "ffffffff")
FCAPS_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
T0 = 1_700_000_000_123_456_789


def make_tree(root: Path, *, negative_time: bool = False) -> Path:
    """A tree with every file type and every kind of metadata catar can carry (root only).

    Regular files (empty, small, > 64 KiB, setuid, odd names), directories (setgid,
    sticky, empty, other owners), symlinks (relative, absolute, dangling), a FIFO, a
    socket, character and block devices, user/trusted xattrs (binary values too), a
    file capability, an SELinux label, access and default ACLs, nanosecond mtimes.
    """
    import random
    import socket

    rng = random.Random(7)
    root.mkdir()
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sticky").mkdir()
    files = {
        "file.txt": b"hello catar\n",
        "empty.file": b"",
        "big.bin": rng.randbytes(300_000),
        "exec": b"#!/bin/sh\necho hi\n",
        "caps.bin": b"\x7fELF-ish",
        "acl.txt": b"acl\n",
        "label.txt": b"label\n",
        "with space #and hash": b"odd name\n",
        "unicod\u00e9-\u00f1": b"unicode name\n",
        os.fsdecode(b"latin1-\xe9"): b"not UTF-8\n",
        "dir/owned": b"owned by someone else\n",
        "dir/sub/deep.txt": b"deep\n" * 1000,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.symlink("file.txt", root / "link-rel")
    os.symlink("/etc/passwd", root / "link-abs")
    os.symlink("does/not/exist", root / "link-dangling")
    os.symlink("../file.txt", root / "dir" / "link-up")
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    os.mknod(root / "null-dev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop-dev", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mknod(root / "big-dev", stat.S_IFCHR | 0o600, os.makedev(259, 131071))
    os.chmod(root / "exec", 0o4755)
    os.chmod(root / "dir" / "sub", 0o2775)
    os.chmod(root / "sticky", 0o1777)
    os.chmod(root / "empty", 0o700)
    os.chmod(root / "dir", 0o750)
    os.chmod(root / "dir" / "owned", 0o640)
    os.chown(root / "dir", 1000, 100)
    os.chown(root / "dir" / "owned", 1234, 5678)
    os.chown(root / "link-rel", 1000, 1000, follow_symlinks=False)
    os.setxattr(root / "file.txt", "user.comment", b"a comment")
    os.setxattr(root / "file.txt", "user.binary", b"\0\1\2\0")
    os.setxattr(root / "dir", "trusted.marker", b"t")
    os.setxattr(root / "caps.bin", "security.capability", FCAPS_NET_RAW)
    os.setxattr(root / "label.txt", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(root / "acl.txt", "system.posix_acl_access", ACL_USER_1000_RW)
    os.setxattr(root / "dir", "system.posix_acl_default", DEFAULT_ACL_GROUP_100)
    paths = sorted((p for p in root.rglob("*")), key=lambda p: -len(p.parts))
    for i, path in enumerate([*paths, root]):
        ns = T0 + i * 1_000_000_007
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    if negative_time:
        os.utime(root / "empty.file", ns=(-1_234_567_891, -1_234_567_891))
    return root


__all__ = [
    "DESYNC_FLAGS",
    "FLAGS",
    "T0",
    "Dev",
    "Dir",
    "File",
    "Link",
    "build",
    "diff",
    "element",
    "element_names",
    "elements",
    "entry",
    "make_tree",
    "snapshot",
    "xattr",
]
