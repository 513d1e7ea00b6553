"""``extract``: assemble a blob from its index (``extract.md`` §1-§5).

Without ``-k`` the blob is assembled in a temporary file next to the output and renamed
onto it only when complete, so the output is either untouched or complete, also when
the run fails or is interrupted (SIGINT/SIGTERM). With ``-k`` the output (a file or a
block device) is written in place and kept on failure; a rerun hashes what is there
and fetches only what is missing or wrong.

Where the data comes from, cheapest first:

1. the **null seed** - runs of all-zero chunks are never fetched: on a blank target
   they stay holes (a sparse file);
2. **file seeds** (``--seed``, ``--seed-dir``, plugin seed types) - planned by longest
   match, cloned (reflink) or copied, and hash-checked as they are written; when an
   invalid seed must be left out or regenerated, or with ``-k``, seeds are also
   validated before anything is written;
3. for the remaining chunks, one at a time: the target itself when it already holds
   the chunk (``-k``), the **self-seed** (an earlier copy of the same chunk in the
   target), and finally the **store chain** (verified by hash, size-checked).

Execution runs the plan on ``-n`` worker threads, each handling a task (a seed
segment, or a short run of single chunks) with positional reads and writes on the
shared target descriptor. Fetching, decompression, hashing and writing all release
the GIL, so the threads overlap on several cores; at most ``2 * workers`` tasks are
queued, which bounds memory whatever the blob size.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from desync_core import zstd
from desync_core.errors import (
    ChunkInvalidError,
    DesyncError,
    SeedInvalidError,
    StoreError,
    UsageError,
)
from desync_core.index import Index
from desync_core.progress import Progress
from desync_core.seeds.base import Seed, SeedSegment, Warn
from desync_core.seeds.fileio import probe_clone, pwrite_all
from desync_core.seeds.null import NullSeed, null_mask
from desync_core.seeds.planner import Plan, make_plan, validate_plan
from desync_core.seeds.selfseed import SelfSeed
from desync_core.stores.base import KeyValueChunkStore
from desync_core.stores.chunk import COMPRESSED, UNCOMPRESSED, ZSTD_MAGIC, ChunkCodec
from desync_core.stores.wrappers import RetryingStore, VerifyingStore

#: What to do with seeds whose data does not match their index (``extract.md`` §4).
INVALID_SEED_ACTIONS = ("fail", "skip", "regenerate")
#: A task of single chunks covers at most this many chunks / bytes (load balancing).
BATCH_CHUNKS = 8
BATCH_BYTES = 1024 * 1024
#: Seed segments are executed in pieces of at most this many bytes, so that a long
#: (reflinked) run is cloned and verified by several workers at once.
SEGMENT_TASK_BYTES = 32 * 1024 * 1024
#: How long an interrupted run waits for busy workers before leaving them behind.
CANCEL_GRACE_SECONDS = 2.0

ProgressFactory = Callable[[str, int], Progress]
T = TypeVar("T")


@dataclass
class ExtractStats:
    """``--print-stats`` (``extract.md`` §1.3), plus a breakdown by source.

    desync's keys keep desync's meaning: ``chunks-from-seeds`` counts chunks of seed
    segments (the null seed included), ``bytes-copied/cloned-from-seeds`` every byte
    copied or cloned from a seed or the self-seed, ``seeds`` includes the null seed.
    The extra keys split this up: null chunks, self-seed, store and in-place bytes.
    """

    chunks_from_seeds: int = 0
    chunks_from_store: int = 0
    chunks_in_place: int = 0
    bytes_copied_from_seeds: int = 0
    bytes_cloned_from_seeds: int = 0
    blocksize: int = 4096
    bytes_total: int = 0
    chunks_total: int = 0
    seeds: int = 1
    chunks_from_null_seed: int = 0
    bytes_from_null_seed: int = 0
    chunks_from_self_seed: int = 0
    bytes_from_self_seed: int = 0
    bytes_from_store: int = 0
    bytes_in_place: int = 0

    def as_json(self) -> dict[str, int]:
        """Keys as desync prints them (``chunks-from-store``…)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


_COUNTERS = [f.name for f in fields(ExtractStats)
             if f.name not in ("blocksize", "bytes_total", "chunks_total", "seeds")]


