"""Chunks and their storage encodings (``store.md`` §2.1).

A :class:`Chunk` holds plain data, encoded (stored) bytes, or both, and converts
lazily: a chunk read from a compressed store and served by a compressed chunk-server
is never decompressed and recompressed.
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass

from desync_core import zstd
from desync_core.digest import Digest
from desync_core.errors import ChunkInvalidError
from desync_core.inflate import inflate_bounded

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
COMPRESSED_EXTENSION = ".cacnk"

#: Which zstd library compresses chunks (see :mod:`desync_core.zstd`).
ZSTD_BACKEND = zstd.BACKEND


def compress(data: bytes | bytearray | memoryview) -> bytes:
    """zstd-compress chunk data exactly like casync (level 3, streamed without a
    content size, no checksum); byte-identical to casync's ``.cacnk`` files."""
    return zstd.compress(data)


def decompress(stored: bytes | bytearray | memoryview, chunk_id: bytes) -> bytes:
    """Decompress a stored chunk; zstd (any frame form), xz and gzip are accepted.

    Raises:
        ChunkInvalidError: the data is not a complete compressed stream, or it would
            inflate beyond :data:`MAX_CHUNK_SIZE`.
    """
    head = bytes(stored[:6])
    try:
        if head.startswith(ZSTD_MAGIC):
            return zstd.decompress(stored, MAX_CHUNK_SIZE)
        if head.startswith(XZ_MAGIC):
            return inflate_bounded(stored, lzma.LZMADecompressor, MAX_CHUNK_SIZE)
        if head.startswith(GZIP_MAGIC):
            return inflate_bounded(stored, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
                                   MAX_CHUNK_SIZE)
    except (lzma.LZMAError, zlib.error, ValueError, EOFError) as exc:
        raise ChunkInvalidError(chunk_id, cause=str(exc) or type(exc).__name__) from exc
    raise ChunkInvalidError(chunk_id, cause="unknown compression format")


#: No valid chunk is larger (casync's CA_CHUNK_SIZE_LIMIT_MAX). A stored chunk that
#: inflates beyond it is invalid; decoding stops there instead of exhausting memory.
MAX_CHUNK_SIZE = 128 * 1024 * 1024
@dataclass(frozen=True)
class ChunkCodec:
    """How a store encodes chunk data in its files or objects."""

    compressed: bool = True

    @property
    def extension(self) -> str:
        """File-name extension after the hex id (``.cacnk`` or nothing)."""
        return COMPRESSED_EXTENSION if self.compressed else ""

    def encode(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """Plain data -> stored bytes."""
        return compress(data) if self.compressed else data

    def decode(self, stored: bytes | bytearray | memoryview, chunk_id: bytes) -> bytes:
        """Stored bytes -> plain data."""
        return decompress(stored, chunk_id) if self.compressed else bytes(stored)


COMPRESSED = ChunkCodec(True)
UNCOMPRESSED = ChunkCodec(False)


class Chunk:
    """A chunk: its id plus plain data and/or its stored encoding.

    Args:
        chunk_id: the 32-byte id.
        data: plain data, if known.
        encoded: stored bytes, if known; then ``codec`` says how they are encoded.
        codec: the encoding of ``encoded``.
    """

    __slots__ = ("_codec", "_data", "_encoded", "id")

    def __init__(
        self,
        chunk_id: bytes,
        data: bytes | bytearray | memoryview | None = None,
        *,
        encoded: bytes | bytearray | memoryview | None = None,
        codec: ChunkCodec | None = None,
    ) -> None:
        if data is None and encoded is None:
            raise ValueError("a chunk needs data or encoded bytes")
        self.id = chunk_id
        self._data = data
        self._encoded = encoded
        self._codec = codec if encoded is not None else None

    def data(self) -> bytes | bytearray | memoryview:
        """The plain chunk data (decoded on first use).

        Raises:
            ChunkInvalidError: the stored bytes cannot be decoded.
        """
        if self._data is None:
            assert self._encoded is not None
            assert self._codec is not None
            self._data = self._codec.decode(self._encoded, self.id)
        return self._data

    def data_into(self, out: memoryview) -> int:
        """Decode the plain data into ``out``; returns its size.

        zstd-compressed chunks are decoded straight into ``out`` (no intermediate
        copy). Data that does not fit raises, so an ``out`` one byte longer than the
        expected size both bounds the work and reveals data that is too long.

        Raises:
            ChunkInvalidError: the stored bytes cannot be decoded, or do not fit.
        """
        capacity = len(out)
        encoded = self._encoded
        if (self._data is None and self._codec is not None and self._codec.compressed
                and encoded is not None and bytes(encoded[:4]) == ZSTD_MAGIC):
            try:
                return zstd.decompress_into(encoded, out, capacity)  # type: ignore[arg-type]
            except zstd.ZstdDecodeError as exc:
                if "too small" in str(exc):  # libzstd: "Destination buffer is too small"
                    raise ChunkInvalidError(self.id, cause=f"decompresses to more than "
                                            f"{capacity - 1} bytes") from exc
                raise ChunkInvalidError(self.id, cause=str(exc)) from exc
        data = self.data()
        n = len(data)
        if n > capacity:
            raise ChunkInvalidError(self.id, cause=f"decompresses to more than "
                                    f"{capacity - 1} bytes")
        out[:n] = data
        return n

    def encoded(self, codec: ChunkCodec) -> bytes | bytearray | memoryview:
        """The chunk in ``codec``'s encoding, reusing stored bytes when they match."""
        if self._encoded is not None and self._codec == codec:
            return self._encoded
        return codec.encode(self.data())

    def verify(self, digest: Digest) -> None:
        """Check that the data hashes to the id.

        Raises:
            ChunkInvalidError: it does not (or cannot be decoded).
        """
        actual = digest.sum(self.data())
        if actual != self.id:
            raise ChunkInvalidError(self.id, actual)

    def __repr__(self) -> str:
        return f"Chunk({self.id.hex()[:16]}...)"


__all__ = [
    "COMPRESSED",
    "UNCOMPRESSED",
    "Chunk",
    "ChunkCodec",
    "compress",
    "decompress",
]
