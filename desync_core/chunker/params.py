"""Chunker parameters, their validation and casync's discriminator (``chunking.md`` §1, §4)."""

from __future__ import annotations

from dataclasses import dataclass

from desync_core.errors import UsageError

WINDOW_SIZE = 48
#: casync's CA_CHUNK_SIZE_LIMIT_MAX.
CHUNK_SIZE_LIMIT_MAX = 128 * 1024 * 1024
#: Above this average the discriminator formula's denominator reaches zero.
AVG_LIMIT = 9324556


def discriminator(avg: int) -> int:
    """casync's discriminator for an average size, before clamping (IEEE double math)."""
    return int(avg / (-1.42888852e-7 * avg + 1.33237515))


def lemire_multiplier(d: int) -> int:
    """``ceil(2^64 / d)`` modulo ``2^64``, for the kernel's division-free test of ``h % d``.

    ``h % d == d - 1`` holds exactly when ``h * M mod 2^64 >= 2^64 - M`` (Lemire's
    divisibility test applied to ``h + 1``), for every 32-bit ``h`` and ``d < 2^32``.
    For ``d = 1`` the multiplier wraps to 0 and the test is always true, as it should be.
    """
    return (((1 << 64) - 1) // d + 1) & ((1 << 64) - 1)


@dataclass(frozen=True)
class ChunkerParams:
    """Chunk size limits in bytes. Defaults are desync's 16:64:256 KiB."""

    min: int = 16 * 1024
    avg: int = 64 * 1024
    max: int = 256 * 1024

    def __post_init__(self) -> None:
        mn, avg, mx = self.min, self.avg, self.max
        if mn < 1 or avg < 1 or mx < 1:
            raise UsageError("chunk sizes must be positive")
        if mn > avg:
            raise UsageError(f"min chunk size ({mn}) is larger than the average ({avg})")
        if avg > mx:
            raise UsageError(f"average chunk size ({avg}) is larger than the maximum ({mx})")
        if mx > CHUNK_SIZE_LIMIT_MAX:
            raise UsageError(
                f"max chunk size ({mx}) exceeds the limit of {CHUNK_SIZE_LIMIT_MAX} bytes"
            )
        if avg >= AVG_LIMIT:
            raise UsageError(
                f"average chunk size ({avg}) is too large for the buzhash discriminator "
                f"(must be below {AVG_LIMIT} bytes)"
            )

    @property
    def discriminator(self) -> int:
        """The discriminator ``d`` after casync's clamp into ``[min, max]``."""
        return min(max(discriminator(self.avg), self.min), self.max)

    @property
    def fixed_size(self) -> bool:
        """``min == avg == max``: every chunk is ``avg`` bytes, no hashing."""
        return self.min == self.avg == self.max

    @property
    def longest_chunk(self) -> int:
        """The longest possible chunk: ``max``, or 48 bytes if ``max`` is smaller.

        Outside the fixed-size case the first boundary test is at 48 bytes and a chunk
        is cut there at the latest (``chunking.md`` §5, step 2).
        """
        return self.max if self.fixed_size else max(self.max, WINDOW_SIZE)

    @property
    def zero_runs_never_cut(self) -> bool:
        """True if an all-zero window is never a boundary (so zero runs give max chunks)."""
        return (0x9E489E48 + 1) % self.discriminator != 0

    @classmethod
    def from_kib(cls, spec: str) -> ChunkerParams:
        """Parse desync's ``-m MIN:AVG:MAX`` (KiB)."""
        parts = spec.split(":")
        if len(parts) != 3:
            raise UsageError(f"invalid chunk size {spec!r}: expected MIN:AVG:MAX in KiB")
        try:
            mn, avg, mx = (int(p, 10) * 1024 for p in parts)
        except ValueError:
            raise UsageError(f"invalid chunk size {spec!r}: expected MIN:AVG:MAX in KiB") from None
        if mn < WINDOW_SIZE:
            raise UsageError(
                f"min chunk size too small in {spec!r}, must be at least {WINDOW_SIZE} bytes"
            )
        return cls(mn, avg, mx)

    def as_kib(self) -> str:
        """The ``MIN:AVG:MAX`` form (in KiB when exact, else bytes with a ``B`` suffix)."""
        if all(v % 1024 == 0 for v in (self.min, self.avg, self.max)):
            return f"{self.min // 1024}:{self.avg // 1024}:{self.max // 1024}"
        return f"{self.min}B:{self.avg}B:{self.max}B"


DEFAULT_PARAMS = ChunkerParams()

__all__ = [
    "AVG_LIMIT",
    "DEFAULT_PARAMS",
    "WINDOW_SIZE",
    "ChunkerParams",
    "discriminator",
    "lemire_multiplier",
]
