"""The self-seed: the target itself, for chunks that occur more than once (§2.3).

Once a chunk has been written (and verified on its way in), a later occurrence of the
same id is copied (or cloned) from the first one instead of being fetched again.
desync only uses the contiguous prefix of the target written so far; any chunk already
complete is as good, so this tracks completion per chunk and finds more copies.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from desync_core.errors import UsageError
from desync_core.seeds.base import Seed, SeedType, Warn
from desync_core.seeds.extents import Moved, clone_or_copy
from desync_core.seeds.indexed import id_keys

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.seeds.base import WriteTarget


def earlier_copies(index: Index) -> np.ndarray:
    """int64 array: for each chunk, the first earlier chunk with the same id, or -1."""
    n = len(index)
    dup_of = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dup_of
    keys = id_keys(index.ids)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts_group = np.ones(n, dtype=bool)
    starts_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_head = np.maximum.accumulate(np.where(starts_group, np.arange(n), 0))
    dup_of[order] = order[group_head]
    positions = np.arange(n)
    dup_of[dup_of == positions] = -1
    # Keys are the ids' first 8 bytes: confirm the full ids (a collision is harmless,
    # the chunk is then simply fetched).
    cand = np.flatnonzero(dup_of >= 0)
    if len(cand):
        rows = np.frombuffer(index.ids, dtype=np.uint8).reshape(n, 32)
        same = (rows[cand] == rows[dup_of[cand]]).all(axis=1)
        dup_of[cand[~same]] = -1
    return dup_of


class SelfSeed:
    """Tracks which target chunks are complete and copies duplicates from them.

    Args:
        index: the index being extracted.
    """

    kind = "self"

    def __init__(self, index: Index) -> None:
        self.index = index
        self.dup_of = earlier_copies(index)
        self.has_duplicates = bool((self.dup_of >= 0).any())
        self.done = bytearray(len(index))
        self.can_clone = False

    def prepare(self, target: WriteTarget) -> None:
        """Probe whether the target's filesystem can clone within the target."""
        self.can_clone = not target.device and target.can_clone_from(
            os.path.dirname(os.path.abspath(target.path)) or "."
        )

    def source_of(self, i: int) -> int:
        """A completed earlier chunk with the same id as chunk ``i``, or -1."""
        j = int(self.dup_of[i])
        return j if j >= 0 and self.done[j] else -1

    def mark(self, first: int, count: int) -> None:
        """Chunks ``first .. first+count-1`` are complete in the target."""
        self.done[first : first + count] = b"\x01" * count

    def mark_where(self, first: int, complete: np.ndarray) -> None:
        """Chunks ``first + k`` where ``complete[k]`` (a bool array) are complete."""
        done = np.frombuffer(self.done, dtype=np.uint8)
        done[first : first + len(complete)] |= complete

    def write(self, i: int, j: int, target: WriteTarget) -> Moved:
        """Copy (or clone) chunk ``j``'s bytes to chunk ``i``'s place."""
        chunk_i = self.index.chunk(i)
        start_j = int(self.index.ends[j - 1]) if j else 0
        return clone_or_copy(target.fd, start_j, chunk_i.size, target.fd, chunk_i.start,
                             target.blocksize, self.can_clone)


class SelfSeedType(SeedType):
    """The self-seed's registry entry: always used; not given with ``--seed``."""

    name = "self"
    user_selectable = False

    def open(self, ctx: Any, spec: str, *, target: Index, warn: Warn) -> list[Seed]:
        raise UsageError("the self-seed is always used; it cannot be given with --seed")


__all__ = ["SelfSeed", "SelfSeedType", "earlier_copies"]