@dataclass
class Target:
    """The file or device being assembled (implements the seeds' ``WriteTarget``)."""

    index: Index
    fd: int
    path: str
    blank: bool
    device: bool
    blocksize: int
    #: The name shown in messages (the output, also while writing a temporary file).
    display: str = ""
    _clone_probes: dict[str, bool] = field(default_factory=dict)

    def size_to_blob(self) -> None:
        """Truncate or extend a file to the blob's length (devices are left alone).

        Done once the plan is validated, so that a run failing validation leaves an
        existing ``-k`` output untouched.
        """
        if self.device:
            return
        try:
            if os.fstat(self.fd).st_size != self.index.length:
                os.ftruncate(self.fd, self.index.length)
        except OSError as exc:
            raise StoreError(f"resizing {self.display}: {exc.strerror}") from exc

    def can_clone_from(self, src_dir: str) -> bool:
        """Whether files in ``src_dir`` can be cloned into the target (probed once each)."""
        if self.device:
            return False
        key = os.path.realpath(src_dir or ".")
        if key not in self._clone_probes:
            target_dir = os.path.dirname(os.path.abspath(self.path))
            self._clone_probes[key] = probe_clone(target_dir, key)
        return self._clone_probes[key]


def open_target(index: Index, path: str, *, in_place: bool, create_new: bool) -> Target:
    """Open (or create) the target and size it (``extract.md`` §1.1 steps 1-4).

    Args:
        index: the index being extracted.
        path: the file or device.
        in_place: ``-k``: existing content is inspected and reused.
        create_new: the path must not exist yet (a temporary file).
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror}") from None
    device = st is not None and (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode))
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory")
    flags = os.O_RDWR | os.O_CLOEXEC
    if not device:
        flags |= os.O_CREAT | (os.O_EXCL if create_new else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise StoreError(f"opening {path}: {exc.strerror}") from exc
    try:
        if device:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size < index.length:
                raise UsageError(
                    f"{path} is too small ({size} bytes) for the blob ({index.length} bytes)"
                )
            blank = False
        else:
            blank = st is None or st.st_size == 0 or not in_place
            if blank:
                os.ftruncate(fd, index.length)  # sparse; an existing file is sized later
        blocksize = os.fstat(fd).st_blksize or 4096
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"preparing {path}: {exc.strerror}") from exc
    except BaseException:
        os.close(fd)
        raise
    return Target(index, fd, path, blank, device, blocksize, display=path)


def add_counts(total: ExtractStats, part: ExtractStats) -> None:
    """Add ``part``'s counters (not the totals or settings) to ``total``."""
    for name in _COUNTERS:
        setattr(total, name, getattr(total, name) + getattr(part, name))


