"""Verified reads: every chunk read from a store is decoded, size- and hash-checked here."""

from __future__ import annotations

from typing import Any, NoReturn

from desync_core.digest import Digest
from desync_core.errors import (
    ChunkInvalidError,
    StoreReadOnlyError,
)
from desync_core.stores.chunk import Chunk
from desync_core.stores.reader import StoreWrapper


def unexpected_size(chunk_id: bytes, got: int, want: int) -> ChunkInvalidError:
    """The error for a chunk whose data is not the size its index gives."""
    return ChunkInvalidError(chunk_id, cause=f"unexpected size for chunk {chunk_id.hex()}: "
                             f"{got} bytes instead of {want}")


def read_sized(source: Any, chunk_id: bytes, size: int) -> bytes | bytearray | memoryview:
    """The verified plain data of a chunk that an index says is ``size`` bytes.

    The one size check of every reader that has an index (cat, untar -i, extract's
    careful path, the archive fetcher, mounts): a chunk of another size is an
    :class:`ChunkInvalidError` (the hash check is the source's ``VerifyingStore``).
    """
    data = source.get_chunk(chunk_id).data()
    if len(data) != size:
        raise unexpected_size(chunk_id, len(data), size)
    return data


class VerifyingStore(StoreWrapper):
    """Decodes chunks and checks them against their id (unless ``skip_verify``).

    A chunk that cannot be decoded or hashes to another id raises
    :class:`ChunkInvalidError` naming the store. This and :meth:`check` are the one
    place chunks read from stores are hash-checked.

    Args:
        max_size: no chunk decodes to more (the index's largest chunk, when the reader
            has an index): a hostile chunk file is invalid as soon as its output passes
            this, instead of growing to :data:`~desync_core.stores.chunk.MAX_CHUNK_SIZE`
            in every worker.
    """

    def __init__(self, inner: Any, digest: Digest, *, skip_verify: bool = False,
                 max_size: int | None = None) -> None:
        self.inner = inner
        self.digest = digest
        self.skip_verify = skip_verify
        self.max_size = max_size

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        chunk = self.inner.get_chunk(chunk_id)
        if self.skip_verify:
            return chunk  # decoded lazily, only if someone needs the plain data
        try:
            self.check(chunk_id, chunk.data(self.max_size))
        except ChunkInvalidError as exc:
            self._raise_named(chunk_id, exc)
        return chunk

    def get_chunk_into(self, chunk_id: bytes, out: memoryview) -> int:
        """Like :meth:`get_chunk`, but decode the data straight into ``out`` (see
        :meth:`Chunk.data_into`) and verify it there; returns the size.

        For readers that know the size from an index: with ``out`` one byte longer than
        that, no copy is made and oversized data is an error.
        """
        chunk = self.inner.get_chunk(chunk_id)
        try:
            n = chunk.data_into(out)
            if not self.skip_verify:
                self.check(chunk_id, out[:n])
        except ChunkInvalidError as exc:
            self._raise_named(chunk_id, exc)
        return n

    def check(self, chunk_id: bytes, data: bytes | bytearray | memoryview) -> None:
        """Raise :class:`ChunkInvalidError` (naming the store) unless ``data`` hashes to
        ``chunk_id``; nothing with ``skip-verify``. For fast paths that decode stored
        bytes themselves (extract's direct reads)."""
        if self.skip_verify:
            return
        actual = self.digest.sum(data)
        if actual != chunk_id:
            raise ChunkInvalidError(chunk_id, actual, store=self.inner)

    def named(self, chunk_id: bytes, exc: ChunkInvalidError) -> ChunkInvalidError:
        """``exc``, naming this store if it names none (a chunk that failed to decode)."""
        if exc.store is not None:
            return exc
        return ChunkInvalidError(chunk_id, exc.actual_id, str(exc).split(": ", 1)[-1],
                                 store=self.inner)

    def _raise_named(self, chunk_id: bytes, exc: ChunkInvalidError) -> NoReturn:
        """Raise ``exc``, naming this store if it names none (a chunk that failed to
        decode)."""
        named = self.named(chunk_id, exc)
        if named is exc:
            raise exc
        raise named from exc

    def has_chunk(self, chunk_id: bytes) -> bool:
        return bool(self.inner.has_chunk(chunk_id))

    def store_chunk(self, chunk: Chunk) -> None:
        if not hasattr(self.inner, "store_chunk"):
            raise StoreReadOnlyError(f"store '{self.inner}' does not support writing")
        self.inner.store_chunk(chunk)


