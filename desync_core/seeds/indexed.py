"""Seeds described by an index: matching by chunk id, validation by hashing (§3, §4).

:class:`IndexedSeed` is the base of file seeds and of plugin seeds that have an index
for their data: subclasses provide only :meth:`IndexedSeed.read_into` (and, to write
faster than read-then-write, :meth:`IndexedSeed.write_segment`).

Matching works on numpy arrays rather than a dictionary of ids, so that memory stays
small for indexes of millions of chunks: chunk ids are keyed by their first 8 bytes
(sorted once), candidates are found with a vectorised binary search, and a run is
confirmed by comparing full ids and sizes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from desync_core.batchhash import chunk_digests
from desync_core.seeds.base import MAX_CANDIDATES, Matcher, Seed, SeedSegment

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.progress import Progress

#: Bytes hashed per validation task.
VERIFY_TASK_BYTES = 8 * 1024 * 1024


def id_keys(ids: bytes) -> np.ndarray:
    """The first 8 bytes of every 32-byte id, as uint64 (ids are uniformly random)."""
    return np.frombuffer(ids, dtype="<u8").reshape(-1, 4)[:, 0]


class IndexMatcher(Matcher):
    """Longest runs of target chunks that appear consecutively in a seed index."""

    def __init__(self, seed_index: Index, target: Index, null_mask: np.ndarray) -> None:
        self.seed_ids = seed_index.ids
        self.target_ids = target.ids
        self.seed_sizes = seed_index.sizes()
        self.target_sizes = target.sizes()
        self.n_seed = len(seed_index)
        self.n_target = len(target)
        if self.n_seed == 0 or self.n_target == 0:
            self.candidates = np.zeros(self.n_target, dtype=bool)
            return
        keys = id_keys(self.seed_ids)
        # Stable: equal keys keep ascending seed positions, so ties go to the first.
        self.order = np.argsort(keys, kind="stable")
        sorted_keys = keys[self.order]
        target_keys = id_keys(self.target_ids)
        self.lo = np.searchsorted(sorted_keys, target_keys, side="left")
        self.hi = np.searchsorted(sorted_keys, target_keys, side="right")
        self.null = null_mask.tobytes()
        self.candidates = (self.hi > self.lo) & ~null_mask

    def longest(self, i: int, cap: int | None) -> tuple[int, int]:
        t_ids, s_ids = self.target_ids, self.seed_ids
        t_sizes, s_sizes = self.target_sizes, self.seed_sizes
        null = self.null
        limit = self.n_target - i if cap is None else min(cap, self.n_target - i)
        want = t_ids[32 * i : 32 * i + 32]
        lo = int(self.lo[i])
        hi = min(int(self.hi[i]), lo + MAX_CANDIDATES)
        best_n, best_p = 0, -1
        for p in self.order[lo:hi].tolist():
            if s_ids[32 * p : 32 * p + 32] != want or s_sizes[p] != t_sizes[i]:
                continue  # a 64-bit key collision, or a seed index that lies about sizes
            stop = min(limit, self.n_seed - p)
            n = 1
            while n < stop and not null[i + n]:
                a = 32 * (i + n)
                b = 32 * (p + n)
                if t_ids[a : a + 32] != s_ids[b : b + 32] or t_sizes[i + n] != s_sizes[p + n]:
                    break
                n += 1
            if n > best_n:
                best_n, best_p = n, p
                if n >= limit:
                    break
        return best_n, best_p


class IndexedSeed(Seed):
    """A seed whose content an index describes.

    Args:
        index: the seed's index.
        name: shown in messages.
    """

    def __init__(self, index: Index, name: str) -> None:
        self.index = index
        self.name = name
        self.valid = True
        self._starts: np.ndarray | None = None

    def matcher(self, target: Index, null_mask: np.ndarray) -> Matcher:
        return IndexMatcher(self.index, target, null_mask)

    def set_index(self, index: Index) -> None:
        """Replace the seed's index (after regeneration)."""
        self.index = index
        self._starts = None

    def seed_range(self, segment: SeedSegment) -> tuple[int, int]:
        """``(offset, length)`` of a segment in the seed's data."""
        if self._starts is None:
            self._starts = self.index.starts()
        offset = int(self._starts[segment.seed_first])
        return offset, int(self.index.ends[segment.seed_first + segment.count - 1]) - offset

    @abstractmethod
    def read_into(self, view: memoryview, offset: int) -> bool:
        """Fill ``view`` with the seed's bytes at ``offset``; False if the data ends first."""

    def verify_segments(self, segments: list[SeedSegment], target: Index, *, workers: int,
                        progress: Progress, cancelled: Callable[[], bool]) -> bool:
        """Read every chunk of ``segments`` from the seed and hash it (threads)."""
        if self._starts is None:
            self._starts = self.index.starts()
        tasks: list[tuple[int, int]] = []  # (first seed chunk, count), about 8 MiB each
        ends = self.index.ends
        starts = self._starts
        for seg in segments:
            first, last = seg.seed_first, seg.seed_first + seg.count
            while first < last:
                limit = int(starts[first]) + VERIFY_TASK_BYTES
                stop = int(np.searchsorted(ends, limit, side="right"))
                stop = min(max(stop, first + 1), last)
                tasks.append((first, stop - first))
                first = stop
        digest = target.digest
        ids = self.index.ids
        failed = False

        def check(task: tuple[int, int]) -> bool:
            nonlocal failed
            first, count = task
            if failed or cancelled():
                return False
            base = int(starts[first])
            total = int(ends[first + count - 1]) - base
            buf = bytearray(total)
            view = memoryview(buf)
            ok = self.read_into(view, base)
            if ok:
                rel = starts[first : first + count] - base
                sums = chunk_digests(buf, rel, ends[first : first + count] - base - rel,
                                     digest)
                ok = sums == ids[32 * first : 32 * (first + count)]
            if not ok:
                failed = True
            progress.update(count)
            return ok

        if workers <= 1 or len(tasks) <= 1:
            results = [check(t) for t in tasks]
        else:
            from desync_core.engine.threads import Threads

            with Threads(min(workers, len(tasks))) as pool:
                try:
                    results = list(pool.map(check, tasks))
                except BaseException:
                    failed = True  # queued tasks return at once; an interrupt is not held up
                    raise
        return all(results) and not failed


