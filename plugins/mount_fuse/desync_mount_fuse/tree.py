"""The directory tree of a ``.caidx`` archive, for mounting it like ``casync mount``.

:func:`build_tree` decodes the archive's metadata with the core's
:class:`~desync_core.plugin_api.CatarDecoder` reading the stream through a
:class:`~desync_mount_fuse.blob.Blob`, and records for every regular file where its
content sits in the stream. File contents are not fetched while the tree is built:
:class:`SkippingReader` hands the decoder zeros for a file's content it is about to
skip (only the chunks that also hold metadata are read), and reading a mounted file
later fetches just the chunks under it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from desync_core.plugin_api import (
    XATTR_CAPABILITY,
    XATTR_SELINUX,
    ArchiveFormatError,
    CatarDecoder,
    DirEnd,
    Node,
)
from desync_mount_fuse.blob import Blob

_ZEROS = memoryview(bytes(1 << 20))
#: Largest read of real data: the decoder asks for 1 MiB at a time, and whatever of a
#: file's content it gets before it yields the file is fetched for nothing.
READ_LIMIT = 128 << 10


@dataclass(slots=True)
class Entry:
    """One object of the mounted tree.

    Attributes:
        ino: inode number (the root is 1).
        mode: ``st_mode``.
        uid, gid: owner.
        mtime: modification time, ns.
        size: content length (regular files), target length (symlinks).
        offset: where a regular file's content starts in the archive stream.
        target: symlink target.
        rdev: device number (devices).
        xattrs: extended attributes by name.
        children: name -> entry, in archive (sorted) order (directories).
        subdirs: number of child directories (for ``st_nlink``).
    """

    ino: int
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    offset: int = 0
    target: bytes = b""
    rdev: int = 0
    xattrs: dict[str, bytes] | None = None
    children: dict[str, Entry] | None = None
    subdirs: int = 0

    def attrs(self) -> dict[str, int]:
        """``getattr``'s answer."""
        nlink = 2 + self.subdirs if self.children is not None else 1
        return {"st_mode": self.mode, "st_ino": self.ino, "st_nlink": nlink,
                "st_uid": self.uid, "st_gid": self.gid, "st_size": self.size,
                "st_rdev": self.rdev, "st_blocks": (self.size + 511) // 512,
                "st_mtime": self.mtime, "st_atime": self.mtime, "st_ctime": self.mtime}


class SkippingReader:
    """Sequential ``read(n)`` over a blob that returns zeros for one announced region.

    The region is the content of the file the decoder has just yielded: it will skip
    those bytes, so there is no reason to fetch them.
    """

    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self.position = 0
        self.skip_start = 0
        self.skip_end = 0

    def skip(self, start: int, end: int) -> None:
        """The decoder will not look at stream bytes ``[start, end)``."""
        self.skip_start, self.skip_end = start, end

    def read(self, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes from the current position (``b""`` at the end)."""
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
    values = {os.fsdecode(name): value for name, value in node.xattrs or ()}
    if node.fcaps:
        values[os.fsdecode(XATTR_CAPABILITY)] = node.fcaps
    if node.selinux:
        values[os.fsdecode(XATTR_SELINUX)] = node.selinux + b"\0"
    return values or None


def build_tree(blob: Blob, name: str = "archive") -> tuple[Entry, int]:
    """The root entry of the archive in ``blob`` and the number of entries.

    Raises:
        ArchiveFormatError: the stream is not a valid catar archive, or its root is not
            a directory.
        DesyncError, OSError: a chunk holding metadata could not be fetched.
    """
    reader = SkippingReader(blob)
    decoder = CatarDecoder(reader.read, name=name)
    stack: list[Entry] = []
    root: Entry | None = None
    count = 0
    for node in decoder.nodes():
        if isinstance(node, DirEnd):
            stack.pop()
            continue
        assert isinstance(node, Node)
        count += 1
        kind = stat.S_IFMT(node.mode)
        entry = Entry(count, node.mode, node.uid, node.gid, node.mtime, xattrs=_xattrs(node))
        if kind == stat.S_IFREG:
            entry.size = node.size
            entry.offset = decoder.offset
            reader.skip(entry.offset, entry.offset + node.size)
        elif kind == stat.S_IFLNK:
            entry.target = node.target
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
    assert root is not None
    return root, count


@dataclass
class Tree:
    """Path lookups in a built tree (paths as FUSE gives them: ``/a/b``)."""

    root: Entry
    count: int
    _cache: dict[str, Entry] = field(default_factory=dict)

    def lookup(self, path: str) -> Entry | None:
        """The entry at ``path``, or None."""
        found = self._cache.get(path)
        if found is not None:
            return found
        entry: Entry | None = self.root
        for part in path.split("/"):
            if not part:
                continue
            if entry is None or entry.children is None:
                return None
            entry = entry.children.get(part)
        if entry is not None and len(self._cache) < 1 << 16:
            self._cache[path] = entry
        return entry


__all__ = ["Entry", "SkippingReader", "Tree", "build_tree"]
