"""Planning: which seed provides which run of target chunks (``extract.md`` §3, §4).

Walking the target index, every seed proposes its longest match at the current
position; the one covering the most bytes wins (ties: the earlier seed), and the
position advances past it. Positions no seed covers are left to the assembly's
single-chunk path (already in place, self-seed, or the store).

Only positions where some seed has a candidate are visited, so planning an index of
millions of chunks without seeds costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from desync_core.seeds.base import COPY_RUN_CAP, Seed, SeedSegment

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.progress import Progress


@dataclass
class Plan:
    """Seed segments in target order (non-overlapping); the rest comes chunk by chunk."""

    segments: list[SeedSegment] = field(default_factory=list)

    def segments_by_seed(self) -> dict[Seed, list[SeedSegment]]:
        """Segments grouped by seed, in plan order."""
        groups: dict[Seed, list[SeedSegment]] = {}
        for seg in self.segments:
            groups.setdefault(seg.seed, []).append(seg)
        return groups


def make_plan(index: Index, seeds: list[Seed], null_mask: np.ndarray) -> Plan:
    """The longest-match plan over the valid ``seeds`` (null seed first)."""
    n = len(index)
    matchers = []
    for seed in seeds:
        if not seed.valid:
            continue
        m = seed.matcher(index, null_mask)
        cap = None if seed.can_clone else COPY_RUN_CAP
        matchers.append((seed, m, m.candidates.tobytes(), cap))
    if not matchers or n == 0:
        return Plan()
    anywhere = np.zeros(n, dtype=bool)
    for _seed, m, _c, _cap in matchers:
        anywhere |= m.candidates
    ends = index.ends
    segments: list[SeedSegment] = []
    next_free = 0
    for i in np.flatnonzero(anywhere).tolist():
        if i < next_free:
            continue
        start = int(ends[i - 1]) if i else 0
        best_bytes = 0
        best: tuple[Seed, int, int] | None = None
        for seed, m, cand, cap in matchers:
            if not cand[i]:
                continue
            count, seed_first = m.longest(i, cap)
            if count:
                size = int(ends[i + count - 1]) - start
                if size > best_bytes:
                    best_bytes = size
                    best = (seed, count, seed_first)
        if best is not None:
            seed, count, seed_first = best
            segments.append(SeedSegment(seed, i, count, start, start + best_bytes, seed_first))
            next_free = i + count
    return Plan(segments)


def validate_plan(plan: Plan, index: Index, *, workers: int,
                  progress: Callable[[int], Progress],
                  cancelled: Callable[[], bool] = lambda: False) -> list[Seed]:
    """Hash the seed data of every segment that needs it; returns the invalid seeds.

    Invalid seeds are marked (``seed.valid = False``) so the next plan leaves them out.

    Args:
        plan: the plan to check.
        index: the index being extracted.
        workers: hashing threads.
        progress: makes the ``Validating`` bar for a total number of chunks.
        cancelled: polled to stop early.
    """
    groups = {s: segs for s, segs in plan.segments_by_seed().items() if s.needs_validation}
    total = sum(seg.count for segs in groups.values() for seg in segs)
    invalid: list[Seed] = []
    with progress(total) as bar:
        for seed, segments in groups.items():
            if not seed.verify_segments(segments, index, workers=workers, progress=bar,
                                        cancelled=cancelled):
                seed.valid = False
                invalid.append(seed)
    return invalid


__all__ = ["Plan", "make_plan", "validate_plan"]
