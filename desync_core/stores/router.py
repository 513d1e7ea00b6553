"""``-s A -s B``: the router asks stores in order (``store.md`` §3.1)."""

from __future__ import annotations

from typing import Any

from desync_core.errors import (
    ChunkMissingError,
)
from desync_core.stores.chunk import Chunk


class RouterStore:
    """Several ``-s`` stores queried in order (§3.1).

    A missing chunk moves on to the next store; any other error stops the lookup.
    """

    def __init__(self, stores: list[Any]) -> None:
        if not stores:
            raise ValueError("a router needs at least one store")
        self.stores = stores

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        for store in self.stores:
            try:
                return store.get_chunk(chunk_id)
            except ChunkMissingError:
                continue
        raise ChunkMissingError(chunk_id, self if len(self.stores) > 1 else self.stores[0])

    def has_chunk(self, chunk_id: bytes) -> bool:
        return any(store.has_chunk(chunk_id) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)


