"""The directory tree of a ``.caidx`` archive, with where each file's bytes sit.

Shared by the ``desync`` fsspec filesystem and the FUSE mount (``desync_mount_fuse``
takes it through :mod:`desync_core.plugin_api`), so both see one entry table.
:func:`build_tree` decodes the archive's metadata once with the core's
:class:`~desync_core.archive.catar.decoder.CatarDecoder`, reading the catar stream
through a :class:`~desync_core.rangeread.RangeReader`, and records for every regular
file the stream offset of its content. Contents are not fetched while the tree is
built: the decoder is handed zeros for a file's content it is about to skip (only
chunks that also hold metadata are read), so a consumer can later read one file by
reading just the chunks under it (``RangeReader.read(entry.offset + pos, n)``).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Protocol

from desync_core.archive.base import DirEnd, Node
from desync_core.archive.catar.decoder import CatarDecoder
from desync_core.archive.xattrs import XATTR_CAPABILITY, XATTR_SELINUX
from desync_core.errors import ArchiveFormatError

_ZEROS = memoryview(bytes(1 << 20))
#: Largest read of real data handed to the decoder: it asks for 1 MiB at a time, and
#: whatever of a file's content it gets before it yields the file is fetched for nothing.
READ_LIMIT = 128 << 10
#: Symlinks followed when a path is resolved (as Linux' MAXSYMLINKS).
MAX_SYMLINKS = 40
_CAPABILITY = os.fsdecode(XATTR_CAPABILITY)
_SELINUX = os.fsdecode(XATTR_SELINUX)


class BlobReader(Protocol):
    """What :func:`build_tree` reads the catar stream through: a
    :class:`~desync_core.rangeread.RangeReader`, or any random-access reader of it
    (the FUSE mount's blob)."""

    @property
    def length(self) -> int:
        """Bytes in the stream."""
        ...

    def read(self, offset: int, size: int) -> bytes:
        """Stream bytes ``[offset, offset+size)``, shorter at the end."""
        ...


@dataclass(slots=True)
class TreeEntry:
    """One object of an archive.

    Attributes:
        mode: ``st_mode`` (type bits and permissions).
        uid, gid: numeric owner.
        mtime: modification time, ns since the epoch.
        size: content length (regular files), target length (symlinks), else 0.
        offset: where a regular file's content starts in the catar stream.
        target: symlink target.
        rdev: device number (block and character devices).
        children: name -> entry in archive (sorted) order; None unless a directory.
        number: position in archive order, the root 1 (unique: a mount's inode number).
        xattrs: extended attributes by name (file capabilities and the SELinux label
            included, as ``getxattr`` shows them), or None when there are none.
        subdirs: child directories (``st_nlink`` of a directory is ``2 + subdirs``).
    """

    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    offset: int = 0
    target: str = ""
    rdev: int = 0
    children: dict[str, TreeEntry] | None = None
    number: int = 0
    xattrs: dict[str, bytes] | None = None
    subdirs: int = 0

    @property
    def kind(self) -> str:
        """``file``, ``directory``, ``symlink`` or ``other`` (devices, FIFOs, sockets)."""
        fmt = stat.S_IFMT(self.mode)
        if fmt == stat.S_IFREG:
            return "file"
        if fmt == stat.S_IFDIR:
            return "directory"
        if fmt == stat.S_IFLNK:
            return "symlink"
        return "other"


class _SkippingReader:
    """Sequential ``read(n)`` over a blob that returns zeros for one announced region
    (the content of the file the decoder has just yielded, which it will skip)."""

    def __init__(self, blob: BlobReader) -> None:
        self.blob = blob
        self.position = 0
        self.skip_start = 0
        self.skip_end = 0

    def read(self, n: int) -> bytes | memoryview:
        pos = self.position
        n = min(n, self.blob.length - pos)
        if n <= 0:
            return b""
        if self.skip_start <= pos < self.skip_end:
            take = min(n, self.skip_end - pos, len(_ZEROS))
            self.position = pos + take
            return _ZEROS[:take]
        end = pos + min(n, READ_LIMIT)
        if pos < self.skip_start < end:
            end = self.skip_start
        data = self.blob.read(pos, end - pos)
        self.position = pos + len(data)
        return data


def _xattrs(node: Node) -> dict[str, bytes] | None:
    values = {os.fsdecode(key): value for key, value in node.xattrs or ()}
    if node.fcaps:
        values[_CAPABILITY] = node.fcaps
    if node.selinux:  # getxattr shows the label NUL-terminated, as the kernel does
        values[_SELINUX] = node.selinux + b"\0"
    return values or None


def build_tree(blob: BlobReader, name: str = "archive") -> TreeEntry:
    """The root entry of the catar archive whose stream ``blob`` reads.

    Raises:
        ArchiveFormatError: the stream is not a valid catar archive, or its root is not
            a directory.
        DesyncError, OSError: a chunk holding metadata could not be fetched.
    """
    reader = _SkippingReader(blob)
    decoder = CatarDecoder(reader.read, name=name)
    stack: list[TreeEntry] = []
    root: TreeEntry | None = None
    count = 0
    for node in decoder.nodes():
        if isinstance(node, DirEnd):
            stack.pop()
            continue
        assert isinstance(node, Node)
        count += 1
        kind = stat.S_IFMT(node.mode)
        entry = TreeEntry(node.mode, node.uid, node.gid, node.mtime, number=count,
                          xattrs=_xattrs(node))
        if kind == stat.S_IFREG:
            entry.size = node.size
            entry.offset = decoder.offset
            reader.skip_start, reader.skip_end = entry.offset, entry.offset + node.size
        elif kind == stat.S_IFLNK:
            entry.target = os.fsdecode(node.target)
            entry.size = len(node.target)
        elif kind in (stat.S_IFBLK, stat.S_IFCHR):
            entry.rdev = os.makedev(node.rdev_major, node.rdev_minor)
        if root is None:
            if kind != stat.S_IFDIR:
                raise ArchiveFormatError(f"{name}: the archive's root is not a directory")
            root = entry
        else:
            parent = stack[-1]
            assert parent.children is not None
            parent.children[os.fsdecode(node.name)] = entry
            if kind == stat.S_IFDIR:
                parent.subdirs += 1
        if kind == stat.S_IFDIR:
            entry.children = {}
            stack.append(entry)
    if root is None:  # the decoder refuses an empty archive; keep mypy and readers sure
        raise ArchiveFormatError(f"{name}: archive is empty")
    return root


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def lookup(root: TreeEntry, path: str, *, follow: bool = True) -> TreeEntry | None:
    """The entry at ``path`` (``/``-separated, relative to the archive root), or None.

    Symlinks inside the path are followed within the archive: absolute targets count
    from the archive's root and ``..`` stops at the root, as at ``/``; with ``follow``
    the last component is followed too. A missing target or a loop gives None.
    """
    pending = _parts(path)
    pending.reverse()
    trail: list[TreeEntry] = []  # the directories leading to the current one
    current = root
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            current = trail.pop() if trail else root
            continue
        if current.children is None:
            return None
        child = current.children.get(part)
        if child is None:
            return None
        if child.kind == "symlink" and (pending or follow):
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = posixpath.normpath(child.target)
            if target.startswith("/"):
                trail, current = [], root
            pending.extend(reversed(_parts(target)))
            continue
        trail.append(current)
        current = child
    return current


__all__ = ["MAX_SYMLINKS", "READ_LIMIT", "BlobReader", "TreeEntry", "build_tree", "lookup"]
