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

Execution (:class:`Assembler`) has two phases. The first writes the seed segments and
every single chunk that is not a repeat of an earlier one; the second the repeats,
which by then are all copies (or clones) of their first occurrence - the self-seed.
Tasks are seed segments and runs of consecutive single chunks, done with positional
I/O on the shared target descriptor.

Speed (``README`` "Performance"; 400 MB from a local store on the 2-core benchmark
machine: ~0.6 s, casync ~1.4 s):

* with local stores and plain file seeds, the first phase runs on forked worker
  processes, one per CPU (:class:`ForkedWorkers`): measured, two threads spent ~0.5 s
  more CPU per 400 MB than one, passing the interpreter lock back and forth;
  processes share nothing at run time. Otherwise (remote stores, plugin seeds) it runs
  on ``-n`` threads, like the second phase;
* runs of single chunks from a plain store into a new file are batches
  (:class:`StoreBatches`): each chunk file is read into a reused buffer and zstd-decoded
  straight into its place in the run, the run is verified with one call of an 8-lane
  SHA-512/256 kernel (:mod:`desync_core.batchhash`, ~3x OpenSSL's speed per core) and
  written with one ``pwrite``. Anything unusual falls back to the chunk-by-chunk path,
  which reports errors exactly as before;
* memory stays bounded: a few MiB of buffers per worker, at most ``2 * workers``
  queued thread tasks, task numbers (4 bytes each) for the processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import queue
import secrets
import select
import signal
import stat
import struct
import sys
import threading
import time
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
from desync_core.stores.chunk import COMPRESSED, UNCOMPRESSED, ZSTD_MAGIC, ChunkCodec
from desync_core.stores.wrappers import (
    RetryingStore,
    VerifyingStore,
    read_sized,
    unexpected_size,
)

#: What to do with seeds whose data does not match their index (``extract.md`` §4).
INVALID_SEED_ACTIONS = ("fail", "skip", "regenerate")
#: A task of single chunks covers at most this many chunks / bytes (load balancing).
BATCH_CHUNKS = 8
BATCH_BYTES = 1024 * 1024
#: With batches (:class:`StoreBatches`) or worker processes, runs of single chunks are
#: larger (fewer calls, full kernel lanes), but at least TASKS_PER_WORKER per worker.
#: Measured on the 400 MB benchmark: 2, 4 and 8 MiB take the same CPU time; 1 MiB
#: (~15 chunks, the kernel's lanes unevenly loaded) takes more.
LOCAL_BATCH_BYTES = 4 * 1024 * 1024
LOCAL_BATCH_CHUNKS = 256
TASKS_PER_WORKER = 8
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
    ``RetryingStore`` over any transport that declares ``returns_stored_bytes``, with
    the standard codec): the raw chunk is read
    through the retrying layer, zstd-decoded into a per-thread buffer with libzstd's
    one-shot API (through ctypes, which releases the GIL, so workers overlap on all
    cores; the buffer bounds the output to the size the index gives), then size-checked
    and hash-verified exactly as ``VerifyingStore`` does (same errors, ``skip-verify``
    honoured). Every other chain (router, failover, cache, other codecs) goes through
    ``get_chunk().data()``.
    """

    def __init__(self, verifier: VerifyingStore, codec: ChunkCodec, max_size: int) -> None:
        #: the hash check (and the store named in errors) are the verifier's own
        self.verifier = verifier
        self.raw: RetryingStore = verifier.inner
        self.codec = codec
        self.sum = verifier.digest.sum
        self.skip_verify = verifier.skip_verify
        self.max_size = max_size
        self._local = threading.local()

    @classmethod
    def for_source(cls, source: Any, index: Index) -> DirectFetcher | None:
        """A fetcher for ``source`` if it is a single verified store, else None."""
        # The core's own wrappers (every store opened by a Context has them), over a
        # transport of any type that declares it returns its stored bytes.
        if type(source) is not VerifyingStore or type(source.inner) is not RetryingStore:
            return None
        if not getattr(source.inner.inner, "returns_stored_bytes", False):
            return None
        codec = getattr(source.inner.inner, "codec", None)
        if type(codec) is not ChunkCodec or codec not in (COMPRESSED, UNCOMPRESSED):
            return None
        return cls(source, codec, index.chunk_size_max)

    def fetch(self, chunk_id: bytes, size: int) -> bytes | bytearray | memoryview:
        """The verified plain data of a chunk of ``size`` bytes (valid until the next
        fetch on this thread)."""
        stored = self.raw.get_chunk(chunk_id).encoded(self.codec)
        try:
            if self.codec.compressed and bytes(stored[:4]) == ZSTD_MAGIC and size <= self.max_size:
                data: bytes | bytearray | memoryview = self._zstd_into(stored, size)
            else:
                data = self.codec.decode(stored, chunk_id, size)
        except ChunkInvalidError as exc:
            raise self.verifier.named(chunk_id, exc) from exc
        except ValueError as exc:  # zstd errors
            raise ChunkInvalidError(chunk_id, cause=str(exc), store=self.raw) from exc
        if len(data) != size:
            raise unexpected_size(chunk_id, len(data), size)
        self.verifier.check(chunk_id, data)
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


class StoreBatches:
    """Runs of consecutive chunks fetched from one store, verified in one call, written
    with one ``pwrite`` (the fast path of the single-chunk path, ``extract.md`` §1.2).

    For a blank target (nothing to check in place) and the store chain
    :class:`DirectFetcher` handles: every chunk's stored bytes are read (straight from
    the file for a local store, into a reused buffer), zstd-decoded into its place in
    one buffer covering the run, and the whole run is hashed with the 8-lane SHA-512/256
    kernel (:mod:`desync_core.batchhash`) and written at once. Per chunk that leaves
    three system calls and one ctypes call: no Python objects for the data.

    Anything unexpected (a missing or unreadable chunk file, other compression,
    decoding errors, a wrong size or hash) makes :meth:`run` return False without
    writing: the caller then takes the run chunk by chunk through
    :class:`DirectFetcher`, which raises the error the user sees, with the same message
    as without batches.
    """

    def __init__(self, direct: DirectFetcher, index: Index, target: Target) -> None:
        self.direct = direct
        self.index = index
        self.target = target
        self.ids = index.ids
        self.ends = index.ends
        store = direct.raw.inner
        self.codec = direct.codec
        # Chunk files of stores that declare them (``local_chunk_file``) are read
        # directly; other stores through their transport (with the retrying layer).
        self.chunk_file: Callable[[str], str | None] | None = None
        if store.local_chunk_file("0" * 64) is not None:
            self.chunk_file = store.local_chunk_file
        self.verify = not direct.skip_verify
        self.sum = direct.sum
        self.kernel: Any = None
        if self.verify and index.digest.hashlib_name == "sha512_256":
            # Loaded here, before worker processes are forked, so that they share it.
            from desync_core.batchhash import native_kernel

            self.kernel = native_kernel()

    @classmethod
    def for_assembler(cls, direct: DirectFetcher | None, index: Index,
                      target: Target) -> StoreBatches | None:
        """Batches for a blank target and a direct store chain, else None."""
        if direct is None or not target.blank or not zstd.available():
            return None
        return cls(direct, index, target)

    def new_state(self) -> BatchState:
        """Buffers and contexts for one worker."""
        return BatchState(self)

    def run(self, lo: int, hi: int, state: BatchState, counters: ExtractStats,
            skip: np.ndarray | None = None) -> bool:
        """Fetch, verify and write chunks ``lo..hi-1`` except where ``skip[k]`` is set
        (repeats, left for later); False (nothing written) if any chunk needs the
        careful path."""
        ends = self.ends
        start = int(ends[lo - 1]) if lo else 0
        stops = ends[lo:hi] - start  # chunk ends within the run
        starts = np.empty(hi - lo, dtype=np.int64)
        starts[0] = 0
        starts[1:] = stops[:-1]
        ids = self.ids[32 * lo : 32 * hi]
        keep: np.ndarray | None = None
        if skip is not None and skip[lo:hi].any():
            keep = ~skip[lo:hi]
            picked = np.flatnonzero(keep)
            if not len(picked):
                return True
            run_starts, run_stops = starts, stops
            starts, stops = starts[picked], stops[picked]
            ids = np.frombuffer(ids, dtype=np.uint8).reshape(-1, 32)[picked].tobytes()
        total = int(stops[-1])
        buf = state.buffer(total + 1)  # +1: decoding one byte too many reveals long data
        if not self._fetch(ids.hex(), starts.tolist(), stops.tolist(), buf, state):
            return False
        if self.verify:
            lengths = stops - starts
            if state.hasher is not None:
                sums = state.hasher.sums(buf, starts, lengths)
            else:
                view = memoryview(buf)
                sums = b"".join(self.sum(view[a:b]) for a, b in zip(starts.tolist(),
                                                                      stops.tolist()))
            if sums != ids:
                return False
        view = memoryview(buf)
        fd = self.target.fd
        if keep is None:
            # (Decoding straight into a shared mapping of the output instead, with or
            # without MADV_POPULATE_WRITE, was measured: the page faults cost what the
            # copy saves.)
            pwrite_all(fd, view[:total], start)
        else:  # the pieces between skipped chunks
            for first, stop in runs(keep, 0, hi - lo, run_stops, 1 << 62, hi - lo):
                a, b = int(run_starts[first]), int(run_stops[stop - 1])
                pwrite_all(fd, view[a:b], start + a)
        counters.chunks_from_store += len(starts)
        counters.bytes_from_store += int((stops - starts).sum())
        return True

    def _fetch(self, hexids: str, starts: list[int], stops: list[int], buf: np.ndarray,
               state: BatchState) -> bool:
        """Decode chunk ``k`` (its id is ``hexids[64 k : 64 k + 64]``) into
        ``buf[starts[k] : stops[k]]``, for each; False at the first problem."""
        compressed = self.codec.compressed
        base = state.address(buf)
        if self.chunk_file is not None:
            # The loop runs once per chunk: few calls, few temporary objects.
            chunk_file = self.chunk_file
            raw_view = [state.raw_view]
            magic = state.raw_view[:4]
            raw_addr = state.raw_addr
            raw_cap = len(state.raw_view)
            zstd_decode, dctx = state.decoder.raw_function()
            flags = os.O_RDONLY | os.O_CLOEXEC
            out = memoryview(buf)
            open_, readv, close = os.open, os.readv, os.close
            for k, (a, b) in enumerate(zip(starts, stops)):
                path = chunk_file(hexids[64 * k : 64 * k + 64])
                if path is None:
                    return False
                try:
                    fd = open_(path, flags)
                except OSError:
                    return False
                try:
                    n = readv(fd, raw_view if compressed else [out[a : b + 1]])
                except OSError:
                    return False
                finally:
                    close(fd)
                if compressed:
                    # A file filling the buffer is larger than any valid chunk file;
                    # other formats (xz, gzip) are left to the careful path. Success
                    # returns the size, errors are huge numbers.
                    if n >= raw_cap or magic != ZSTD_MAGIC or zstd_decode(
                            dctx, base + a, b - a + 1, raw_addr, n) != b - a:
                        return False
                elif n != b - a:
                    return False  # a short read could mean a short file: be careful
            return True
        decode = state.decoder.decode
        raw = self.direct.raw
        codec = self.codec
        view = memoryview(buf)
        for k, (a, b) in enumerate(zip(starts, stops)):
            chunk_id = bytes.fromhex(hexids[64 * k : 64 * k + 64])
            try:
                stored = raw.get_chunk(chunk_id).encoded(codec)
            except (DesyncError, OSError):
                return False
            if compressed:
                if bytes(stored[:4]) != ZSTD_MAGIC:
                    return False
                src = np.frombuffer(stored, dtype=np.uint8)
                if decode(state.address(src), len(src), base + a, b - a + 1) != b - a:
                    return False
            else:
                if len(stored) != b - a:
                    return False
                view[a:b] = stored
        return True


class BatchState:
    """One worker's buffers for :class:`StoreBatches` (not shared between threads)."""

    def __init__(self, batches: StoreBatches) -> None:
        from desync_core.batchhash import BatchHasher

        self._buf = np.empty(0, dtype=np.uint8)
        # A stored chunk is at most a few bytes longer than the largest chunk (zstd's
        # worst case); a file that fills this buffer is left to the careful path.
        raw = np.empty(zstd_bound(batches.index.chunk_size_max) + 4096, dtype=np.uint8)
        self.raw_view = memoryview(raw)
        self.raw_addr = self.address(raw)
        self._raw = raw
        self.decoder = zstd.RawDecoder()
        self.hasher = BatchHasher(batches.kernel) if batches.kernel is not None else None

    def buffer(self, size: int) -> np.ndarray:
        """A buffer of at least ``size`` bytes (reused; grows as needed)."""
        if len(self._buf) < size:
            self._buf = np.empty(size, dtype=np.uint8)
        return self._buf

    @staticmethod
    def address(arr: np.ndarray) -> int:
        """Address of an array's data."""
        return arr.__array_interface__["data"][0]  # type: ignore[no-any-return]


