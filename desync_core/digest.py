"""Chunk digests: SHA-512/256 (default) and SHA-256, and the index flag that selects them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from desync_core.errors import UsageError

#: Feature-flag bit of an index/ENTRY: set = SHA-512/256 chunk ids, clear = SHA-256.
FLAG_SHA512_256 = 0x2000000000000000

ChunkId = bytes
"""A chunk id: the 32-byte digest of the chunk's uncompressed data."""


@dataclass(frozen=True)
class Digest:
    """A chunk digest algorithm."""

    name: str
    hashlib_name: str
    flag: int

    def new(self) -> hashlib._Hash:
        """A fresh hash object."""
        return hashlib.new(self.hashlib_name)

    @property
    def sum(self) -> Callable[[bytes | bytearray | memoryview], bytes]:
        """A fast ``data -> 32-byte digest`` function."""
        return _summer(self.hashlib_name)

    def null_chunk_id(self, size: int) -> bytes:
        """Id of a chunk of ``size`` zero bytes (the "null chunk" for that max size)."""
        return _null_id(self.hashlib_name, size)


@cache
def _summer(name: str) -> Callable[[bytes | bytearray | memoryview], bytes]:
    new = hashlib.new

    def summer(data: bytes | bytearray | memoryview) -> bytes:
        return new(name, data).digest()

    return summer


@cache
def _null_id(name: str, size: int) -> bytes:
    return hashlib.new(name, bytes(size)).digest()


SHA512_256 = Digest("sha512-256", "sha512_256", FLAG_SHA512_256)
SHA256 = Digest("sha256", "sha256", 0)
DIGESTS = {d.name: d for d in (SHA512_256, SHA256)}
DEFAULT_DIGEST = SHA512_256


def get_digest(name: str) -> Digest:
    """The digest called ``name`` (``sha512-256`` or ``sha256``)."""
    try:
        return DIGESTS[name]
    except KeyError:
        raise UsageError(f"invalid digest algorithm '{name}'") from None


def digest_for_flags(flags: int) -> Digest:
    """The digest an index or archive with these feature flags uses."""
    return SHA512_256 if flags & FLAG_SHA512_256 else SHA256


def parse_chunk_id(text: str) -> bytes:
    """Parse 64 hex digits into a chunk id (either case accepted, like desync)."""
    text = text.strip()
    if len(text) != 64:
        raise UsageError(f"invalid chunk id {text!r}: expected 64 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"invalid chunk id {text!r}: not hexadecimal") from None


__all__ = [
    "DEFAULT_DIGEST",
    "DIGESTS",
    "FLAG_SHA512_256",
    "SHA256",
    "SHA512_256",
    "ChunkId",
    "Digest",
    "digest_for_flags",
    "get_digest",
    "parse_chunk_id",
]
