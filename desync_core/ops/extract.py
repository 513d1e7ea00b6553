"""``extract``: assemble a blob from its index (``extract.md`` §1).

Without ``-k`` the blob is assembled in a temporary file next to the output and
renamed onto it only when complete and verified, so the output is either untouched or
complete. With ``-k`` the output is written in place and kept on failure; a rerun
hashes what is there and fetches only what is missing or wrong.

Every chunk from a store is hash-verified (by the store chain) and size-checked
against the index. Runs of null chunks (``max`` zero bytes) are never fetched: on a
blank target they stay holes (a sparse file).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from desync_core.errors import ChunkInvalidError, StoreError, UsageError
from desync_core.index import Index
from desync_core.progress import Progress

#: Largest write of zeros at once when filling null chunks on a non-blank target.
_ZERO_BLOCK = bytes(1024 * 1024)


@dataclass
class ExtractStats:
    """desync's ``--print-stats`` for extract (``extract.md`` §1.3)."""

    chunks_from_seeds: int = 0
    chunks_from_store: int = 0
    chunks_in_place: int = 0
    bytes_copied_from_seeds: int = 0
    bytes_cloned_from_seeds: int = 0
    blocksize: int = 4096
    bytes_total: int = 0
    chunks_total: int = 0
    seeds: int = 1
    null_chunks: int = 0
    bytes_from_store: int = 0

    def as_json(self) -> dict[str, int]:
        """Keys as desync prints them (``chunks-from-store``…)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


@dataclass
class Target:
    """The file being assembled."""

    fd: int
    path: str
    blank: bool
    device: bool
    blocksize: int


def _open_target(path: str, length: int, *, in_place: bool) -> Target:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    device = st is not None and (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode))
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory")
    flags = os.O_RDWR | os.O_CLOEXEC | (0 if device else os.O_CREAT)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise StoreError(f"opening {path}: {exc.strerror}") from exc
    try:
        if device:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size < length:
                raise UsageError(
                    f"{path} is too small ({size} bytes) for the blob ({length} bytes)"
                )
            blank = False
        else:
            blank = st is None or st.st_size == 0 or not in_place
            os.ftruncate(fd, length)
        blocksize = os.fstat(fd).st_blksize or 4096
    except BaseException:
        os.close(fd)
        raise
    return Target(fd, path, blank, device, blocksize)


@dataclass
class Step:
    """One unit of the plan: a run of consecutive index chunks and where they come from.

    ``source`` is ``"store"`` (one chunk fetched from the store chain), ``"null"``
    (a run of null chunks) or a seed object with ``write(target, step)``.
    """

    first: int
    count: int
    start: int
    end: int
    source: Any


def plan_null_and_store(index: Index, null_id: bytes) -> list[Step]:
    """The plan without seeds: null-chunk runs, and one store step per other chunk."""
    steps: list[Step] = []
    ends = index.ends.tolist()
    ids = index.ids
    start = 0
    i = 0
    n = len(ends)
    while i < n:
        if ids[32 * i : 32 * i + 32] == null_id:
            j = i
            while j < n and ids[32 * j : 32 * j + 32] == null_id:
                j += 1
            steps.append(Step(i, j - i, start, ends[j - 1], "null"))
            start = ends[j - 1]
            i = j
            continue
        steps.append(Step(i, 1, start, ends[i], "store"))
        start = ends[i]
        i += 1
    return steps


class Assembler:
    """Executes a plan on a target with a pool of threads."""

    def __init__(self, index: Index, target: Target, source: Any, stats: ExtractStats,
                 progress: Progress) -> None:
        self.index = index
        self.target = target
        self.source = source
        self.stats = stats
        self.progress = progress
        self.sha = index.digest.sum

    def _in_place(self, step: Step) -> bool:
        """On a non-blank target, whether the chunk is already there."""
        if self.target.blank:
            return False
        size = step.end - step.start
        data = os.pread(self.target.fd, size, step.start)
        return len(data) == size and self.sha(data) == self.index.chunk_id(step.first)

    def run_store_step(self, step: Step) -> None:
        """Fetch one chunk (unless already in place) and write it at its offset."""
        if self._in_place(step):
            self.stats.chunks_in_place += 1
            return
        chunk_id = self.index.chunk_id(step.first)
        size = step.end - step.start
        data = self.source.get_chunk(chunk_id).data()
        if len(data) != size:
            raise ChunkInvalidError(chunk_id, cause=f"unexpected size for chunk {chunk_id.hex()}: "
                                    f"{len(data)} bytes instead of {size}")
        self._pwrite(data, step.start)
        self.stats.chunks_from_store += 1
        self.stats.bytes_from_store += size

    def run_null_step(self, step: Step) -> None:
        """Null chunks: holes on a blank target, zeros otherwise (unless already zero)."""
        self.stats.null_chunks += step.count
        if self.target.blank:
            return
        pos = step.start
        while pos < step.end:
            n = min(len(_ZERO_BLOCK), step.end - pos)
            if os.pread(self.target.fd, n, pos) != _ZERO_BLOCK[:n]:
                self._pwrite(_ZERO_BLOCK[:n], pos)
            pos += n

    def _pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.pwrite(self.target.fd, view, offset)
            except OSError as exc:
                raise StoreError(f"writing {self.target.path}: {exc.strerror}") from exc
            view = view[written:]
            offset += written

    def run_step(self, step: Step) -> int:
        """Execute one step; returns the number of chunks it covered."""
        if step.source == "store":
            self.run_store_step(step)
        elif step.source == "null":
            self.run_null_step(step)
        else:
            step.source.write(self, step)
        return step.count

    def execute(self, steps: list[Step], workers: int) -> None:
        """Run all steps with ``workers`` threads, at most a bounded number in flight."""
        if workers <= 1:
            for step in steps:
                self.progress.update(self.run_step(step))
            return
        run_parallel(steps, self.run_step, workers, self.progress.update)


def run_parallel(items: list[Any], fn: Callable[[Any], int], workers: int,
                 done: Callable[[int], None]) -> None:
    """Apply ``fn`` to every item with a thread pool; the first error cancels the rest."""
    limit = workers * 4
    pending: deque[Future[int]] = deque()
    pool = ThreadPoolExecutor(workers)
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            while len(pending) >= limit or (pending and pending[0].done()):
                done(pending.popleft().result())
        while pending:
            done(pending.popleft().result())
    except BaseException:
        for f in pending:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def extract(
    index: Index,
    output: str,
    source: Any,
    *,
    in_place: bool = False,
    workers: int = 10,
    progress: Progress | None = None,
    plan: Callable[[Index, Target], list[Step]] | None = None,
) -> ExtractStats:
    """Assemble the blob described by ``index`` into ``output``.

    Args:
        index: the blob's index.
        output: file (or, with ``in_place``, block device) to write.
        source: the store chain (a :class:`~desync_core.stores.wrappers.ChunkReader`).
        in_place: write directly into ``output`` and keep it on failure (``-k``).
        workers: concurrent chunk fetches and writes.
        progress: receives chunk counts.
        plan: builds the steps (seeds plug in here); default: null chunks + store.
    """
    check_output(output)
    progress = progress or Progress()
    is_device = _is_device(output)
    if is_device and not in_place:
        raise UsageError(f"{output} is a device: extracting to a device requires -k (--in-place)")
    stats = ExtractStats(bytes_total=index.length, chunks_total=len(index))
    path = output if in_place else temp_name(output)
    target = _open_target(path, index.length, in_place=in_place)
    stats.blocksize = target.blocksize
    ok = False
    try:
        steps = (plan or _default_plan)(index, target)
        Assembler(index, target, source, stats, progress).execute(steps, workers)
        ok = True
    finally:
        os.close(target.fd)
        if not ok and not in_place:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if not in_place:
        try:
            os.replace(path, output)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise StoreError(f"renaming {path} to {output}: {exc.strerror}") from exc
    return stats


def _default_plan(index: Index, target: Target) -> list[Step]:
    return plan_null_and_store(index, index.digest.null_chunk_id(index.chunk_size_max))


def _is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


__all__ = [
    "Assembler",
    "ExtractStats",
    "Step",
    "Target",
    "check_output",
    "extract",
    "plan_null_and_store",
    "run_parallel",
    "temp_name",
]
