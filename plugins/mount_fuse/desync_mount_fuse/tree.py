"""The directory tree of a ``.caidx`` archive, for mounting it like ``casync mount``.

The entry table is the core's (:func:`~desync_core.plugin_api.build_tree`, which the
``desync`` fsspec filesystem uses too): it decodes the archive's metadata once, reading
the stream through the mount's :class:`~desync_mount_fuse.blob.Blob` without fetching
file contents, and numbers the entries in archive order (the root 1), which serve as
inode numbers here. What stays in this module is FUSE's side: ``getattr``'s answer and
a cache of path lookups (FUSE looks up every path component again on each call).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from desync_core.plugin_api import TreeEntry, build_tree, tree_lookup

#: One object of the mounted tree (the core's entry; ``number`` is its inode number).
Entry = TreeEntry

#: Paths whose lookups are remembered (a bound, so a huge tree cannot grow it forever).
LOOKUP_CACHE = 1 << 16


def attrs(entry: Entry) -> dict[str, int]:
    """``getattr``'s answer for ``entry``."""
    nlink = 2 + entry.subdirs if entry.children is not None else 1
    return {"st_mode": entry.mode, "st_ino": entry.number, "st_nlink": nlink,
            "st_uid": entry.uid, "st_gid": entry.gid, "st_size": entry.size,
            "st_rdev": entry.rdev, "st_blocks": (entry.size + 511) // 512,
            "st_mtime": entry.mtime, "st_atime": entry.mtime, "st_ctime": entry.mtime}


@dataclass
class Tree:
    """Path lookups in a built tree (paths as FUSE gives them: ``/a/b``)."""

    root: Entry
    _cache: dict[str, Entry] = field(default_factory=dict)

    def lookup(self, path: str) -> Entry | None:
        """The entry at ``path``, or None.

        The last component is not followed (the kernel resolves symlinks itself: it
        asks for the link, then for its target), so the paths FUSE hands over contain
        no symlinks and no ``..``.
        """
        found = self._cache.get(path)
        if found is not None:
            return found
        entry = tree_lookup(self.root, path, follow=False)
        if entry is not None and len(self._cache) < LOOKUP_CACHE:
            self._cache[path] = entry
        return entry


__all__ = ["Entry", "Tree", "attrs", "build_tree"]
