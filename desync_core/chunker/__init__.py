"""Content-defined chunking identical to casync's (``chunking.md``).

Two kernels compute chunk boundaries: the numba kernel (default) and a pure-Python
reference. ``DESYNC_CHUNKER_KERNEL=python|numba`` demands one; a demanded kernel that
cannot run is an error, never a silent fallback.

Public API:

* :func:`find_cuts` - boundaries of an in-memory buffer;
* :func:`iter_chunks` - stream a file object or pipe, yielding chunk data;
* :func:`chunk_file` - boundaries of a file or block device, in parallel.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from functools import cache

import numpy as np

from desync_core.chunker.params import DEFAULT_PARAMS, WINDOW_SIZE, ChunkerParams
from desync_core.errors import UsageError

#: Bytes read per refill when streaming.
DEFAULT_BLOCK_SIZE = 1024 * 1024  # fits in L2: ~20% faster than 8 MiB blocks

KernelFn = Callable[[np.ndarray, int, bool, ChunkerParams], np.ndarray]


@cache
def kernel_name() -> str:
    """The kernel in use: ``numba`` unless ``DESYNC_CHUNKER_KERNEL`` says otherwise."""
    name = os.environ.get("DESYNC_CHUNKER_KERNEL", "numba").strip().lower() or "numba"
    if name not in ("numba", "python"):
        raise UsageError(f"DESYNC_CHUNKER_KERNEL must be 'numba' or 'python', not {name!r}")
    return name


@cache
def _kernel() -> KernelFn:
    if kernel_name() == "python":
        from desync_core.chunker import _reference

        def run_python(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
            cuts = _reference.find_cuts(bytes(buf[:n]), params, eof=eof)
            return np.array(cuts, dtype=np.int64)

        return run_python

    _numba = _load_numba_kernel()

    def run_numba(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
        out = np.empty(n // max(params.min, WINDOW_SIZE) + 2, dtype=np.int64)
        k = _numba.find_cuts(
            buf, n, eof, params.min, params.max, params.discriminator, params.fixed_size, out
        )
        return out[:k]

    return run_numba


def _load_numba_kernel():  # type: ignore[no-untyped-def]
    """Import the kernel and load it from numba's cache (compiling on the first run).

    numba's first compilation imports ``scipy.linalg`` (about 0.25 s) only to probe for
    BLAS, which the kernel never uses. The CLI process hides that module while the
    kernel loads; library users are left alone.
    """
    import desync_core

    block = desync_core.running_cli and "scipy" not in sys.modules
    if block:
        sys.modules["scipy.linalg.cython_blas"] = None  # type: ignore[assignment]
    try:
        from desync_core.chunker import _numba

        out = np.empty(4, dtype=np.int64)
        _numba.find_cuts(np.zeros(64, dtype=np.uint8), 64, True, 48, 64, 50, False, out)
    finally:
        if block:
            del sys.modules["scipy.linalg.cython_blas"]
    return _numba


def find_cuts(data: np.ndarray | bytes | bytearray | memoryview, params: ChunkerParams,
              *, eof: bool = True, length: int | None = None) -> np.ndarray:
    """End offsets (int64) of the chunks of ``data``, which starts at a chunk boundary.

    Args:
        data: the bytes; a numpy ``uint8`` array is used without copying.
        params: chunk sizes.
        eof: whether the data ends the stream. If not, a trailing piece that more data
            could still extend is left uncut; resume at the last offset returned.
        length: use only the first ``length`` bytes.
    """
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    n = len(buf) if length is None else length
    return _kernel()(buf, n, eof, params)


def warm_up() -> None:
    """Load (or compile) the kernel now, e.g. before forking worker processes."""
    find_cuts(np.zeros(256, dtype=np.uint8), ChunkerParams(64, 128, 256))


def iter_chunks(
    readinto: Callable[[memoryview], int | None],
    params: ChunkerParams = DEFAULT_PARAMS,
    *,
    offset: int = 0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[tuple[int, memoryview]]:
    """Chunk a stream, yielding ``(offset, data)`` for each chunk.

    Memory stays bounded: data is read ``block_size`` bytes at a time into a fresh
    buffer; each yielded ``memoryview`` keeps only its own block alive.

    Args:
        readinto: reads into the given buffer and returns the byte count, 0 at end of
            stream (``file.readinto``); short reads are fine.
        params: chunk sizes.
        offset: stream offset reported for the first byte.
        block_size: bytes per refill.
    """
    cap = max(block_size, 1) + params.max
    tail = np.empty(0, dtype=np.uint8)
    eof = False
    while not eof:
        buf = np.empty(cap, dtype=np.uint8)
        n = len(tail)
        buf[:n] = tail
        view = memoryview(buf)
        while n < cap:
            got = readinto(view[n:])
            if not got:
                eof = True
                break
            n += got
        if n == 0:
            return
        cuts = find_cuts(buf, params, eof=eof, length=n)
        prev = 0
        for cut in cuts.tolist():
            yield offset + prev, view[prev:cut]
            prev = cut
        offset += prev
        tail = buf[prev:n]


def _pread_cut_blocks(
    fd: int, start: int, size: int, params: ChunkerParams, block_size: int
) -> Iterator[np.ndarray]:
    """Absolute chunk ends from ``start`` (a chunk boundary) to ``size``, a block at a time."""
    cap = block_size + params.max
    buf = np.empty(cap, dtype=np.uint8)
    view = memoryview(buf)
    pos = start
    while pos < size:
        want = min(cap, size - pos)
        n = 0
        while n < want:
            got = os.preadv(fd, [view[n:want]], pos + n)
            if got <= 0:
                raise OSError(f"unexpected end of input at offset {pos + n}")
            n += got
        eof = pos + n >= size
        cuts = find_cuts(buf, params, eof=eof, length=n)
        if len(cuts) == 0:
            raise AssertionError("chunker made no progress")  # cap >= max guarantees one
        yield cuts + pos
        pos += int(cuts[-1])


def _part_cuts(path: str, start: int, stop: int, size: int, params: ChunkerParams,
               block_size: int) -> np.ndarray:
    """Worker task: chunk from ``start`` until the first cut at or beyond ``stop``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = []
        for cuts in _pread_cut_blocks(fd, start, size, params, block_size):
            beyond = int(np.searchsorted(cuts, stop))
            if beyond < len(cuts):
                pieces.append(cuts[: beyond + 1])
                break
            pieces.append(cuts)
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
    finally:
        os.close(fd)


