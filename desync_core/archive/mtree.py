"""Print a node stream in mtree format (``catar.md`` §8.3), like ``desync mtree``.

One line per node in archive order after a ``#mtree v1.0`` header. Differences from
desync, all deliberate fixes of the bugs ``catar.md`` lists: nanoseconds are always
nine zero-padded digits, character devices are ``type=char``, FIFOs and sockets are
listed (``type=fifo``/``type=socket``), and the SHA-256 keyword is ``sha256digest``.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from typing import TextIO

from desync_core.archive.base import DirEnd, Node
from desync_core.digest import Digest

_TYPES = {
    stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link",
    stat.S_IFBLK: "block", stat.S_IFCHR: "char", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_DIGEST_KEYWORDS = {"sha512-256": "sha512256digest", "sha256": "sha256digest"}
# Bytes written as-is: printable ASCII except space, '#' and backslash.
_ESCAPE = [chr(c) if 0x20 < c < 0x7F and c not in b"#\\" else f"\\{c:03o}" for c in range(256)]


def escape(name: bytes) -> str:
    """mtree(5) escaping: ``\\``, ``#``, space and non-printable bytes as ``\\ooo``."""
    return "".join([_ESCAPE[c] for c in name])


def _time(ns: int) -> str:
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"{sec}.{nsec:09d}"


def mtree_line(node: Node, digest: Digest) -> str:
    """The mtree line of one node (reads a regular file's content to hash it)."""
    kind = stat.S_IFMT(node.mode)
    parts = [escape(node.path) if node.path else ".", f"type={_TYPES.get(kind, 'unknown')}",
             f"mode={node.mode & 0o777:04o}"]
    if kind == stat.S_IFLNK:
        parts.append(f"target={escape(node.target)}")
    parts.append(f"uid={node.uid}")
    parts.append(f"gid={node.gid}")
    if kind == stat.S_IFREG:
        parts.append(f"size={node.size}")
    parts.append(f"time={_time(node.mtime)}")
    if kind == stat.S_IFREG:
        h = digest.new()
        if node.payload is not None:
            for block in node.payload.blocks():
                h.update(block)
        parts.append(f"{_DIGEST_KEYWORDS[digest.name]}={h.hexdigest()}")
    return " ".join(parts)


def write_mtree(nodes: Iterable[Node | DirEnd], out: TextIO, digest: Digest) -> int:
    """Write the mtree listing of a node stream; returns the number of entries."""
    out.write("#mtree v1.0\n")
    count = 0
    for node in nodes:
        if isinstance(node, Node):
            out.write(mtree_line(node, digest) + "\n")
            count += 1
    out.flush()
    return count


__all__ = ["escape", "mtree_line", "write_mtree"]
