"""Built-in plugin: the local directory chunk and index stores (registered like any other)."""

from __future__ import annotations

from desync_core.markers import hookimpl
from desync_core.registry import Registry


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """Local paths (no URL scheme)."""
    registry.add("", "desync_core.stores.local:LocalChunkStore", "local directory")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """Local directories of index files."""
    registry.add("", "desync_core.stores.local:LocalIndexStore", "local directory")