def zstd_bound(size: int) -> int:
    """Upper bound of zstd's output for ``size`` input bytes (``ZSTD_COMPRESSBOUND``)."""
    return size + (size >> 8) + ((128 * 1024 - size) >> 11 if size < 128 * 1024 else 0)


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
    the seeds are plain files (:class:`ForkedWorkers`: no interpreter lock between
    workers), else on threads. Then the repeated chunks, on threads: by then the first
    copy of each is complete in the target, so every repeat is copied (or cloned) from
    it - the self-seed - instead of being fetched again.

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
        for remote stores small runs keep many fetches in flight till the end.
        """
        local_batches = self.batches is not None and self.batches.chunk_file is not None
        if processes <= 1 and not local_batches:
            return BATCH_BYTES, BATCH_CHUNKS
        workers = max(workers, processes)
        fetched = single if repeats is None else single & ~repeats
        total = int(np.diff(self.index.ends, prepend=0)[fetched].sum())
        size = min(LOCAL_BATCH_BYTES, max(BATCH_BYTES, total // (TASKS_PER_WORKER * workers)))
        return size, LOCAL_BATCH_CHUNKS

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
        pool = WorkerPool(workers, self.cancelled)
        try:
            pool.run(tasks, self.run_task, make_state)
        finally:
            self.abandoned = self.abandoned or pool.abandoned

    def _run_forked(self, tasks: list[Task], processes: int,
                    all_counters: list[ExtractStats]) -> list[Task]:
        """Run ``tasks`` on worker processes; returns those no worker finished (a worker
        failed or died: running them again on threads raises its error, or completes
        them)."""
        received = ExtractStats()
        all_counters.append(received)
        state: WorkerState | None = None

        def run(i: int, counters: ExtractStats) -> None:  # in a worker process
            nonlocal state
            if state is None:
                self.progress = Progress()  # the parent reports progress
                state = WorkerState(counters, self.batches)
            state.counters = counters
            self.run_task(tasks[i], state)

        def finished(i: int, counters: ExtractStats) -> None:  # in this process
            add_counts(received, counters)
            task = tasks[i]
            if isinstance(task, tuple):
                self.progress.update(self.mark_run(task[0], task[1]))
            else:
                assert isinstance(task, SeedSegment)
                self.self_seed.mark(task.first, task.count)
                self.progress.update(task.count)

        left = ForkedWorkers(processes).run(len(tasks), run, finished)
        return [tasks[i] for i in left]


def runs(mask: np.ndarray, lo: int, hi: int, ends: np.ndarray, max_bytes: int,
         max_chunks: int) -> Iterator[tuple[int, int]]:
    """Runs of consecutive set positions of ``mask[lo:hi]``, as ``(first, stop)``, cut
    into pieces of at most ``max_chunks`` chunks and ``max_bytes`` bytes (at least one
    chunk each)."""
    padded = np.zeros(hi - lo + 2, dtype=bool)
    padded[1:-1] = mask[lo:hi]
    edges = (np.flatnonzero(padded[1:] != padded[:-1]) + lo).tolist()
    for first, stop in zip(edges[0::2], edges[1::2]):
        while first < stop:
            start = int(ends[first - 1]) if first else 0
            by_bytes = int(np.searchsorted(ends, start + max_bytes, side="right"))
            end = min(stop, first + max_chunks, max(by_bytes, first + 1))
            yield first, end
            first = end


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


class ForkedWorkers:
    """Runs numbered tasks on forked worker processes (Linux), for CPU-bound assembly.

    Threads share one interpreter lock: measured on the 2-core benchmark machine, the
    hand-offs between two extract threads cost ~0.35 s of user and ~0.17 s of system
    time per 400 MB. Forked workers share nothing at run time. They inherit the plan,
    the open target, seeds and stores (all positional I/O on shared descriptors) and
    take task numbers from one pipe: the parent writes 4-byte numbers in atomic pieces,
    and every read of 4 bytes by a worker takes exactly one, so the tasks balance over
    the workers without locks. Each finished task is reported with its counters as one
    atomic record on a second pipe; the parent applies them (progress, self-seed
    marks). Workers ignore SIGINT and SIGTERM (the parent decides), die with the parent
    (``PR_SET_PDEATHSIG``), and stop at their first failure; the parent then stops the
    others and returns the tasks nobody finished, for the caller to run again where the
    error can be raised as usual.
    """

    _RECORD = struct.Struct("<ii" + "q" * len(_COUNTERS))

    def __init__(self, processes: int, *, pipe_size: int = 1 << 20) -> None:
        self.processes = processes
        #: Capacity asked for the task pipe; numbers that do not fit are written as
        #: workers take the others.
        self.pipe_size = pipe_size

    def run(self, count: int, run: Callable[[int, ExtractStats], None],
            finished: Callable[[int, ExtractStats], None]) -> list[int]:
        """Run tasks ``0..count-1`` as ``run(i, counters)`` in the workers; calls
        ``finished(i, counters)`` here as each completes. Returns the unfinished tasks
        (none unless a worker failed or died)."""
        done = bytearray(count)
        numbers = np.arange(count, dtype="<u4").tobytes()
        task_r, task_w = os.pipe2(os.O_CLOEXEC)
        res_r, res_w = os.pipe2(os.O_CLOEXEC)
        pids: list[int] = []
        try:
            with contextlib.suppress(OSError):  # room for every number at once, ideally
                fcntl.fcntl(task_w, fcntl.F_SETPIPE_SZ, min(len(numbers), self.pipe_size))
            os.set_blocking(task_w, False)
            sent = _write_some(task_w, numbers, 0)
            prctl = _prctl()
            parent = os.getpid()
            for _ in range(min(self.processes, count)):
                # An interrupt must not be handled during the fork: CPython would run
                # the handler inside an at-fork callback (logging registers some) and
                # discard its exception. The worker inherits the mask and ignores the
                # signals before releasing them.
                held = _hold_interrupts()
                try:
                    pid = os.fork()
                    if pid == 0:  # the worker; it never returns
                        self._worker(task_r, task_w, res_r, res_w, run, prctl, parent, held)
                    pids.append(pid)
                finally:
                    _release_interrupts(held)
            os.close(task_r)
            task_r = -1
            os.close(res_w)
            res_w = -1
            if sent == len(numbers):
                os.close(task_w)
                task_w = -1
            pending = b""
            failed = False
            while True:
                if task_w >= 0:
                    readable, _w, _x = select.select([res_r], [task_w], [])
                    sent = _write_some(task_w, numbers, sent)
                    if sent == len(numbers):
                        os.close(task_w)
                        task_w = -1
                    if not readable:
                        continue
                data = os.read(res_r, 64 * self._RECORD.size)
                if not data:
                    break  # every worker has exited
                pending += data
                usable = len(pending) - len(pending) % self._RECORD.size
                for i, status, *values in self._RECORD.iter_unpack(pending[:usable]):
                    if status:
                        failed = True
                        continue
                    done[i] = 1
                    finished(i, ExtractStats(**dict(zip(_COUNTERS, values))))
                pending = pending[usable:]
                if failed:
                    _kill(pids)  # their pipe ends close: the loop ends soon
                    if task_w >= 0:
                        os.close(task_w)
                        task_w = -1
        except BaseException:
            _kill(pids)
            raise
        finally:
            for fd in (task_r, task_w, res_r, res_w):
                if fd >= 0:
                    os.close(fd)
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        return [i for i in range(count) if not done[i]]

    def _worker(self, task_r: int, task_w: int, res_r: int, res_w: int,
                run: Callable[[int, ExtractStats], None], prctl: Any, parent: int,
                held: Any) -> None:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _release_interrupts(held)
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                return  # the parent is already gone
            os.close(task_w)
            os.close(res_r)
            gc.disable()
            while True:
                number = os.read(task_r, 4)
                if len(number) < 4:
                    break
                i = int.from_bytes(number, "little")
                counters = ExtractStats()
                status = 0
                try:
                    run(i, counters)
                except BaseException:
                    status = 1
                os.write(res_w, self._RECORD.pack(
                    i, status, *[getattr(counters, name) for name in _COUNTERS]))
                if status:
                    break
            code = 0
        finally:
            os._exit(code)


_PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    """libc's ``prctl`` (None where there is none)."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def _write_some(fd: int, data: bytes, sent: int) -> int:
    """Write ``data[sent:]`` to a non-blocking pipe in atomic 4 KiB pieces (whole task
    numbers) until it is full; returns the new ``sent``."""
    while sent < len(data):
        try:
            sent += os.write(fd, data[sent : sent + 4096])
        except BlockingIOError:
            break
    return sent


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def temp_name(output: str) -> str:
    """``<dir>/.<basename>.<random>``, next to the output (same filesystem)."""
    directory, base = os.path.split(os.path.abspath(output))
    return os.path.join(directory, f".{base}.{secrets.randbits(32)}")