class DirectFetcher:
    """Fetch, decode and verify a chunk straight into a reused buffer of its known size.

    For the most common store chain, one verified store (``VerifyingStore`` over
    ``RetryingStore`` over a transport with the standard codec): the raw chunk is read
    through the retrying layer, zstd-decoded into a per-thread buffer with libzstd's
    one-shot API (through ctypes, which releases the GIL, so workers overlap on all
    cores; the buffer bounds the output to the size the index gives), then size-checked
    and hash-verified exactly as ``VerifyingStore`` does (same errors, ``skip-verify``
    honoured). Every other chain (router, failover, cache, other codecs) goes through
    ``get_chunk().data()``.
    """

    def __init__(self, retrying: RetryingStore, codec: ChunkCodec, digest_sum: Callable[
            [bytes | bytearray | memoryview], bytes], skip_verify: bool, max_size: int) -> None:
        self.raw = retrying
        self.codec = codec
        self.sum = digest_sum
        self.skip_verify = skip_verify
        self.max_size = max_size
        self._local = threading.local()

    @classmethod
    def for_source(cls, source: Any, index: Index) -> DirectFetcher | None:
        """A fetcher for ``source`` if it is a single verified store, else None."""
        if type(source) is not VerifyingStore or type(source.inner) is not RetryingStore:
            return None
        if not isinstance(source.inner.inner, KeyValueChunkStore):
            return None  # only these always return the stored bytes in their codec
        codec = getattr(source.inner.inner, "codec", None)
        if type(codec) is not ChunkCodec or codec not in (COMPRESSED, UNCOMPRESSED):
            return None
        return cls(source.inner, codec, source.digest.sum, source.skip_verify,
                   index.chunk_size_max)

    def fetch(self, chunk_id: bytes, size: int) -> bytes | bytearray | memoryview:
        """The verified plain data of a chunk of ``size`` bytes (valid until the next
        fetch on this thread)."""
        stored = self.raw.get_chunk(chunk_id).encoded(self.codec)
        try:
            if self.codec.compressed and bytes(stored[:4]) == ZSTD_MAGIC and size <= self.max_size:
                data: bytes | bytearray | memoryview = self._zstd_into(stored, size)
            else:
                data = self.codec.decode(stored, chunk_id)
        except ChunkInvalidError as exc:
            raise ChunkInvalidError(chunk_id, exc.actual_id, str(exc).split(": ", 1)[-1],
                                    store=self.raw) from exc
        except ValueError as exc:  # zstd errors
            raise ChunkInvalidError(chunk_id, cause=str(exc), store=self.raw) from exc
        if len(data) != size:
            raise ChunkInvalidError(chunk_id, cause=f"unexpected size for chunk "
                                    f"{chunk_id.hex()}: {len(data)} bytes instead of {size}")
        if not self.skip_verify:
            actual = self.sum(data)
            if actual != chunk_id:
                raise ChunkInvalidError(chunk_id, actual, store=self.raw)
        return data

    def _zstd_into(self, stored: bytes | bytearray | memoryview, size: int) -> memoryview:
        """Decode all frames of ``stored`` into this thread's buffer; at most
        ``size + 1`` bytes (one more reveals data that is too long)."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(self.max_size + 1)
        try:
            n = zstd.decompress_into(stored, buf, size + 1)
        except zstd.ZstdDecodeError as exc:
            if "too small" in str(exc):  # libzstd: "Destination buffer is too small"
                raise ValueError(f"zstd: decompresses to more than {size} bytes") from exc
            raise
        return memoryview(buf)[:n]


class Assembler:
    """Executes a plan on a target with a pool of threads (``extract.md`` §1.2).

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
        self.cancelled = threading.Event()
        #: Workers were still running when an interrupted run stopped waiting for them.
        self.abandoned = False

    # -- the plan as tasks ----------------------------------------------------------

    def tasks(self) -> Iterator[SeedSegment | tuple[int, int]]:
        """Seed segments, and runs of single chunks between them, in target order."""
        ends = self.index.ends
        n = len(self.index)
        segments = self.plan.segments
        next_seg = 0
        i = 0
        while i < n:
            if next_seg < len(segments) and segments[next_seg].first == i:
                seg = segments[next_seg]
                yield from split_segment(seg, ends, SEGMENT_TASK_BYTES)
                i += seg.count
                next_seg += 1
                continue
            stop = segments[next_seg].first if next_seg < len(segments) else n
            start = int(ends[i - 1]) if i else 0
            by_bytes = int(np.searchsorted(ends, start + BATCH_BYTES, side="right"))
            j = min(stop, i + BATCH_CHUNKS, max(by_bytes, i + 1))
            yield (i, j)
            i = j

    # -- executing tasks ------------------------------------------------------------

    def run_task(self, task: SeedSegment | tuple[int, int], counters: ExtractStats) -> None:
        """Execute one task (called on a worker thread)."""
        try:
            if isinstance(task, tuple):
                self.run_chunks(task[0], task[1], counters)
            else:
                self.run_segment(task, counters)
        except DesyncError:
            raise  # store errors (some are OSErrors too) already say what failed
        except OSError as exc:  # the target or a seed: full disk, I/O error...
            raise StoreError(f"extracting {self.target.display}: {exc.strerror or exc}") \
                from exc

    def run_chunks(self, lo: int, hi: int, counters: ExtractStats) -> None:
        """Chunks ``lo..hi-1``: in place, from the self-seed, or from the store."""
        ends = self.index.ends[lo:hi].tolist()
        start = int(self.index.ends[lo - 1]) if lo else 0
        for k, end in zip(range(lo, hi), ends):
            if self.cancelled.is_set():
                return
            self.write_chunk(k, start, end, counters)
            self.self_seed.done[k] = 1
            start = end
        self.progress.update(hi - lo)

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
            data = self.source.get_chunk(chunk_id).data()
            if len(data) != size:
                raise ChunkInvalidError(chunk_id, cause=f"unexpected size for chunk "
                                        f"{chunk_id.hex()}: {len(data)} bytes instead of {size}")
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
                        raise _invalid_error(seg.seed)
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

    def execute(self, workers: int) -> ExtractStats:
        """Run every task; returns the merged counters (each worker counts separately,
        so no lock is needed)."""
        all_counters: list[ExtractStats] = []

        def make_worker_state() -> ExtractStats:
            c = ExtractStats()
            all_counters.append(c)
            return c

        pool = WorkerPool(workers, self.cancelled)
        # The assembly makes no reference cycles; the cyclic collector would only walk
        # every live object again and again while chunks stream through.
        collecting = gc.isenabled()
        gc.disable()
        try:
            pool.run(self.tasks(), self.run_task, make_worker_state)
        finally:
            self.abandoned = pool.abandoned
            if collecting:
                gc.enable()
        total = ExtractStats()
        for c in all_counters:
            add_counts(total, c)
        return total


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


