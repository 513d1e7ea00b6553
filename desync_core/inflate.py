"""Bounded decoding of concatenated compressed frames (xz, gzip, zstd fallback).

Chunk files name no size, and a few bytes of compressed data can expand to a large
block, so decoders are fed a little input at a time and the output is checked against a
limit between feeds; a truncated stream is an error, never a short result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: Compressed bytes handed to a decoder at a time.
FEED = 1024


def inflate_bounded(stored: bytes | bytearray | memoryview, new_decoder: Callable[[], Any],
                    limit: int, *, feed: int = FEED) -> bytes:
    """Decode one or more concatenated frames/streams, at most ``limit`` bytes of output.

    ``new_decoder`` makes a decoder with ``decompress``, ``eof`` and ``unused_data``
    (``lzma.LZMADecompressor``, ``zlib.decompressobj``, zstandard's decompressobj).

    Raises:
        ValueError: more than ``limit`` bytes of output.
        EOFError: the last frame is incomplete.
    """
    parts = list(iter_inflate(stored, new_decoder, limit, feed=feed))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def iter_inflate(stored: bytes | bytearray | memoryview, new_decoder: Callable[[], Any],
                 limit: int, *, feed: int = FEED) -> Iterator[bytes]:
    """:func:`inflate_bounded`'s output in pieces, as they are decoded (a consumer
    that hashes them needs no memory for the whole)."""
    view = memoryview(stored).cast("B")
    size = len(view)
    total = pos = 0
    while True:  # one frame (stream) per round
        decoder = new_decoder()
        while not decoder.eof and pos < size:
            end = min(pos + feed, size)
            piece = decoder.decompress(view[pos:end])
            pos = end
            total += len(piece)
            if total > limit:
                raise ValueError(f"decompresses to more than {limit} bytes")
            if piece:
                yield piece
        if not decoder.eof:
            raise EOFError("truncated compressed data")
        pos -= len(decoder.unused_data)  # the next frame starts there
        if pos >= size:
            if not total:
                yield b""
            return


__all__ = ["FEED", "inflate_bounded", "iter_inflate"]
