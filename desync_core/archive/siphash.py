"""SipHash-2-4 with casync's GOODBYE key (``catar.md`` §5.1).

Python has no SipHash with a caller-chosen key, so this is a small implementation of
the reference algorithm (64-bit output). Names of a directory are hashed together:
one at a time in Python for small directories, vectorised over all names with numpy
for large ones (about 25x faster per name there, but with a fixed cost per call).
"""

from __future__ import annotations

from collections.abc import Sequence

#: casync's CA_FORMAT_GOODBYE_HASH_KEY as two little-endian u64.
GOODBYE_KEY = (0x8574442B0F1D84B3, 0x2736ED30D1C22EC1)
_M = 0xFFFFFFFFFFFFFFFF
#: Directories with at least this many entries are hashed with numpy.
_VECTOR_THRESHOLD = 24


def siphash24(data: bytes, key: tuple[int, int] = GOODBYE_KEY) -> int:
    """SipHash-2-4 of ``data`` under the 128-bit ``key`` ``(k0, k1)``."""
    k0, k1 = key
    m_ = _M
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(data)
    full = n & ~7
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, full, 8)]
    words.append(((n & 0xFF) << 56) | int.from_bytes(data[full:], "little"))
    # Each step: v3 ^= a word, v2 ^= x, that many SipRounds, v0 ^= the word. Two rounds
    # per message word, then the four finalisation rounds after v2 ^= 0xff.
    steps = [(w, 0, (0, 1), w) for w in words]
    steps.append((0, 0xFF, (0, 1, 2, 3), 0))
    for word, x2, rounds, x0 in steps:
        v3 ^= word
        v2 ^= x2
        for _ in rounds:  # a SipRound, inlined (this is the hot loop)
            v0 = (v0 + v1) & m_
            v1 = (((v1 << 13) & m_) | (v1 >> 51)) ^ v0
            v0 = ((v0 << 32) & m_) | (v0 >> 32)
            v2 = (v2 + v3) & m_
            v3 = (((v3 << 16) & m_) | (v3 >> 48)) ^ v2
            v0 = (v0 + v3) & m_
            v3 = (((v3 << 21) & m_) | (v3 >> 43)) ^ v0
            v2 = (v2 + v1) & m_
            v1 = (((v1 << 17) & m_) | (v1 >> 47)) ^ v2
            v2 = ((v2 << 32) & m_) | (v2 >> 32)
        v0 ^= x0
    return v0 ^ v1 ^ v2 ^ v3


def name_hashes(names: Sequence[bytes]) -> list[int]:
    """The GOODBYE hash of every name, in order."""
    if len(names) < _VECTOR_THRESHOLD:
        return [siphash24(name) for name in names]
    return _vector_hashes(names)


def _vector_hashes(names: Sequence[bytes]) -> list[int]:
    """SipHash-2-4 of many names at once: one numpy lane per name."""
    import numpy as np

    n = len(names)
    lens = np.fromiter(map(len, names), dtype=np.int64, count=n)
    blocks = lens // 8 + 1  # the last block holds the tail and the length byte
    width = int(blocks.max())
    buf = np.zeros((n, width * 8), dtype=np.uint8)
    flat = np.frombuffer(b"".join(names), dtype=np.uint8)
    if len(flat):
        rows = np.repeat(np.arange(n), lens)
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        buf[rows, np.arange(len(flat)) - starts] = flat
    buf[np.arange(n), blocks * 8 - 1] = (lens & 0xFF).astype(np.uint8)
    words = buf.view("<u8")
    k0, k1 = (np.uint64(k) for k in GOODBYE_KEY)
    s = [np.uint64(x) for x in (13, 51, 32, 16, 48, 21, 43, 17, 47)]

    def rounds(v0, v1, v2, v3, count):  # type: ignore[no-untyped-def]
        for _ in range(count):
            v0 = v0 + v1
            v1 = ((v1 << s[0]) | (v1 >> s[1])) ^ v0
            v0 = (v0 << s[2]) | (v0 >> s[2])
            v2 = v2 + v3
            v3 = ((v3 << s[3]) | (v3 >> s[4])) ^ v2
            v0 = v0 + v3
            v3 = ((v3 << s[5]) | (v3 >> s[6])) ^ v0
            v2 = v2 + v1
            v1 = ((v1 << s[7]) | (v1 >> s[8])) ^ v2
            v2 = (v2 << s[2]) | (v2 >> s[2])
        return v0, v1, v2, v3

    with np.errstate(over="ignore"):
        v0 = np.full(n, k0 ^ np.uint64(0x736F6D6570736575), dtype=np.uint64)
        v1 = np.full(n, k1 ^ np.uint64(0x646F72616E646F6D), dtype=np.uint64)
        v2 = np.full(n, k0 ^ np.uint64(0x6C7967656E657261), dtype=np.uint64)
        v3 = np.full(n, k1 ^ np.uint64(0x7465646279746573), dtype=np.uint64)
        for j in range(width):
            m = words[:, j]
            a0, a1, a2, a3 = rounds(v0, v1, v2, v3 ^ m, 2)
            a0 = a0 ^ m
            live = blocks > j  # lanes whose name still has a block here
            if live.all():
                v0, v1, v2, v3 = a0, a1, a2, a3
            else:
                v0 = np.where(live, a0, v0)
                v1 = np.where(live, a1, v1)
                v2 = np.where(live, a2, v2)
                v3 = np.where(live, a3, v3)
        v2 = v2 ^ np.uint64(0xFF)
        v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 4)
        return (v0 ^ v1 ^ v2 ^ v3).tolist()  # type: ignore[no-any-return]


__all__ = ["GOODBYE_KEY", "name_hashes", "siphash24"]
