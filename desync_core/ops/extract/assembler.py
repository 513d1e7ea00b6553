"""Executing an extract plan: seed segments and runs of single chunks (the self-seed,
in-place data, the store), in two phases."""

from __future__ import annotations

import gc
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from desync_core.engine import ForkPool, ThreadPool, WorkerDiedError
from desync_core.errors import (
    DesyncError,
    SeedInvalidError,
    StoreError,
)
from desync_core.index import Index
from desync_core.ops.extract.fetch import BatchState, DirectFetcher, StoreBatches, runs
from desync_core.ops.extract.target import COUNTER_FIELDS, ExtractStats, Target, add_counts
from desync_core.progress import Progress
from desync_core.seeds.base import Seed, SeedSegment
from desync_core.seeds.extents import pwrite_all
from desync_core.seeds.null import NullSeed
from desync_core.seeds.planner import Plan
from desync_core.seeds.selfseed import SelfSeed
from desync_core.stores.wrappers import (
    read_sized,
)

#: A task of single chunks covers at most this many chunks / bytes (load balancing).
BATCH_CHUNKS = 8
BATCH_BYTES = 1024 * 1024
#: With batches (:class:`StoreBatches`) or worker processes, runs of single chunks are
#: larger (fewer calls, full kernel lanes), but at least TASKS_PER_WORKER per worker.
#: Measured on the 400 MB benchmark: 2, 4 and 8 MiB take the same CPU time; 1 MiB
#: (~15 chunks, the kernel's lanes unevenly loaded) takes more.
LOCAL_BATCH_BYTES = 4 * 1024 * 1024
LOCAL_BATCH_CHUNKS = 256
#: Runs fetched from remote stores: long enough to fill the hash kernel's 8 lanes and
#: amortise a task's overhead (measured through a chunk-server, 400 MB: 8 chunks / 1 MiB
#: took 0.89 s and 1.42 s of client CPU, 64 chunks / 8 MiB 0.74 s and 1.16 s), short
#: enough for TASKS_PER_WORKER runs per worker, so that the fetches stay many till the end.
REMOTE_BATCH_BYTES = 8 * 1024 * 1024
REMOTE_BATCH_CHUNKS = 64
TASKS_PER_WORKER = 8
#: Seed segments are executed in pieces of at most this many bytes, so that a long
#: (reflinked) run is cloned and verified by several workers at once.
SEGMENT_TASK_BYTES = 32 * 1024 * 1024
#: A worker process's counters for one task, as its result.
_COUNTERS = struct.Struct("<" + "q" * len(COUNTER_FIELDS))


@dataclass
class WorkerState:
    """What one worker (thread or process) keeps between tasks."""

    counters: ExtractStats
    batches: StoreBatches | None = None
    _batch_state: BatchState | None = None

    def batch_state(self) -> BatchState:
        """The worker's batch buffers (made on first use)."""
        if self._batch_state is None:
            assert self.batches is not None
            self._batch_state = self.batches.new_state()
        return self._batch_state


#: A task of the assembly: a seed segment, a run of single chunks ``(lo, hi)``, or an
#: array of single chunks (repeats, taken after everything else).
Task = SeedSegment | tuple[int, int] | np.ndarray