#: A temporary file unlocked and untouched this long belongs to a dead extract.
STALE_TEMP_SECONDS = 10.0


def remove_stale_temps(output: str) -> list[str]:
    """Remove temporary files of earlier extracts of ``output`` that were killed
    (``kill -9``, power loss): ``.<basename>.<digits>`` regular files next to it that
    no process holds locked (a running extract holds an ``flock`` on its temporary
    file from the moment it creates it) and that were not modified in the last
    :data:`STALE_TEMP_SECONDS`. Returns the paths removed."""
    directory, base = os.path.split(os.path.abspath(output))
    prefix = f".{base}."
    removed = []
    try:
        names = [n for n in os.listdir(directory)
                 if n.startswith(prefix) and n[len(prefix):].isdigit()]
    except OSError:
        return removed
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_TEMP_SECONDS:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live extract holds it
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


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


def assembly_processes(source: Any, workers: int, seeds: Sequence[Seed]) -> int:
    """Worker processes for the first assembly phase: one per CPU (at most ``-n``) when
    every store and every seed declares ``fork_safe`` (and the stores ``is_local``);
    else 1 (threads only).

    Remote stores are waited for, not computed on, and their connections must not be
    shared by several processes; seeds may hold such connections too.
    """
    from desync_core.stores.wrappers import iter_members
    from desync_core.workers import default_workers

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return 1
    if not all(getattr(seed, "fork_safe", False) for seed in seeds):
        return 1
    members = list(iter_members(source))
    if not members or not all(getattr(m, "fork_safe", False) and getattr(m, "is_local", False)
                              for m in members):
        return 1
    # More processes than CPUs was measured slower (3 and 4 on 2 CPUs: more CPU time,
    # no shorter runs).
    return max(1, min(workers, default_workers()))


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
    if not in_place:
        for stale in remove_stale_temps(output):
            warn(f"removed {stale}, left by an earlier extract that did not finish")
    path = output if in_place else temp_name(output)
    target: Target | None = None
    ok = False
    assemblers: list[Assembler] = []
    # SIGINT/SIGTERM wait while the output is created: once it exists, the clean-up
    # below must know about it, or an interrupt right then would leave it behind.
    held = _hold_interrupts()
    try:
        target = open_target(index, path, in_place=in_place, create_new=not in_place)
        if not in_place:
            # Marks the file as in use (see remove_stale_temps); the lock goes with the
            # last descriptor of this file, i.e. when this process and its workers end.
            fcntl.flock(target.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _release_interrupts(held)
        held = None
        target.display = output
        stats.blocksize = target.blocksize
        if len(index):
            _assemble(index, target, source, stats, list(seeds), in_place=in_place,
                      workers=workers, invalid_seeds=invalid_seeds, progress=progress,
                      progress_factory=progress_factory, warn=warn, started=assemblers)
        else:
            target.size_to_blob()
        if not in_place:
            try:
                os.replace(path, output)
            except OSError as exc:
                raise StoreError(f"renaming {path} to {output}: {exc.strerror}") from exc
        ok = True
    finally:
        if target is not None:
            if not ok and not in_place:
                # Remove the temporary file first: a second interrupt during the rest of
                # the clean-up must not leave it behind. (After an interrupt that came
                # just after the rename, there is nothing left to remove.)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            # Workers left behind by an interruption may still use the descriptor;
            # closing it could let a new file reuse the number under their writes.
            if not any(a.abandoned for a in assemblers):
                os.close(target.fd)
        if held is not None:
            _release_interrupts(held)
    return stats


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _hold_interrupts() -> Any:
    """Block SIGINT and SIGTERM for this thread; returns what :func:`_release_interrupts`
    needs (None where signals cannot be blocked). Signals that arrive meanwhile are
    delivered when they are released."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)


def _release_interrupts(held: Any) -> None:
    """Restore the signal mask saved by :func:`_hold_interrupts`."""
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


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
        counters = assembler.execute(assembly_threads(source, workers),
                                     assembly_processes(source, workers, all_seeds))
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
