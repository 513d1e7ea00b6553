"""Built-in plugin: the catar archive format and the filesystem ("disk")."""

from __future__ import annotations

from desync_core.markers import hookimpl
from desync_core.registry import Registry


@hookimpl
def desync_register_archive_formats(registry: Registry) -> None:
    """catar is built in; ``disk`` is a directory tree."""
