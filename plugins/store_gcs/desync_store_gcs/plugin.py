"""Entry point of desync-store-gcs: registrations only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
stores are registered as ``"module:Class"`` strings, so ``google-cloud-storage`` is
imported only when a ``gs://`` location is opened (a core test checks ``sys.modules``).
"""

from __future__ import annotations

from desync_core.plugin_api import Registry, hookimpl

SCHEME = "gs"


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``gs://bucket[/prefix]`` chunk stores (``remote.md`` §7)."""
    registry.add(SCHEME, "desync_store_gcs.store:GCSChunkStore", "Google Cloud Storage chunk store")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """``gs://bucket/dir/`` index stores (``remote.md`` §9)."""
    registry.add(SCHEME, "desync_store_gcs.store:GCSIndexStore", "Google Cloud Storage index store")
