"""What a ``-w`` chunk server accepts as an upload (#19.4), besides the body size and
memory budget enforced in :mod:`desync_store_http.uploads`.

* Decoding an upload stops at :data:`MAX_CHUNK_SIZE` (no valid chunk is larger), and
  is done piece by piece to hash it, so a 66 KB zstd bomb costs ~1 MiB, not 128.
* A compressed store's chunks are zstd: a gzip or xz body (which the core's decoder
  would accept) is refused with 415 rather than stored under a ``.cacnk`` name.
"""

from __future__ import annotations

from typing import Any

from desync_core.plugin_api import Chunk, ChunkCodec, ChunkInvalidError

#: The largest plain chunk (casync's CA_CHUNK_SIZE_LIMIT_MAX, 128 MiB).
MAX_CHUNK_SIZE = 128 * 1024 * 1024
#: Compression formats the core's decoder accepts that no store writes.
FOREIGN_MAGICS = (b"\xfd7zXZ\x00", b"\x1f\x8b")  # xz, gzip


def wire_encoding_ok(codec: ChunkCodec, chunk: Chunk) -> bool:
    """False for an upload in an encoding the store does not use (gzip or xz where the
    wire format is zstd). Garbage, and bytes that do not decrypt, pass here: the
    verification rejects them as invalid chunks (400)."""
    if not codec.compressed:
        return True
    try:
        layer = codec.unseal(chunk.encoded(codec), chunk.id)
    except ChunkInvalidError:
        return True
    return not bytes(layer[:6]).startswith(FOREIGN_MAGICS)


def converts(store: Any, codec: ChunkCodec) -> bool:
    """Whether storing a chunk received as ``codec`` makes ``store`` decode it whole
    (its own codec differs, or cannot be found through the wrappers)."""
    for _ in range(8):
        own = getattr(store, "codec", None)
        if isinstance(own, ChunkCodec):
            return own.compressed != codec.compressed
        store = getattr(store, "inner", None)
        if store is None:
            break
    return True


__all__ = ["MAX_CHUNK_SIZE", "converts", "wire_encoding_ok"]
