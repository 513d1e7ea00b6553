"""Entry-point module: registers the store by name only (imports nothing heavy)."""

from __future__ import annotations

from desync_core.plugin_api import hookimpl


@hookimpl
def desync_register_chunk_stores(registry) -> None:  # type: ignore[no-untyped-def]
    """``flat:///path``: every chunk is one file in one directory."""
    registry.add("flat", "desync_store_example.store:FlatChunkStore", "flat directory store")
