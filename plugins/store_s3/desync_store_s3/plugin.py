"""Entry point of desync-store-s3: registrations only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
stores are registered as ``"module:Class"`` strings, so boto3 is imported only when an
``s3+http(s)://`` location is opened (a test checks ``sys.modules``).
"""

from __future__ import annotations

from desync_core.plugin_api import Registry, hookimpl

SCHEMES = ("s3+http", "s3+https")


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``s3+http://host[:port]/bucket[/prefix]`` chunk stores (``remote.md`` §6)."""
    registry.add(SCHEMES, "desync_store_s3.store:S3ChunkStore", "S3 chunk store")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """``s3+http(s)://host/bucket/dir/`` index stores (``remote.md`` §9)."""
    registry.add(SCHEMES, "desync_store_s3.store:S3IndexStore", "S3 index store")


@hookimpl
def desync_register_config_sections(registry: Registry) -> None:
    """The ``s3-credentials`` section (``store.md`` §5.3)."""
    registry.add("s3-credentials", "desync_store_s3.credentials:validate",
                 "S3 credentials by scheme://host[:port]")