_STOP = object()


class WorkerPool:
    """Applies ``fn(item, state)`` to items on ``workers`` daemon threads.

    At most ``2 * workers`` items wait in the queue. The first error (or an exception
    in the calling thread, such as KeyboardInterrupt) sets ``cancelled``; workers then
    skip what is left and the error is raised by :meth:`run`. Workers are daemon
    threads, so one stuck in a blocking call (a hung network store) cannot keep the
    process alive after an interruption: if they do not finish within
    :data:`CANCEL_GRACE_SECONDS` they are left behind and :attr:`abandoned` is set
    (the caller must then not close what they use).
    """

    def __init__(self, workers: int, cancelled: threading.Event) -> None:
        self.workers = max(1, workers)
        self.cancelled = cancelled
        self.abandoned = False

    def run(self, items: Iterable[T], fn: Callable[[T, Any], None],
            make_state: Callable[[], Any]) -> None:
        """Process every item (in parallel); raises the first error."""
        work: queue.Queue[Any] = queue.Queue(maxsize=2 * self.workers)
        errors: list[BaseException] = []
        cancelled = self.cancelled

        def worker() -> None:
            state = make_state()
            while True:
                item = work.get()
                if item is _STOP:
                    return
                if cancelled.is_set():
                    continue
                try:
                    fn(item, state)
                except BaseException as exc:  # handed to the calling thread
                    errors.append(exc)
                    cancelled.set()

        threads = [threading.Thread(target=worker, name=f"desync-extract-{k}", daemon=True)
                   for k in range(self.workers)]
        for t in threads:
            t.start()
        interrupted = False
        try:
            for item in items:
                if cancelled.is_set():
                    break
                work.put(item)
        except BaseException:
            interrupted = True
            cancelled.set()
            raise
        finally:
            stopping = interrupted or bool(errors)
            _stop_workers(work, threads, drop_queued=stopping)
            # Until proven otherwise (a second interrupt may strike while waiting).
            self.abandoned = True
            try:
                self.abandoned = _join(threads, CANCEL_GRACE_SECONDS if stopping else None)
            except BaseException:
                # Interrupted while the workers finished the queue: they skip the rest.
                cancelled.set()
                self.abandoned = _join(threads, CANCEL_GRACE_SECONDS)
                raise
        if errors:
            raise errors[0]


def _stop_workers(work: queue.Queue[Any], threads: Sequence[threading.Thread], *,
                  drop_queued: bool) -> None:
    """Tell every worker to finish (after the queued items, unless ``drop_queued``)."""
    while drop_queued:
        try:
            work.get_nowait()
        except queue.Empty:
            break
    for _ in threads:
        work.put(_STOP)


def _join(threads: Sequence[threading.Thread], timeout: float | None) -> bool:
    """Wait for the workers; True if some are still running after ``timeout`` seconds."""
    if timeout is None:
        for t in threads:
            t.join()
        return False
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.daemon = True
    timer.start()
    try:
        for t in threads:
            while t.is_alive() and not deadline.is_set():
                t.join(0.05)
    finally:
        timer.cancel()
    return any(t.is_alive() for t in threads)


