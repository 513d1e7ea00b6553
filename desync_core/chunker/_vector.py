"""A chunker in vectorised numpy: casync's boundaries without compiling anything.

Why: the numba kernel (:mod:`desync_core.chunker._numba`) must be compiled once per
installation and CPU (seconds), which dominates the first ``desync make`` of a small
file. This chunker needs only numpy, so small inputs are chunked at once while the
compiled kernel is missing (see :mod:`desync_core.chunker`'s kernel choice).

How: a chunk boundary depends only on the hash of the 48 bytes before it (buzhash
has no other state, ``chunking.md`` §3), so the positions where the hash test
``h % d == d - 1`` holds can be computed for the whole buffer at once, and the chunks
then follow from them and the min/max rules with a handful of Python steps per chunk.
The window hashes are built by doubling: with ``H_k[j]`` the hash of the ``k`` bytes
from ``j`` (``XOR_i rol(T[b[j+i]], k-1-i)``), ``H_2k[j] = rol(H_k[j], k) ^ H_k[j+k]``
and ``H_48`` from three ``H_16``: a few passes over the data instead of 48.
About 10x slower than the compiled kernel, but ready in milliseconds.
"""

from __future__ import annotations

import numpy as np

from desync_core.chunker._table import BUZHASH_TABLE
from desync_core.chunker.params import WINDOW_SIZE, ChunkerParams, lemire_multiplier

_T = np.array(BUZHASH_TABLE, dtype=np.uint32)
#: Bytes hashed per step: the temporaries (a few uint32 arrays of this length) stay
#: in the L2 cache and memory stays bounded for any input.
BLOCK = 64 * 1024


def window_hashes(data: np.ndarray) -> np.ndarray:
    """``h[j]`` = buzhash of ``data[j : j + 48]``, for every ``j`` (``len(data) - 47``
    values; ``data`` must hold at least 48 bytes)."""
    h = np.take(_T, data)  # H_1
    for k in (1, 2, 4, 8):  # H_2k[j] = rol(H_k[j], k) ^ H_k[j + k]
        a = h[:-k]
        t = a << np.uint32(k)
        t |= a >> np.uint32(32 - k)
        t ^= h[k:]
        h = t
    # H_48[j] = rol(H_16[j], 32) ^ rol(H_16[j + 16], 16) ^ H_16[j + 32]; rol by 32 is
    # the identity.
    mid = h[16:-16]
    out = mid << np.uint32(16)
    out |= mid >> np.uint32(16)
    out ^= h[:-32]
    out ^= h[32:]
    return out


def cut_positions(data: np.ndarray, d: int, start: int = WINDOW_SIZE) -> np.ndarray:
    """Offsets ``c >= start`` (int64, ascending) at which the 48 bytes before ``c`` hash
    to ``h % d == d - 1``: the places where the hash test allows a cut."""
    n = len(data)
    pieces = []
    first = max(start, WINDOW_SIZE)
    # h % d == d - 1 without a division (see params.lemire_multiplier); numpy's uint64
    # multiplication wraps modulo 2^64 as the test needs.
    mult = lemire_multiplier(d)
    m = np.uint64(mult)
    thr = np.uint64(((1 << 64) - mult) & ((1 << 64) - 1))
    for lo in range(first, n + 1, BLOCK):
        hi = min(lo + BLOCK, n + 1)  # window ends lo .. hi-1
        h = window_hashes(data[lo - WINDOW_SIZE : hi - 1]).astype(np.uint64)
        h *= m
        hit = np.flatnonzero(h >= thr)
        if len(hit):
            pieces.append(hit + lo)
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)


def find_cuts(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
    """Chunk end offsets of ``buf[:n]`` (which starts at a chunk boundary), exactly as
    :func:`desync_core.chunker.find_cuts` computes them (same ``eof`` semantics)."""
    mx = params.max
    if params.fixed_size:
        full = n // mx
        ends = np.arange(1, full + 1, dtype=np.int64) * mx
        if eof and n > full * mx:
            ends = np.append(ends, np.int64(n))
        return ends
    l0 = max(params.min, WINDOW_SIZE)
    if n <= l0:
        return np.array([n] if eof and n else [], dtype=np.int64)
    hits = cut_positions(buf[:n], params.discriminator, l0).tolist()
    cuts: list[int] = []
    s = 0
    i = 0
    count = len(hits)
    while n - s > l0:
        lo = s + l0
        # A cut at max, or after 48 bytes when max is smaller (chunking.md §5 step 2).
        hi = max(s + mx, lo)
        while i < count and hits[i] < lo:
            i += 1
        if i < count and hits[i] <= min(hi, n):
            s = hits[i]
        elif hi <= n:
            s = hi
        elif eof:
            s = n
        else:
            return np.array(cuts, dtype=np.int64)  # the last chunk may still grow
        cuts.append(s)
    if eof and s < n:
        cuts.append(n)
    return np.array(cuts, dtype=np.int64)


__all__ = ["BLOCK", "cut_positions", "find_cuts", "window_hashes"]
