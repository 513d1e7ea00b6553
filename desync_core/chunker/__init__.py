"""Content-defined chunking identical to casync's (``chunking.md``).

Three kernels compute chunk boundaries: the numba kernel (its machine code is cached
and loaded without numba, see ``_native``), a vectorised numpy one that needs no
compilation (``_vector``: small inputs while the numba kernel is not compiled yet) and
a pure-Python reference. ``DESYNC_CHUNKER_KERNEL=numba|vector|python`` demands one; a
demanded kernel that cannot run is an error, never a silent fallback. All give the
same boundaries.

Public API:

* :func:`find_cuts` - boundaries of an in-memory buffer;
* :func:`iter_chunks` - stream a file object or pipe, yielding chunk data;
* :func:`chunk_file` - boundaries of a file or block device, in parallel
  (``parallel.PartPipeline`` also runs ``make``'s hashing and storing).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np

from desync_core import kernelcache
from desync_core.chunker import _vector
from desync_core.chunker.params import (
    DEFAULT_PARAMS,
    WINDOW_SIZE,
    ChunkerParams,
    lemire_multiplier,
)
from desync_core.errors import UsageError

#: Bytes read per refill when streaming.
DEFAULT_BLOCK_SIZE = 1024 * 1024  # fits in L2: ~20% faster than 8 MiB blocks

KernelFn = Callable[[np.ndarray, int, bool, ChunkerParams], np.ndarray]

_log = logging.getLogger(__name__)


@cache
def kernel_name() -> str:
    """The kernel demanded by ``DESYNC_CHUNKER_KERNEL`` (``numba``, ``vector`` or
    ``python``), or ``auto`` (unset): the compiled kernel where it is cached or worth
    compiling, else the vectorised one (see :func:`warm_up`)."""
    name = os.environ.get("DESYNC_CHUNKER_KERNEL", "auto").strip().lower() or "auto"
    if name not in ("auto", "numba", "vector", "python"):
        raise UsageError("DESYNC_CHUNKER_KERNEL must be 'numba', 'vector' or 'python', "
                         f"not {name!r}")
    return name


def _min_chunk(params: ChunkerParams) -> int:
    """Smallest non-final chunk: sizes the output array of the kernel."""
    return max(params.max if params.fixed_size else max(params.min, WINDOW_SIZE), 1)


_kernel_lock = threading.Lock()
#: The kernel for the rest of the process, once chosen for good.
_chosen: KernelFn | None = None
#: Whether the compiled kernel's cache was found empty (looked at once per process).
_cache_missed = False
#: Bytes chunked by the vectorised kernel while the compiled one is missing.
_vector_bytes = 0


def _kernel(nbytes: int | None) -> KernelFn:
    """The kernel for ``nbytes`` more bytes of input (None: the best one, compiled now
    if need be); thread-safe, parts may start concurrently.

    Without ``DESYNC_CHUNKER_KERNEL``, the compiled kernel is used if it is cached.
    If not, up to :data:`~desync_core.kernelcache.SMALL_INPUT_BYTES` of input (in
    total, for the process) go through the vectorised kernel, which needs no
    compilation, and the ``desync`` command compiles the kernels for next time in the
    background; beyond, the kernel is compiled now (``DESYNC_KERNEL_BUILD`` changes
    this, see :mod:`desync_core.kernelcache`).
    """
    chosen = _chosen
    if chosen is not None:
        return chosen
    with _kernel_lock:
        return _choose(nbytes)


def _choose(nbytes: int | None) -> KernelFn:
    global _chosen, _cache_missed, _vector_bytes
    if _chosen is not None:
        return _chosen
    name = kernel_name()
    if name == "auto":
        mode = kernelcache.build_mode()  # validated even when the kernel is cached
        if not _cache_missed:
            native = _load_cached_native_kernel()
            if native is not None:
                _chosen = _native_runner(native)
                return _chosen
            _cache_missed = True
        small = nbytes is not None and _vector_bytes + nbytes <= kernelcache.SMALL_INPUT_BYTES
        if mode == "never" or (mode == "auto" and small):
            _vector_bytes += nbytes or 0
            kernelcache.start_background_build(Path(__file__).resolve().parent)
            return _vector.find_cuts
        kernelcache.note_large_input()
    _chosen = _load_kernel(name)
    return _chosen


def _load_kernel(name: str) -> KernelFn:
    if name == "python":
        from desync_core.chunker import _reference

        def run_python(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
            cuts = _reference.find_cuts(bytes(buf[:n]), params, eof=eof)
            return np.array(cuts, dtype=np.int64)

        return run_python
    if name == "vector":
        return _vector.find_cuts

    native = _load_native_kernel()
    if native is not None:
        return _native_runner(native)

    _numba = _load_numba_kernel()

    def run_numba(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
        out = np.empty(n // _min_chunk(params) + 2, dtype=np.int64)
        k = _numba.find_cuts(
            buf, n, eof, params.min, params.max, params.discriminator, params.fixed_size, out
        )
        return out[:k]

    return run_numba


def _native_runner(native: Callable[..., int]) -> KernelFn:
    """The cached machine code (``_native``) as a :data:`KernelFn`."""
    def run_native(buf: np.ndarray, n: int, eof: bool, params: ChunkerParams) -> np.ndarray:
        cap = n // _min_chunk(params) + 2
        out = np.empty(cap, dtype=np.int64)
        k = native(buf.ctypes.data, n, eof, params.min, params.max,
                   lemire_multiplier(params.discriminator), params.fixed_size,
                   out.ctypes.data, cap)
        return out[:k]

    return run_native


def _load_cached_native_kernel():  # type: ignore[no-untyped-def]
    """The compiled kernel if it is cached (nothing is compiled), else None."""
    try:
        from desync_core.chunker import _native

        return _native.load_cached()
    except Exception as exc:  # unusable cache or llvmlite: treated as a cache miss
        _log.debug("cached native kernel unavailable (%s)", exc)
        return None


def _load_native_kernel():  # type: ignore[no-untyped-def]
    """The numba kernel's cached machine code (see ``_native``), or None if unusable."""
    try:
        from desync_core.chunker import _native

        return _native.load_kernel()
    except Exception as exc:  # any failure: fall back to numba's dispatcher
        _log.debug("cached native kernel unavailable (%s); using numba's dispatcher", exc)
        return None


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
    return _run(None, data, params, eof, length)


