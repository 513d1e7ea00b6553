"""What operations read chunks from (a store or a composition of stores), and the
base of the wrappers that forward to one store."""

from __future__ import annotations

from typing import Any, Protocol

from desync_core.stores.chunk import Chunk


class ChunkReader(Protocol):
    """What operations read chunks from: a store or a composition of stores."""

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        """The chunk; ChunkMissingError if no store has it."""

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the chunk is available."""

    def close(self) -> None:
        """Release resources."""


class ChunkWriter(ChunkReader, Protocol):
    """A reader that also stores chunks."""

    def store_chunk(self, chunk: Chunk) -> None:
        """Store a chunk (atomic, idempotent)."""


class StoreWrapper:
    """Forwards close/str to the wrapped store."""

    inner: Any

    def close(self) -> None:
        self.inner.close()

    def __str__(self) -> str:
        return str(self.inner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


