"""Store composition (``store.md`` §3): verification, retries, router, failover, cache.

These are the only places where chunks are verified, transient errors retried, and
stores combined; transports stay simple. Every wrapper offers the reading interface
(``get_chunk``, ``has_chunk``, ``close``) and forwards writes where that makes sense.
One module each: :mod:`~desync_core.stores.verifying`, :mod:`~desync_core.stores.retry`,
:mod:`~desync_core.stores.router`, :mod:`~desync_core.stores.failover`,
:mod:`~desync_core.stores.cache`; this module gathers them and walks compositions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from desync_core.stores.cache import CacheStore
from desync_core.stores.failover import FailoverGroup
from desync_core.stores.reader import ChunkReader, ChunkWriter, StoreWrapper
from desync_core.stores.retry import RetryingStore, call_with_retries
from desync_core.stores.router import RouterStore
from desync_core.stores.verifying import VerifyingStore, read_sized, unexpected_size


def iter_members(reader: Any) -> Iterator[Any]:
    """The transports inside a composition (for reporting)."""
    if isinstance(reader, CacheStore):
        yield from iter_members(reader.cache)
        yield from iter_members(reader.router)
    elif isinstance(reader, RouterStore):
        for s in reader.stores:
            yield from iter_members(s)
    elif isinstance(reader, FailoverGroup):
        for m in reader.members:
            yield from iter_members(m)
    elif isinstance(reader, StoreWrapper):
        yield from iter_members(reader.inner)
    else:
        yield reader



__all__ = [
    "CacheStore",
    "ChunkReader",
    "ChunkWriter",
    "FailoverGroup",
    "RetryingStore",
    "RouterStore",
    "VerifyingStore",
    "call_with_retries",
    "iter_members",
    "read_sized",
    "unexpected_size",
]
