"""Chunks and their storage encodings (``store.md`` §2.1).

A :class:`Chunk` holds plain data, encoded (stored) bytes, or both, and converts
lazily: a chunk read from a compressed store and served by a compressed chunk-server
is never decompressed and recompressed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import lzma
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

from desync_core.digest import Digest
from desync_core.errors import ChunkInvalidError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
COMPRESSED_EXTENSION = ".cacnk"

_local = threading.local()

#: zstd level casync uses.
ZSTD_LEVEL = 3


class _Buffer(ctypes.Structure):
    """``ZSTD_inBuffer`` / ``ZSTD_outBuffer`` (same layout)."""

    _fields_ = [("dst", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


def _load_libzstd() -> ctypes.CDLL | None:
    """The system libzstd (the one casync links), or None if it is not installed."""
    name = ctypes.util.find_library("zstd")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        sz, ptr, buf = ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(_Buffer)
        for fn, restype, argtypes in (
            ("ZSTD_versionNumber", ctypes.c_uint, []),
            ("ZSTD_createCStream", ptr, []),
            ("ZSTD_freeCStream", sz, [ptr]),
            ("ZSTD_initCStream", sz, [ptr, ctypes.c_int]),
            ("ZSTD_compressStream", sz, [ptr, buf, buf]),
            ("ZSTD_endStream", sz, [ptr, buf]),
            ("ZSTD_compressBound", sz, [sz]),
            ("ZSTD_isError", ctypes.c_uint, [sz]),
            ("ZSTD_getErrorName", ctypes.c_char_p, [sz]),
        ):
            f = getattr(lib, fn)
            f.restype, f.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


_LIBZSTD = _load_libzstd()


class _SystemZstdStream:
    """One ``ZSTD_CStream`` of the system libzstd, used exactly as casync uses it.

    casync compresses through the streaming API without announcing the input size:
    ``ZSTD_initCStream(level 3)``, ``ZSTD_compressStream``, ``ZSTD_endStream``. The
    frame then has no content size and no checksum, its window descriptor is the
    level's default, and the blocks depend on the library version. Using the same
    library the same way makes our chunk files byte-identical to casync's.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.stream = lib.ZSTD_createCStream()
        if not self.stream:
            raise MemoryError("ZSTD_createCStream failed")

    def __del__(self) -> None:
        if getattr(self, "stream", None):
            self.lib.ZSTD_freeCStream(self.stream)
            self.stream = None

    def _check(self, code: int) -> int:
        if self.lib.ZSTD_isError(code):
            raise zstandard.ZstdError(self.lib.ZSTD_getErrorName(code).decode())
        return code

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        lib = self.lib
        view = memoryview(data).cast("B")
        n = view.nbytes
        # Read the input in place when it is writable (chunkfile's read buffer),
        # otherwise take one copy; either way ``src`` keeps the memory alive.
        src: Any = (ctypes.c_char * n).from_buffer(view) if n and not view.readonly \
            else ctypes.create_string_buffer(view.tobytes(), n or 1)
        cap = lib.ZSTD_compressBound(n) + 64
        dst = ctypes.create_string_buffer(cap)
        inb = _Buffer(ctypes.addressof(src), n, 0)
        outb = _Buffer(ctypes.addressof(dst), cap, 0)
        parts: list[bytes] = []

        def drain() -> None:
            # The output buffer is full: keep what it holds and start over.
            parts.append(ctypes.string_at(dst, outb.pos))
            outb.pos = 0

        self._check(lib.ZSTD_initCStream(self.stream, ZSTD_LEVEL))
        while inb.pos < inb.size:
            self._check(lib.ZSTD_compressStream(self.stream, ctypes.byref(outb),
                                                ctypes.byref(inb)))
            if outb.pos == outb.size:
                drain()
        while self._check(lib.ZSTD_endStream(self.stream, ctypes.byref(outb))):
            drain()
        parts.append(ctypes.string_at(dst, outb.pos))
        del src  # release the export of ``data`` before returning
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _BundledZstdStream:
    """Fallback without a system libzstd: python-zstandard's bundled library, used the
    same streaming way (identical bytes when its zstd version equals casync's)."""

    def __init__(self) -> None:
        self.ctx = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=False, write_content_size=False
        )

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        obj = self.ctx.compressobj()
        return obj.compress(data) + obj.flush()


