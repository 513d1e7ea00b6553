"""Chunks and their storage encodings (``store.md`` §2.1).

A :class:`Chunk` holds plain data, encoded (stored) bytes, or both, and converts
lazily: a chunk read from a compressed store and served by a compressed chunk-server
is never decompressed and recompressed.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from desync_core import zstd
from desync_core.digest import Digest
from desync_core.errors import ChunkInvalidError
from desync_core.inflate import iter_inflate

if TYPE_CHECKING:
    from desync_core.stores.encryption import ChunkCipher
    from desync_core.stores.options import StoreOptions

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


def decompress(stored: bytes | bytearray | memoryview, chunk_id: bytes,
               limit: int | None = None) -> bytes:
    """Decompress a stored chunk; zstd (any frame form), xz and gzip are accepted.

    Args:
        limit: at most this many bytes of output (default :data:`MAX_CHUNK_SIZE`);
            readers that know the chunk's size from an index pass it, so a hostile
            chunk file cannot make them allocate more than a valid chunk needs.

    Raises:
        ChunkInvalidError: the data is not a complete compressed stream, or it would
            inflate beyond ``limit``.
    """
    # (Not a join of iter_decompress: its zstd pieces are views of one scratch buffer.)
    pieces = [bytes(piece) for piece in iter_decompress(stored, chunk_id, limit)]
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def iter_decompress(stored: bytes | bytearray | memoryview, chunk_id: bytes,
                    limit: int | None = None) -> Iterator[bytes | memoryview]:
    """The plain data of a stored chunk in pieces (bounded memory: ``verify`` hashes
    them as they come). A piece is valid until the next one is asked for."""
    limit = MAX_CHUNK_SIZE if limit is None else limit
    head = bytes(stored[:6])
    try:
        if head.startswith(ZSTD_MAGIC):
            yield from zstd.iter_decompress(stored, limit)
            return
        if head.startswith(XZ_MAGIC):
            yield from iter_inflate(stored, lzma.LZMADecompressor, limit)
            return
        if head.startswith(GZIP_MAGIC):
            yield from iter_inflate(stored, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
                                    limit)
            return
    except (lzma.LZMAError, zlib.error, ValueError, EOFError) as exc:
        raise ChunkInvalidError(chunk_id, cause=str(exc) or type(exc).__name__) from exc
    raise ChunkInvalidError(chunk_id, cause="unknown compression format")


#: No valid chunk is larger (casync's CA_CHUNK_SIZE_LIMIT_MAX). A stored chunk that
#: inflates beyond it is invalid; decoding stops there instead of exhausting memory.
MAX_CHUNK_SIZE = 128 * 1024 * 1024


@dataclass(frozen=True)
class ChunkCodec:
    """How a store encodes chunk data in its files or objects: desync's converter stack,
    compression (zstd) then optionally encryption (``store.md`` §2).

    Every store type uses its store's codec (``ChunkStore.codec``, built from the store
    options by :meth:`for_options`) for its keys (:attr:`extension`) and bytes
    (:meth:`encode`, :meth:`decode`), so an encrypted S3 bucket, SFTP directory or
    chunk-server wire format is the same thing as an encrypted local store.
    """

    compressed: bool = True
    #: The encryption layer, or None for plain chunks.
    cipher: ChunkCipher | None = None

    @classmethod
    def for_options(cls, options: StoreOptions) -> ChunkCodec:
        """The codec a store with ``options`` uses (``uncompressed``, ``encryption*``).

        Raises:
            ConfigError: invalid encryption settings (desync's messages).
        """
        from desync_core.stores.encryption import cipher_for_options

        cipher = cipher_for_options(options) if (
            options.encryption or options.encryption_key or options.encryption_algorithm
        ) else None
        if cipher is None:
            return UNCOMPRESSED if options.uncompressed else COMPRESSED
        return cls(compressed=not options.uncompressed, cipher=cipher)

    @property
    def encrypted(self) -> bool:
        """Whether stored chunks are encrypted."""
        return self.cipher is not None

    @property
    def extension(self) -> str:
        """File-name extension after the hex id: ``.cacnk`` or nothing, then
        ``.<algorithm>-<key id>`` when encrypted."""
        ext = COMPRESSED_EXTENSION if self.compressed else ""
        return ext if self.cipher is None else ext + self.cipher.extension

    def encode(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """Plain data -> stored bytes (compressed, then encrypted)."""
        layer = compress(data) if self.compressed else data
        return layer if self.cipher is None else self.cipher.seal(layer)

    def decode(self, stored: bytes | bytearray | memoryview, chunk_id: bytes,
               limit: int | None = None) -> bytes:
        """Stored bytes -> plain data (decrypted, then decompressed; at most ``limit``
        bytes, see :func:`decompress`).

        Raises:
            ChunkInvalidError: the bytes do not decrypt or decompress.
        """
        layer = self.unseal(stored, chunk_id)
        return decompress(layer, chunk_id, limit) if self.compressed else bytes(layer)

    def iter_decode(self, stored: bytes | bytearray | memoryview, chunk_id: bytes,
                    limit: int | None = None) -> Iterator[bytes | bytearray | memoryview]:
        """Stored bytes -> plain data in pieces (see :func:`iter_decompress`), so that
        ``verify`` hashes a chunk file of any size in bounded memory."""
        layer = self.unseal(stored, chunk_id)
        if self.compressed:
            yield from iter_decompress(layer, chunk_id, limit)
        else:
            yield layer

    def unseal(self, stored: bytes | bytearray | memoryview,
               chunk_id: bytes) -> bytes | bytearray | memoryview:
        """Stored bytes -> the compression layer's bytes (decrypted; unchanged for
        plain codecs). Fast paths that decode zstd themselves must call this first.

        Raises:
            ChunkInvalidError: the bytes do not decrypt (wrong key, tampered, truncated).
        """
        return stored if self.cipher is None else self.cipher.open(stored, chunk_id)

    def seal(self, layer: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """The compression layer's bytes -> stored bytes (encrypted if configured)."""
        return layer if self.cipher is None else self.cipher.seal(layer)


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

    def data(self, limit: int | None = None) -> bytes | bytearray | memoryview:
        """The plain chunk data (decoded on first use, at most ``limit`` bytes: readers
        that know the size from an index bound the work by it).

        Raises:
            ChunkInvalidError: the stored bytes cannot be decoded (or exceed ``limit``).
        """
        if self._data is None:
            assert self._encoded is not None
            assert self._codec is not None
            self._data = self._codec.decode(self._encoded, self.id, limit)
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
        codec = self._codec
        if self._data is None and codec is not None and codec.compressed:
            assert self._encoded is not None
            # An encrypted chunk is decrypted first (once); its zstd layer is then
            # decoded in place.
            layer = codec.unseal(self._encoded, self.id)
            if bytes(layer[:4]) == ZSTD_MAGIC:
                try:
                    return zstd.decompress_into(layer, out, capacity)  # type: ignore[arg-type]
                except zstd.ZstdDecodeError as exc:
                    if "too small" in str(exc):  # libzstd: "Destination buffer is too small"
                        raise ChunkInvalidError(self.id, cause=f"decompresses to more than "
                                                f"{capacity - 1} bytes") from exc
                    raise ChunkInvalidError(self.id, cause=str(exc)) from exc
            # xz, gzip (or not compressed at all), bounded like the zstd case
            self._data = decompress(layer, self.id, capacity - 1)
        data = self.data()
        n = len(data)
        if n > capacity:
            raise ChunkInvalidError(self.id, cause=f"decompresses to more than "
                                    f"{capacity - 1} bytes")
        out[:n] = data
        return n

    def encoded(self, codec: ChunkCodec) -> bytes | bytearray | memoryview:
        """The chunk in ``codec``'s encoding, reusing stored bytes when they match.

        When only the encryption layer differs (a plain compressed store served
        encrypted, a chunk copied between stores under different keys), just that layer
        is removed and applied: the chunk is not decompressed and recompressed.

        Raises:
            ChunkInvalidError: the stored bytes do not decrypt.
        """
        own = self._codec
        if self._encoded is not None and own is not None:
            if own == codec:
                return self._encoded
            if own.compressed == codec.compressed:
                return codec.seal(own.unseal(self._encoded, self.id))
        return codec.encode(self.data())

    def verify(self, digest: Digest) -> None:
        """Check that the data hashes to the id, decoding stored bytes piece by piece
        (``verify`` checks chunk files of any size in bounded memory).

        Raises:
            ChunkInvalidError: it does not (or cannot be decoded).
        """
        if self._data is not None or self._codec is None or self._encoded is None:
            actual = digest.sum(self.data())
        else:
            hasher = digest.new()
            for piece in self._codec.iter_decode(self._encoded, self.id):
                hasher.update(piece)
            actual = hasher.digest()
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
    "iter_decompress",
]