def temp_name(output: str) -> str:
    """``<dir>/.<basename>.<random>``, next to the output (same filesystem)."""
    directory, base = os.path.split(os.path.abspath(output))
    return os.path.join(directory, f".{base}.{secrets.randbits(32)}")


def check_output(output: str) -> None:
    """The output's directory must exist; a directory cannot be the output."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory} does not exist")
    if os.path.isdir(output):
        raise UsageError(f"output {output} is a directory")


def assembly_threads(source: Any, workers: int) -> int:
    """Worker threads for the assembly: ``-n``, but at most one per CPU plus one when
    every store is local.

    Local fetches are CPU-bound (decompression, hashing); threads beyond the cores only
    contend for the interpreter lock. Remote stores keep ``-n`` requests in flight.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    members = list(iter_members(source))
    if members and all(getattr(m, "is_local", False) for m in members):
        return max(1, min(workers, default_workers() + 1))
    return max(1, workers)


def _no_progress(prefix: str, total: int) -> Progress:
    return Progress()


def _same_file(path: str | None, st: os.stat_result) -> bool:
    if not path:
        return False
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino) and \
        (other.st_rdev == st.st_rdev)


def usable_seeds(seeds: Sequence[Seed], target: Target, *, in_place: bool,
                 invalid_seeds: str, warn: Warn) -> list[Seed]:
    """The seeds to plan with: unreadable ones fail or are skipped; none may be the target.

    With ``-k`` a seed whose data is the output itself would be overwritten while it
    is read; it is left out (the in-place check reuses whatever is already right).
    """
    usable: list[Seed] = []
    target_st = os.fstat(target.fd)
    for seed in seeds:
        error = getattr(seed, "error", None)
        if error:
            if invalid_seeds == "skip":
                warn(f"skipping seed {seed.name}: {error}")
                continue
            raise SeedInvalidError(error)
        if in_place and _same_file(seed.data_path, target_st):
            warn(f"not using seed {seed.name}: it is the output being written in place")
            continue
        usable.append(seed)
    return usable


def extract(
    index: Index,
    output: str,
    source: Any,
    *,
    in_place: bool = False,
    workers: int = 10,
    progress: Progress | None = None,
    seeds: Sequence[Seed] = (),
    invalid_seeds: str = "fail",
    progress_factory: ProgressFactory | None = None,
    warn: Warn | None = None,
) -> ExtractStats:
    """Assemble the blob described by ``index`` into ``output``.

    Args:
        index: the blob's index.
        output: file (or, with ``in_place``, block device) to write.
        source: the store chain (a :class:`~desync_core.stores.wrappers.ChunkReader`).
        in_place: write directly into ``output`` and keep it on failure (``-k``).
        workers: worker threads (fetches, copies and writes in flight).
        progress: receives chunk counts of the assembly (alternative to
            ``progress_factory``).
        seeds: open seeds (:func:`desync_core.seeds.open_seeds`), in priority order;
            the null seed and the self-seed are always used. They are not closed.
        invalid_seeds: ``fail`` (default), ``skip`` or ``regenerate`` (§4).
        progress_factory: ``(prefix, total) -> Progress`` for the ``Attempt n:
            Validating / Chunking Seed k / Assembling`` bars.
        warn: receives warnings for the user (default: ignored).

    Raises:
        SeedInvalidError: a seed's data does not match its index (and ``fail``), or
            changed while it was being copied.
        ChunkMissingError, ChunkInvalidError, StoreError: fetching failed.
        OperationCancelledError, KeyboardInterrupt: interrupted; without ``in_place``
            nothing is left behind.
    """
    if invalid_seeds not in INVALID_SEED_ACTIONS:
        raise UsageError(f"invalid_seeds must be one of {', '.join(INVALID_SEED_ACTIONS)}")
    check_output(output)
    warn = warn or (lambda _msg: None)
    if progress_factory is None:
        progress_factory = _no_progress
    if _is_device(output) and not in_place:
        raise UsageError(f"{output} is a device: extracting to a device requires -k (--in-place)")
    stats = ExtractStats(bytes_total=index.length, chunks_total=len(index))
    path = output if in_place else temp_name(output)
    target = open_target(index, path, in_place=in_place, create_new=not in_place)
    target.display = output
    stats.blocksize = target.blocksize
    ok = False
    assemblers: list[Assembler] = []
    try:
        if len(index):
            _assemble(index, target, source, stats, list(seeds), in_place=in_place,
                      workers=workers, invalid_seeds=invalid_seeds, progress=progress,
                      progress_factory=progress_factory, warn=warn, started=assemblers)
        else:
            target.size_to_blob()
        ok = True
    finally:
        if not ok and not in_place:
            # Remove the temporary file first: a second interrupt during the rest of the
            # clean-up must not leave it behind.
            with contextlib.suppress(OSError):
                os.unlink(path)
        # Workers left behind by an interruption may still use the descriptor; closing
        # it could let a new file reuse the number under their writes.
        if not any(a.abandoned for a in assemblers):
            os.close(target.fd)
    if not in_place:
        try:
            os.replace(path, output)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise StoreError(f"renaming {path} to {output}: {exc.strerror}") from exc
    return stats


