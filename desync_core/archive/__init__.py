"""Directory trees as archives: the node model, catar, the filesystem, mtree.

See :mod:`desync_core.archive.base` for the node stream every format reads or writes,
:mod:`desync_core.archive.catar` for the casync archive format and
:mod:`desync_core.archive.disk` for walking and (safely) extracting directory trees.
"""

from __future__ import annotations

from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    DIR_END,
    Acl,
    AclEntry,
    ArchiveFormat,
    ArchiveOptions,
    BytesPayload,
    DirEnd,
    Node,
    NodeStream,
    Payload,
)

__all__ = [
    "DEFAULT_FEATURE_FLAGS",
    "DIR_END",
    "Acl",
    "AclEntry",
    "ArchiveFormat",
    "ArchiveOptions",
    "BytesPayload",
    "DirEnd",
    "Node",
    "NodeStream",
    "Payload",
]