#: Which zstd library compresses chunks: ``"system <version>"`` or ``"bundled <version>"``.
ZSTD_BACKEND = (
    f"system {_LIBZSTD.ZSTD_versionNumber()}" if _LIBZSTD is not None
    else "bundled " + ".".join(map(str, zstandard.ZSTD_VERSION))
)


def _compressor() -> _SystemZstdStream | _BundledZstdStream:
    # Compression contexts are not thread-safe; keep one per thread.
    c = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = (
            _SystemZstdStream(_LIBZSTD) if _LIBZSTD is not None else _BundledZstdStream()
        )
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | bytearray | memoryview) -> bytes:
    """zstd-compress chunk data exactly like casync (level 3, streamed without a
    content size, no checksum); byte-identical to casync's ``.cacnk`` files."""
    return _compressor().compress(data)


def decompress(stored: bytes | bytearray | memoryview, chunk_id: bytes) -> bytes:
    """Decompress a stored chunk; zstd (any frame form), xz and gzip are accepted.

    Raises:
        ChunkInvalidError: the data is not a complete compressed stream, or it would
            inflate beyond :data:`MAX_CHUNK_SIZE`.
    """
    head = bytes(stored[:6])
    try:
        if head.startswith(ZSTD_MAGIC):
            return _inflate(stored, _decompressor().decompressobj)
        if head.startswith(XZ_MAGIC):
            return _inflate(stored, lzma.LZMADecompressor)
        if head.startswith(GZIP_MAGIC):
            return _inflate(stored, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))
    except (zstandard.ZstdError, lzma.LZMAError, zlib.error, ValueError, EOFError) as exc:
        raise ChunkInvalidError(chunk_id, cause=str(exc) or type(exc).__name__) from exc
    raise ChunkInvalidError(chunk_id, cause="unknown compression format")


#: No valid chunk is larger (casync's CA_CHUNK_SIZE_LIMIT_MAX). A stored chunk that
#: inflates beyond it is invalid; decoding stops there instead of exhausting memory.
MAX_CHUNK_SIZE = 128 * 1024 * 1024
#: Compressed bytes handed to a decoder at a time. A few bytes of zstd can expand to a
#: whole 128 KiB block, so the size limit is checked between small feeds (a 1 KiB feed
#: yields at most ~32 MiB); the cost is negligible next to decompression itself.
_FEED = 1024


def _inflate(stored: bytes | bytearray | memoryview, new_decoder: Callable[[], Any],
             limit: int = MAX_CHUNK_SIZE) -> bytes:
    """Decode one or more concatenated frames/streams with bounded output.

    ``new_decoder`` makes a decoder with ``decompress``, ``eof`` and ``unused_data``
    (zstandard's decompressobj, ``lzma.LZMADecompressor``, ``zlib.decompressobj``).
    """
    view = memoryview(stored).cast("B")
    size = len(view)
    parts: list[bytes] = []
    total = pos = 0
    while True:  # one frame (stream) per round
        decoder = new_decoder()
        while not decoder.eof and pos < size:
            end = min(pos + _FEED, size)
            piece = decoder.decompress(view[pos:end])
            pos = end
            total += len(piece)
            if total > limit:
                raise ValueError(f"decompresses to more than {limit} bytes")
            parts.append(piece)
        if not decoder.eof:
            raise EOFError("truncated compressed data")
        pos -= len(decoder.unused_data)  # the next frame starts there
        if pos >= size:
            return parts[0] if len(parts) == 1 else b"".join(parts)


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