def input_size(fd: int) -> int:
    """Size of a regular file or block device."""
    return os.lseek(fd, 0, os.SEEK_END)


def chunk_file(
    path: str,
    params: ChunkerParams = DEFAULT_PARAMS,
    *,
    workers: int = 1,
    executor: object = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Chunk ends of a regular file or block device, computed by ``workers`` processes.

    The file is split into parts (aligned to multiples of ``max`` so that long zero
    runs line up); each part is chunked as if a chunk started there. The parts are then
    stitched where their boundaries coincide: chunking is memoryless, so from a common
    boundary on both agree. Where they never coincide (e.g. periodic data), the main
    process keeps chunking sequentially until they do. The result is identical to a
    single sequential pass for every input and worker count.

    Args:
        path: file or block device.
        params: chunk sizes.
        workers: number of parts chunked concurrently.
        executor: a ``concurrent.futures`` executor to run parts on (defaults to a
            fork-based process pool created for this call).
        block_size: bytes read per refill.
        stats: if given, receives ``ChunksProduced`` (chunks computed by all parts,
            including discarded ones).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = input_size(fd)
        if size == 0:
            return np.empty(0, dtype=np.int64)
        part = -(-size // max(workers, 1))
        part = -(-part // params.max) * params.max
        if workers <= 1 or part < 4 * params.max or part < 1024 * 1024:
            cuts = np.concatenate(list(_pread_cut_blocks(fd, 0, size, params, block_size)))
            if stats is not None:
                stats["ChunksProduced"] = len(cuts)
            return cuts
        starts = list(range(0, size, part))
        parts = _run_parts(path, starts, part, size, params, block_size, executor, workers)
        produced = sum(len(c) for c in parts)
        result = _stitch(fd, starts, parts, size, params, block_size)
        if stats is not None:
            stats["ChunksProduced"] = produced + len(result)
        return result
    finally:
        os.close(fd)


def _run_parts(path: str, starts: list[int], part: int, size: int, params: ChunkerParams,
               block_size: int, executor: object, workers: int) -> list[np.ndarray]:
    from desync_core.workers import process_pool

    args = [(path, a, min(a + part, size), size, params, block_size) for a in starts]
    if executor is not None:
        futures = [executor.submit(_part_cuts, *a) for a in args]  # type: ignore[attr-defined]
        return [f.result() for f in futures]
    with process_pool(workers) as pool:
        futures = [pool.submit(_part_cuts, *a) for a in args]
        return [f.result() for f in futures]


def _stitch(fd: int, starts: list[int], parts: list[np.ndarray], size: int,
            params: ChunkerParams, block_size: int) -> np.ndarray:
    out = [parts[0]]
    pos = int(parts[0][-1])
    for start, cuts in zip(starts[1:], parts[1:]):
        last = int(cuts[-1])
        if pos >= last:
            continue  # an earlier resync already ran past this part
        if pos == start:
            out.append(cuts)
            pos = last
            continue
        j = int(np.searchsorted(cuts, pos))
        if cuts[j] == pos:
            out.append(cuts[j + 1 :])
            pos = last
            continue
        # Not aligned: chunk sequentially until a boundary coincides with this part's.
        for block in _pread_cut_blocks(fd, pos, size, params, block_size):
            common = np.flatnonzero(np.isin(block, cuts))
            if len(common):
                hit = int(common[0])
                out.append(block[: hit + 1])
                pos = int(block[hit])
                j = int(np.searchsorted(cuts, pos))
                out.append(cuts[j + 1 :])
                pos = last
                break
            out.append(block)
            pos = int(block[-1])
            if pos >= last:
                break
    return np.concatenate(out)


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_PARAMS",
    "ChunkerParams",
    "chunk_file",
    "find_cuts",
    "input_size",
    "iter_chunks",
    "kernel_name",
    "warm_up",
]
