"""The ``disk`` archive format: walk a directory tree, or extract a node stream safely.

Reading (``desync tar DIR``) follows casync's encoder: children in ``strcmp`` order
symlinks never followed, regular files and directories opened with ``O_NOFOLLOW`` and
described by ``fstat`` of the open descriptor, only the metadata the feature flags
store is collected, files with the ``nodump`` attribute left out under
exclude-nodump, other filesystems left out with ``-x`` (exclude-submounts).

Writing (``desync untar``) never touches anything outside the target directory:
every object is created relative to its parent's directory descriptor, directories
are entered with ``O_NOFOLLOW | O_DIRECTORY`` (an existing symlink is an error, never
followed), files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` after removing
whatever was there. Names are checked again here, so a hostile producer cannot
smuggle ``..`` or ``/`` through. Metadata follows desync (``catar.md`` §7): owner
extended attributes (incl. file capabilities and SELinux labels), ACLs, mode
mtime, chattr attributes; directories get theirs when they are complete.
"""

from __future__ import annotations

from collections.abc import Iterable

from desync_core.archive.base import (
    ArchiveFormat,
    ArchiveOptions,
    DirEnd,
    ForkedWriterParts,
    Node,
    NodeStream,
)
from desync_core.archive.disk.common import (
    CHATTR_BITS,
    FS_IOC_FSGETXATTR,
    FS_IOC_GETFLAGS,
    FS_IOC_SETFLAGS,
    FS_NODUMP_FL,
    chattr_to_flags,
    flags_to_chattr,
)
from desync_core.archive.disk.reader import DiskReader
from desync_core.archive.disk.writer import DiskDirector, DiskWriter, MadeDir


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
    "FS_IOC_FSGETXATTR",
    "FS_IOC_GETFLAGS",
    "FS_IOC_SETFLAGS",
    "FS_NODUMP_FL",
    "DiskDirector",
    "DiskFormat",
    "DiskReader",
    "DiskWriter",
    "MadeDir",
    "chattr_to_flags",
    "flags_to_chattr",
]
