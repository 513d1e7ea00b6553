"""Built-in plugin: the catar archive format and the filesystem ("disk").

Registered through the same ``desync_register_archive_formats`` hook as third-party
formats (the ``format_tar`` plugin adds ``tar`` and ``gnu-tar``).
"""

from __future__ import annotations

from desync_core.markers import hookimpl
from desync_core.registry import Registry


@hookimpl
def desync_register_archive_formats(registry: Registry) -> None:
    """``catar`` (archive files) and ``disk`` (a directory tree)."""
    registry.add("catar", "desync_core.archive.catar:CatarFormat",
                 "catar archive (casync format)")
    registry.add("disk", "desync_core.archive.disk:DiskFormat",
                 "directory tree on local disk")
