"""Pure-Python reference chunker, written straight from ``chunking.md`` §5.

It is slow and exists to cross-check the numba kernel on many random inputs, and as the
``DESYNC_CHUNKER_KERNEL=python`` fallback.
"""

from __future__ import annotations

from desync_core.chunker._table import BUZHASH_TABLE
from desync_core.chunker.params import WINDOW_SIZE, ChunkerParams

_MASK = 0xFFFFFFFF


def rol32(x: int, n: int) -> int:
    """32-bit left rotation by ``n mod 32``."""
    n %= 32
    return ((x << n) | (x >> (32 - n))) & _MASK if n else x


def window_hash(window: bytes) -> int:
    """buzhash of a 48-byte window."""
    h = 0
    for i, b in enumerate(window):
        h ^= rol32(BUZHASH_TABLE[b], WINDOW_SIZE - 1 - i)
    return h


def find_cuts(data: bytes, params: ChunkerParams, *, eof: bool = True) -> list[int]:
    """End offsets of the chunks of ``data`` (which starts at a chunk boundary).

    With ``eof=False`` the trailing bytes that could still grow into a longer chunk are
    not cut; the caller resumes at the last returned offset with more data.
    """
    mn, avg, mx = params.min, params.avg, params.max
    d = params.discriminator
    n = len(data)
    cuts: list[int] = []
    s = 0
    l0 = max(mn, WINDOW_SIZE)
    while s < n:
        remaining = n - s
        if params.fixed_size:
            if remaining < avg and not eof:
                break
            s += min(avg, remaining)
            cuts.append(s)
            continue
        if remaining <= l0:
            if eof:
                cuts.append(n)
            break
        h = window_hash(data[s + l0 - WINDOW_SIZE : s + l0])
        cand = s + l0
        while True:
            if cand - s >= mx or h % d == d - 1:
                break
            if cand + 1 > n:
                if not eof:
                    return cuts
                break
            out, inp = data[cand - WINDOW_SIZE], data[cand]
            h = rol32(h, 1) ^ rol32(BUZHASH_TABLE[out], WINDOW_SIZE) ^ BUZHASH_TABLE[inp]
            cand += 1
        cuts.append(cand)
        s = cand
    return cuts


__all__ = ["find_cuts", "rol32", "window_hash"]
