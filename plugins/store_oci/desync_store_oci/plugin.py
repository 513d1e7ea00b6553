"""Entry point of desync-store-oci: registrations only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
store and the credentials validator are registered as ``"module:name"`` strings, so
``requests`` loads only when an ``oci+…`` location is opened.
"""

from __future__ import annotations

from desync_core.plugin_api import Registry, hookimpl

SCHEMES = ("oci+http", "oci+https")

#: desync's words (cmd/desync/store.go) for an index location in a registry.
INDEX_REFUSAL = "Index storage is not supported by oci registry stores"


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``oci+https://registry/repo`` and ``oci+http://…`` chunk stores (``remote.md`` §8)."""
    registry.add(SCHEMES, "desync_store_oci.store:OCIChunkStore", "OCI registry chunk store")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """Index files cannot live in a registry (``remote.md`` §9)."""
    registry.refuse(list(SCHEMES), INDEX_REFUSAL)


@hookimpl
def desync_register_config_sections(registry: Registry) -> None:
    """``oci-credentials``: ``{"<location glob>": {"username": …, "secret": …}}``."""
    registry.add("oci-credentials", "desync_store_oci.credentials:validate",
                 "OCI registry credentials by store location")