def _run(kernel: KernelFn | None, data: np.ndarray | bytes | bytearray | memoryview,
         params: ChunkerParams, eof: bool, length: int | None) -> np.ndarray:
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if buf.dtype != np.uint8 or not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
    n = len(buf) if length is None else length
    if not 0 <= n <= len(buf):
        raise ValueError(f"length {n} outside the buffer (0..{len(buf)})")
    return (kernel or _kernel(n))(buf, n, eof, params)


def cuts_function(nbytes: int | None) -> Callable[..., np.ndarray]:
    """:func:`find_cuts` with the kernel chosen now for a whole input of ``nbytes``
    bytes (see :func:`warm_up`), for callers that chunk one input in many calls."""
    kernel = _kernel(nbytes)

    def bound(data: np.ndarray | bytes | bytearray | memoryview, params: ChunkerParams,
              *, eof: bool = True, length: int | None = None) -> np.ndarray:
        return _run(kernel, data, params, eof, length)

    return bound


def warm_up(nbytes: int | None = None) -> None:
    """Choose the kernel for an input of ``nbytes`` bytes, and load it now (e.g. before
    starting threads or forking worker processes).

    Without ``nbytes`` the compiled kernel is loaded, and compiled (then cached) if it
    is missing, unless ``DESYNC_CHUNKER_KERNEL`` demands another or
    ``DESYNC_KERNEL_BUILD=never``. With ``nbytes``, a small input on a fresh
    installation is chunked by the vectorised kernel instead (see :func:`_kernel`).
    """
    _kernel(nbytes)


def fill_from(readinto: Callable[[memoryview], int | None], view: memoryview,
              n: int = 0) -> tuple[int, bool]:
    """Read into ``view[n:]`` until ``view`` is full or the stream ends (short reads
    are fine); returns ``(bytes now in view, whether the stream ended)``."""
    while n < len(view):
        got = readinto(view[n:])
        if not got:
            return n, True
        n += got
    return n, False


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
    cap = max(block_size, 1) + params.longest_chunk
    tail = np.empty(0, dtype=np.uint8)
    eof = False
    while not eof:
        buf = np.empty(cap, dtype=np.uint8)
        buf[:len(tail)] = tail
        view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
        n, eof = fill_from(readinto, view, len(tail))
        if n == 0:
            return
        cuts = find_cuts(buf, params, eof=eof, length=n)
        prev = 0
        for cut in cuts.tolist():
            yield offset + prev, view[prev:cut]
            prev = cut
        offset += prev
        tail = buf[prev:n]


def input_size(fd: int) -> int:
    """Size of a regular file or block device."""
    return os.lseek(fd, 0, os.SEEK_END)


def chunk_file(
    path: str,
    params: ChunkerParams = DEFAULT_PARAMS,
    *,
    workers: int = 1,
    stats: dict[str, int] | None = None,
    part_bytes: int | None = None,
) -> np.ndarray:
    """Chunk ends of a regular file or block device, computed by ``workers`` threads.

    The file is split into parts chunked concurrently, each as if a chunk started at
    its beginning; each part then re-synchronises with the true boundary published by
    its predecessor (see :mod:`desync_core.chunker.parallel`). The result is identical
    to a single sequential pass for every input and worker count.

    Args:
        path: file or block device.
        params: chunk sizes.
        workers: parts chunked concurrently.
        stats: if given, receives ``ChunksProduced`` (chunks computed by all parts,
            including discarded speculative ones).
        part_bytes: target bytes per part (default
            :data:`desync_core.chunker.parallel.PART_BYTES`).
    """
    from desync_core.chunker.parallel import PART_BYTES, chunk_fd

    fd = os.open(path, os.O_RDONLY)
    try:
        return chunk_fd(fd, input_size(fd), params, threads=workers, stats=stats,
                        part_bytes=part_bytes or PART_BYTES)
    finally:
        os.close(fd)


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_PARAMS",
    "ChunkerParams",
    "chunk_file",
    "cuts_function",
    "fill_from",
    "find_cuts",
    "input_size",
    "iter_chunks",
    "kernel_name",
    "warm_up",
]