#: Bytes read at once when streaming a segment's chunks.
PIECE_BYTES = 4 * 1024 * 1024

def bad_chunks(buf: bytearray | memoryview, first: int, stop: int, base: int,
               target: Index) -> list[int]:
    """Target chunks ``first..stop-1``, held in ``buf`` from target offset ``base`` on,
    whose bytes do not hash to their id."""
    ends = target.ends[first:stop] - base
    starts = np.empty_like(ends)
    starts[0] = int(target.ends[first - 1]) - base if first else -base
    starts[1:] = ends[:-1]
    want = target.ids[32 * first : 32 * stop]
    got = chunk_digests(buf, starts, ends - starts, target.digest)
    if got == want:
        return []
    return [first + i for i in range(stop - first)
            if got[32 * i : 32 * i + 32] != want[32 * i : 32 * i + 32]]


def iter_segment_pieces(fd: int, offset: int, segment: SeedSegment, target: Index
                        ) -> Iterator[tuple[int, int, int, memoryview | None]]:
    """Read a segment's bytes from ``fd`` (starting at ``offset``) in pieces of whole
    chunks (about :data:`PIECE_BYTES`, at least one chunk).

    Yields ``(first, stop, target_offset, data)``: target chunks ``first..stop-1`` and
    their bytes, or None if ``fd`` ends first. Memory is bounded; each view is valid
    until the next item.
    """
    from desync_core.seeds.extents import pread_exact

    ends = target.ends
    first, last = segment.first, segment.first + segment.count
    buf = bytearray(max(PIECE_BYTES, target.chunk_size_max))
    view = memoryview(buf)
    k = first
    pos = segment.start
    while k < last:
        stop = int(np.searchsorted(ends, pos + len(buf), side="right"))
        stop = min(max(stop, k + 1), last)
        total = int(ends[stop - 1]) - pos
        try:
            pread_exact(fd, view[:total], offset + (pos - segment.start))
            data: memoryview | None = view[:total]
        except EOFError:
            data = None
        yield k, stop, pos, data
        pos = int(ends[stop - 1])
        k = stop


def iter_segment_chunks(fd: int, offset: int, segment: SeedSegment, target: Index
                        ) -> Iterator[tuple[int, int, memoryview | None]]:
    """Like :func:`iter_segment_pieces`, chunk by chunk: yields ``(k, target_offset,
    data)`` for each target chunk ``k`` of the segment (``data`` None if ``fd`` ends
    first)."""
    ends = target.ends
    for first, stop, pos, data in iter_segment_pieces(fd, offset, segment, target):
        lo = 0
        for j, end in zip(range(first, stop), ends[first:stop].tolist()):
            hi = end - pos
            yield j, pos + lo, (data[lo:hi] if data is not None else None)
            lo = hi


def mismatched_chunks(fd: int, segment: SeedSegment, target: Index) -> list[int]:
    """Target chunk indexes in ``segment`` whose bytes in ``fd`` do not hash to their id.

    ``fd`` is read at the segment's target offsets: it is the target itself, to check
    data just written or already in place.
    """
    bad: list[int] = []
    for first, stop, pos, data in iter_segment_pieces(fd, segment.start, segment, target):
        bad.extend(range(first, stop) if data is None
                   else bad_chunks(data, first, stop, pos, target))
    return bad


__all__ = [
    "IndexMatcher",
    "IndexedSeed",
    "bad_chunks",
    "id_keys",
    "iter_segment_chunks",
    "iter_segment_pieces",
    "mismatched_chunks",
]
