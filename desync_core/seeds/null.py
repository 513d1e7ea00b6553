"""The null seed: runs of all-zero chunks, written without reading anything (§2.2).

A null chunk is ``chunk_size_max`` zero bytes (its id is fixed for a given max and
digest). Nothing is ever fetched for it:

* on a blank target (new or empty file) the range is left alone and stays a hole, so
  zero runs end up sparse;
* on a regular file with old content the range is turned into a hole
  (``fallocate(PUNCH_HOLE)``), or zeros are written where the filesystem cannot;
* on a block device zeros are written where the device does not already read zero.

desync clones zero blocks from a temporary file when reflinks work; holes are better
still (no extents at all), so this implementation never needs that file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from desync_core.errors import UsageError
from desync_core.seeds.base import (
    Matcher,
    Seed,
    SeedSegment,
    SeedType,
    SegmentResult,
    Warn,
    WriteTarget,
)
from desync_core.seeds.extents import punch_hole, zero_range

if TYPE_CHECKING:
    from desync_core.index import Index


def null_mask(index: Index) -> np.ndarray:
    """bool array: which chunks of ``index`` are the null chunk."""
    n = len(index)
    if n == 0:
        return np.zeros(0, dtype=bool)
    null_id = index.digest.null_chunk_id(index.chunk_size_max)
    words = np.frombuffer(index.ids, dtype="<u8").reshape(n, 4)
    return np.asarray((words == np.frombuffer(null_id, dtype="<u8")).all(axis=1))


class NullMatcher(Matcher):
    """Matches every run of consecutive null chunks, whole (no cap: it costs no I/O)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.candidates = mask
        n = len(mask)
        positions = np.arange(n)
        # Index of the first non-null chunk at or after each position.
        next_other = np.minimum.accumulate(np.where(mask, n, positions)[::-1])[::-1]
        self.run = next_other - positions

    def longest(self, i: int, cap: int | None) -> tuple[int, int]:
        return int(self.run[i]), -1


class NullSeed(Seed):
    """Always the first seed; provides null chunks."""

    kind = "null"
    fork_safe = True
    needs_validation = False

    def __init__(self) -> None:
        self.name = "null chunks"
        self.valid = True

    def matcher(self, target: Index, null_mask: np.ndarray) -> Matcher:
        return NullMatcher(null_mask)

    def write_segment(self, segment: SeedSegment, target: WriteTarget) -> SegmentResult:
        """Leave holes (blank target), punch holes, or write zeros (devices)."""
        result = SegmentResult()
        if target.blank:
            return result
        if not target.device and punch_hole(target.fd, segment.start, segment.size):
            return result
        result.moved.copied = zero_range(target.fd, segment.start, segment.size)
        return result


class NullSeedType(SeedType):
    """The null seed's registry entry: always used, first; not given with ``--seed``."""

    name = "null"
    user_selectable = False

    def open(self, ctx: Any, spec: str, *, target: Index, warn: Warn) -> list[Seed]:
        raise UsageError("the null seed is always used; it cannot be given with --seed")


__all__ = ["NullMatcher", "NullSeed", "NullSeedType", "null_mask"]
