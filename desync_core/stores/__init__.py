"""Chunk and index stores: interfaces, the local store, and store composition."""

from __future__ import annotations

from desync_core.stores.base import (
    ChunkStore,
    IndexStore,
    KeyValueChunkStore,
    PrunableChunkStore,
    WritableChunkStore,
    WritableIndexStore,
    chunk_key,
    parse_chunk_key,
)
from desync_core.stores.chunk import Chunk, ChunkCodec
from desync_core.stores.options import StoreOptions

__all__ = [
    "Chunk",
    "ChunkCodec",
    "ChunkStore",
    "IndexStore",
    "KeyValueChunkStore",
    "PrunableChunkStore",
    "StoreOptions",
    "WritableChunkStore",
    "WritableIndexStore",
    "chunk_key",
    "parse_chunk_key",
]
