"""Entry point of desync-store-sftp: registrations only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
stores are registered as ``"module:Class"`` strings, so paramiko is imported only when
an ``sftp://`` location is opened (a core test checks ``sys.modules``).
"""

from __future__ import annotations

from desync_core.plugin_api import Registry, hookimpl


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``sftp://[user@]host[:port]/path`` chunk stores (``remote.md`` §5)."""
    registry.add("sftp", "desync_store_sftp.store:SFTPChunkStore", "SFTP chunk store (over ssh)")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """``sftp://host/dir/`` index stores (``remote.md`` §9)."""
    registry.add("sftp", "desync_store_sftp.store:SFTPIndexStore", "SFTP index store (over ssh)")
