"""Chunk and index stores: interfaces, the local store, and store composition.

Names are imported lazily (PEP 562) so that importing the built-in store plugin, which
lives in this package, stays light (no zstandard at ``desync --help``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ChunkStore": "base",
    "IndexStore": "base",
    "KeyValueChunkStore": "base",
    "PrunableChunkStore": "base",
    "WritableChunkStore": "base",
    "WritableIndexStore": "base",
    "chunk_key": "base",
    "parse_chunk_key": "base",
    "Chunk": "chunk",
    "ChunkCodec": "chunk",
    "StoreOptions": "options",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_EXPORTS)