def _assemble(index: Index, target: Target, source: Any, stats: ExtractStats,
              seeds: list[Seed], *, in_place: bool, workers: int, invalid_seeds: str,
              progress: Progress | None, progress_factory: ProgressFactory,
              warn: Warn, started: list[Assembler]) -> None:
    """Plan, validate (with retries per ``invalid_seeds``) and execute the plan.

    The assembler is appended to ``started`` before it runs, so the caller can tell
    whether workers were left behind even when this raises.
    """
    user_seeds = usable_seeds(seeds, target, in_place=in_place, invalid_seeds=invalid_seeds,
                              warn=warn)
    all_seeds: list[Seed] = [NullSeed(), *user_seeds]
    stats.seeds = len(all_seeds)
    for seed in all_seeds:
        seed.prepare(target)
    mask = null_mask(index)
    cancelled = threading.Event()
    attempt = 1
    # Seed data is hashed again as it is written. When an invalid seed can only fail the
    # run and the output is a temporary file, that check alone has the same outcome
    # (an error, nothing replaced) at half the reading and hashing; the up-front
    # validation is needed to re-plan (skip, regenerate) and, with -k, to fail before
    # anything is written.
    validate_first = invalid_seeds != "fail" or in_place
    while True:
        plan = make_plan(index, all_seeds, mask)
        if not validate_first:
            break
        prefix = f"Attempt {attempt}: Validating "

        def validating_bar(total: int, prefix: str = prefix) -> Progress:
            return progress_factory(prefix, total)

        invalid = validate_plan(plan, index, workers=workers, cancelled=cancelled.is_set,
                                progress=validating_bar)
        if not invalid:
            break
        if invalid_seeds == "fail":
            raise _invalid_error(invalid[0])
        for seed in invalid:
            if invalid_seeds == "skip":
                warn(f"skipping invalid seed {seed.name}: its data doesn't match its index")
                continue
            if getattr(seed, "regenerated", False):
                raise SeedInvalidError(
                    f"seed index for {seed.name} doesn't match its data, even after "
                    "regenerating it (is the seed changing?)"
                )
            number = all_seeds.index(seed)
            with progress_factory(f"Attempt {attempt}: Chunking Seed {number} ", 0) as bar:
                seed.regenerate(workers=workers, progress=bar)
        attempt += 1
    target.size_to_blob()
    self_seed = SelfSeed(index)
    self_seed.prepare(target)
    bar = progress or progress_factory(f"Attempt {attempt}: Assembling ", len(index))
    assembler = Assembler(index, target, source, plan, self_seed, bar,
                          repair_bad_seed_chunks=invalid_seeds == "regenerate",
                          validated=validate_first)
    started.append(assembler)
    try:
        counters = assembler.execute(assembly_threads(source, workers))
    finally:
        if progress is None:
            bar.close()
    add_counts(stats, counters)


def _invalid_error(seed: Seed) -> DesyncError:
    make = getattr(seed, "invalid_error", None)
    if make is not None:
        return make()  # type: ignore[no-any-return]
    return SeedInvalidError(f"seed index for {seed.name} doesn't match its data")


def _is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


__all__ = [
    "INVALID_SEED_ACTIONS",
    "Assembler",
    "ExtractStats",
    "Target",
    "WorkerPool",
    "check_output",
    "extract",
    "open_target",
    "temp_name",
    "usable_seeds",
]