class Assembler:
    """Executes a plan on a target (``extract.md`` §1.2).

    The work runs in two phases. First the seed segments and every single chunk that
    does not repeat an earlier one, on worker processes when the stores are local and
    the seeds are plain files (:class:`~desync_core.engine.ForkPool`: no interpreter
    lock between workers), else on threads (:class:`~desync_core.engine.ThreadPool`).
    Then the repeated chunks, on threads: by then the first copy of each is complete
    in the target, so every repeat is copied (or cloned) from it - the self-seed -
    instead of being fetched again.

    Args:
        index: the index being extracted.
        target: the open target.
        source: the store chain (``get_chunk(id).data()``).
        plan: the validated seed segments.
        self_seed: tracks finished chunks; provides repeated ones.
        progress: receives chunk counts.
        repair_bad_seed_chunks: ``--regenerate-invalid-seeds``: a chunk a seed got
            wrong while writing is taken from elsewhere instead of failing.
        validated: the plan's seeds were validated before; if not, a seed chunk that
            does not match is reported as an invalid seed.
    """

    def __init__(self, index: Index, target: Target, source: Any, plan: Plan,
                 self_seed: SelfSeed, progress: Progress, *,
                 repair_bad_seed_chunks: bool = False, validated: bool = True) -> None:
        self.index = index
        self.target = target
        self.source = source
        self.plan = plan
        self.self_seed = self_seed
        self.progress = progress
        self.repair = repair_bad_seed_chunks
        self.validated = validated
        self.ids = index.ids
        self.sha = index.digest.sum
        self.direct = DirectFetcher.for_source(source, index)
        self.batches = StoreBatches.for_assembler(self.direct, index, target)
        #: Single chunks that repeat an earlier one (second phase), or None.
        self.repeats: np.ndarray | None = None
        self.cancelled = threading.Event()
        #: Workers were still running when an interrupted run stopped waiting for them.
        self.abandoned = False

    # -- the plan as tasks ----------------------------------------------------------

    def single_chunks(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Chunks no seed segment covers, and which of them repeat an earlier chunk
        (None if none do): ``(single, repeats)`` masks.

        Repeats are left for the second phase; the first phase skips them inside its
        runs (a run need not be cut at a repeat).
        """
        n = len(self.index)
        single = np.ones(n, dtype=bool)
        for seg in self.plan.segments:
            single[seg.first : seg.first + seg.count] = False
        if not self.self_seed.has_duplicates:
            return single, None
        repeats = single & (self.self_seed.dup_of >= 0)
        return single, (repeats if repeats.any() else None)

    def run_size(self, single: np.ndarray, repeats: np.ndarray | None, workers: int,
                 processes: int) -> tuple[int, int]:
        """``(bytes, chunks)`` limits of the runs of single chunks that form a task.

        Worker processes and batches from local files work best with runs of a few MiB
        (at least :data:`TASKS_PER_WORKER` per worker, so that they finish together);
        for remote stores runs of up to 8 MiB, still at least that many per worker.
        """
        local_batches = self.batches is not None and self.batches.chunk_file is not None
        remote = processes <= 1 and not local_batches
        workers = max(workers, processes)
        fetched = single if repeats is None else single & ~repeats
        total = int(np.diff(self.index.ends, prepend=0)[fetched].sum())
        most, chunks = ((REMOTE_BATCH_BYTES, REMOTE_BATCH_CHUNKS) if remote
                        else (LOCAL_BATCH_BYTES, LOCAL_BATCH_CHUNKS))
        size = min(most, max(BATCH_BYTES, total // (TASKS_PER_WORKER * workers)))
        return size, chunks

    def first_tasks(self, single: np.ndarray, max_bytes: int, max_chunks: int
                    ) -> Iterator[Task]:
        """Seed segments (in pieces) and runs of the ``single`` chunks, in target order."""
        ends = self.index.ends
        pos = 0
        for seg in [*self.plan.segments, None]:
            stop = seg.first if seg is not None else len(self.index)
            if stop > pos:
                yield from runs(single, pos, stop, ends, max_bytes, max_chunks)
            if seg is not None:
                yield from split_segment(seg, ends, SEGMENT_TASK_BYTES)
                pos = seg.first + seg.count

    @staticmethod
    def later_tasks(repeats: np.ndarray) -> Iterator[Task]:
        """The repeated chunks, a few per task."""
        positions = np.flatnonzero(repeats)
        for i in range(0, len(positions), BATCH_CHUNKS):
            yield positions[i : i + BATCH_CHUNKS]

    # -- executing tasks ------------------------------------------------------------

    def run_task(self, task: Task, worker: WorkerState) -> None:
        """Execute one task (called on a worker thread or process)."""
        try:
            if isinstance(task, tuple):
                self.run_chunks(task[0], task[1], worker)
            elif isinstance(task, np.ndarray):
                self.run_chunk_list(task, worker.counters)
            else:
                self.run_segment(task, worker.counters)
        except DesyncError:
            raise  # store errors (some are OSErrors too) already say what failed
        except OSError as exc:  # the target or a seed: full disk, I/O error...
            raise StoreError(f"extracting {self.target.display}: {exc.strerror or exc}") \
                from exc

    def run_chunks(self, lo: int, hi: int, worker: WorkerState) -> None:
        """Chunks ``lo..hi-1`` but the repeats: in a batch if possible, else one by one."""
        if self.cancelled.is_set():
            return
        repeats = self.repeats
        if worker.batches is None or not worker.batches.run(
                lo, hi, worker.batch_state(), worker.counters, repeats):
            ends = self.index.ends[lo:hi].tolist()
            start = int(self.index.ends[lo - 1]) if lo else 0
            for k, end in zip(range(lo, hi), ends):
                if self.cancelled.is_set():
                    return
                if repeats is None or not repeats[k]:
                    self.write_chunk(k, start, end, worker.counters)
                start = end
        self.progress.update(self.mark_run(lo, hi))

    def mark_run(self, lo: int, hi: int) -> int:
        """Mark a finished run's chunks (but the repeats) complete; returns how many."""
        if self.repeats is None:
            self.self_seed.mark(lo, hi - lo)
            return hi - lo
        fetched = ~self.repeats[lo:hi]
        self.self_seed.mark_where(lo, fetched)
        return int(fetched.sum())

    def run_chunk_list(self, chunks: np.ndarray, counters: ExtractStats) -> None:
        """Single chunks at the positions ``chunks`` (repeats of earlier chunks)."""
        ends = self.index.ends
        for k in chunks.tolist():
            if self.cancelled.is_set():
                return
            self.write_chunk(k, int(ends[k - 1]) if k else 0, int(ends[k]), counters)
            self.self_seed.done[k] = 1
        self.progress.update(len(chunks))

    def write_chunk(self, k: int, start: int, end: int, counters: ExtractStats) -> None:
        """One chunk by the single-chunk path (``extract.md`` §1.2)."""
        size = end - start
        chunk_id = self.ids[32 * k : 32 * k + 32]
        fd = self.target.fd
        if not self.target.blank:
            present = os.pread(fd, size, start)
            if len(present) == size and self.sha(present) == chunk_id:
                counters.chunks_in_place += 1
                counters.bytes_in_place += size
                return
        j = self.self_seed.source_of(k) if self.self_seed.has_duplicates else -1
        if j >= 0:
            moved = self.self_seed.write(k, j, self.target)
            counters.chunks_from_self_seed += 1
            counters.bytes_from_self_seed += size
            counters.bytes_copied_from_seeds += moved.copied
            counters.bytes_cloned_from_seeds += moved.cloned
            return
        data: bytes | bytearray | memoryview
        if self.direct is not None:
            data = self.direct.fetch(chunk_id, size)
        else:
            data = read_sized(self.source, chunk_id, size)
        pwrite_all(fd, data, start)
        counters.chunks_from_store += 1
        counters.bytes_from_store += size

    def run_segment(self, seg: SeedSegment, counters: ExtractStats) -> None:
        """A seed segment; chunks the seed got wrong are repaired or fail the run."""
        result = seg.seed.write_segment(seg, self.target)
        if result.in_place:
            counters.chunks_in_place += seg.count
            counters.bytes_in_place += seg.size
        else:
            if result.bad:
                if not self.repair:
                    if not self.validated:
                        raise invalid_seed_error(seg.seed)
                    raise SeedInvalidError(
                        f"written data in {self.target.display} doesn't match its expected "
                        "hash value, seed may have changed during processing"
                    )
                ends = self.index.ends
                for k in result.bad:
                    self.write_chunk(k, int(ends[k - 1]) if k else 0, int(ends[k]), counters)
            counters.chunks_from_seeds += seg.count - len(result.bad)
            counters.bytes_copied_from_seeds += result.moved.copied
            counters.bytes_cloned_from_seeds += result.moved.cloned
            if isinstance(seg.seed, NullSeed):
                counters.chunks_from_null_seed += seg.count
                counters.bytes_from_null_seed += seg.size
        self.self_seed.mark(seg.first, seg.count)
        self.progress.update(seg.count)

    def execute(self, workers: int, processes: int = 1) -> ExtractStats:
        """Run every task; returns the merged counters (each worker counts separately,
        so no lock is needed).

        Args:
            workers: threads.
            processes: worker processes for the first phase (1: threads only).
        """
        all_counters: list[ExtractStats] = []

        def make_worker_state() -> WorkerState:
            state = WorkerState(ExtractStats(), self.batches)
            all_counters.append(state.counters)
            return state

        single, repeats = self.single_chunks()
        self.repeats = repeats
        max_bytes, max_chunks = self.run_size(single, repeats, workers, processes)
        first: Iterable[Task] = self.first_tasks(single, max_bytes, max_chunks)
        # The assembly makes no reference cycles; the cyclic collector would only walk
        # every live object again and again while chunks stream through.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if processes > 1:
                if self.index.digest.hashlib_name == "sha512_256":
                    # Seed checks hash with the kernel too: load (or build) it once,
                    # here, rather than in every worker.
                    from desync_core.batchhash import native_kernel

                    native_kernel()
                first = self._run_forked(list(first), processes, all_counters)
            if not isinstance(first, list) or first:
                self._run_threads(first, workers, make_worker_state)
            if repeats is not None:
                self._run_threads(self.later_tasks(repeats), workers, make_worker_state)
        finally:
            if collecting:
                gc.enable()
        total = ExtractStats()
        for c in all_counters:
            add_counts(total, c)
        return total

    def _run_threads(self, tasks: Iterable[Task], workers: int,
                     make_state: Callable[[], WorkerState]) -> None:
        pool = ThreadPool(workers, self.cancelled, name="desync-extract")
        try:
            pool.run(tasks, self.run_task, make_state)
        finally:
            self.abandoned = self.abandoned or pool.abandoned

    def _run_forked(self, tasks: list[Task], processes: int,
                    all_counters: list[ExtractStats]) -> list[Task]:
        """Run ``tasks`` on worker processes; each sends its counters back with every
        finished task, and the marks and progress are made here. An error of a worker
        is raised; returns the tasks of workers that died (killed: out of memory...),
        which the others did not take over, to be run on threads."""
        received = ExtractStats()
        all_counters.append(received)
        state: WorkerState | None = None

        def run(i: int) -> bytes:  # in a worker process
            nonlocal state
            if state is None:
                self.progress = Progress()  # the parent reports progress
                state = WorkerState(ExtractStats(), self.batches)
            counters = state.counters = ExtractStats()
            self.run_task(tasks[i], state)
            return _COUNTERS.pack(*[getattr(counters, name) for name in COUNTER_FIELDS])

        def finished(i: int, result: bytes) -> None:  # in this process
            add_counts(received, ExtractStats(**dict(zip(COUNTER_FIELDS,
                                                         _COUNTERS.unpack(result)))))
            task = tasks[i]
            if isinstance(task, tuple):
                self.progress.update(self.mark_run(task[0], task[1]))
            else:
                assert isinstance(task, SeedSegment)
                self.self_seed.mark(task.first, task.count)
                self.progress.update(task.count)

        try:
            ForkPool(processes, what="an extract worker process").run(len(tasks), run,
                                                                      finished)
        except WorkerDiedError as exc:
            return [tasks[i] for i in exc.unfinished]
        return []


def split_segment(seg: SeedSegment, ends: np.ndarray, limit: int) -> Iterator[SeedSegment]:
    """``seg`` cut at chunk boundaries into pieces of at most ``limit`` bytes (at least
    one chunk each)."""
    if seg.size <= limit:
        yield seg
        return
    first, last = seg.first, seg.first + seg.count
    start = seg.start
    while first < last:
        stop = int(np.searchsorted(ends, start + limit, side="right"))
        stop = min(max(stop, first + 1), last)
        end = int(ends[stop - 1])
        seed_first = seg.seed_first + (first - seg.first) if seg.seed_first >= 0 else -1
        yield SeedSegment(seg.seed, first, stop - first, start, end, seed_first)
        first, start = stop, end


def invalid_seed_error(seed: Seed) -> DesyncError:
    make = getattr(seed, "invalid_error", None)
    if make is not None:
        return make()
    return SeedInvalidError(f"seed index for {seed.name} doesn't match its data")


