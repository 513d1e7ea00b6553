"""Many chunk digests in one call: SHA-512/256 on eight messages at a time.

``extract`` verifies every chunk it writes; with OpenSSL that is ~0.6 GB/s per core,
more CPU than decompressing and writing together. One SHA-512 computation is a serial
chain of 64-bit operations, but eight independent chunks fill the eight 64-bit lanes of
a vector register, so a batch of chunks hashes about three times faster per core
(1.5-1.8 GB/s measured on the benchmark machine's Xeon, AVX-512) with digests
identical to hashlib's (:mod:`desync_core.batchhash._kernel`).

The kernel is numba code compiled once for this CPU into a shared library (in the
background by the ``desync`` command, see :mod:`desync_core.kernelcache`), cached
like the chunker's kernel (``NUMBA_CACHE_DIR/desync``, this package's
``__pycache__``, ``~/.cache/desync``) and loaded with ``dlopen``: later runs import
neither numba nor llvmlite. Before it is used, a loaded kernel must reproduce
hashlib's digests of a set of messages of tricky lengths; if it does not, or nothing
can be built (no numba, no linker), hashlib is used. ``DESYNC_HASH_KERNEL=hashlib``
selects hashlib explicitly (for cross-checks). SHA-256 always uses hashlib (OpenSSL
uses the CPU's SHA instructions for it where they exist).

Calls release the GIL (ctypes), so threads may hash in parallel; each thread needs
its own :class:`BatchHasher` (it owns the kernel's scratch space).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from desync_core.errors import UsageError
from desync_core.kernelcache import (
    build_lock,
    build_mode,
    cache_dirs,
    cpu_identity,
    in_cli,
    large_input_noted,
    load_function,
    start_background_build,
    writable_dir,
)

if TYPE_CHECKING:
    from desync_core.digest import Digest

_log = logging.getLogger(__name__)

#: Below this many messages hashlib is faster (the kernel's idle lanes still cost).
MIN_MESSAGES = 4
# Must match _kernel.py (not imported here: it imports numba).
_LANES = 8
_VECTOR_WORDS = 24 * _LANES
_LANE_WORDS = 4 * _LANES
_TAIL_BYTES = 256 * _LANES
_SYMBOL = "desync_sha512_256_many"
_P = ctypes.c_void_p
_ARGTYPES = [_P, ctypes.c_uint64, _P, _P, _P, ctypes.c_int64, _P, _P, _P, _P]
_HERE = Path(__file__).resolve().parent
_lock = threading.Lock()

KernelFn = Callable[..., int]


@cache
def kernel_name() -> str:
    """``native`` (the default) or ``hashlib`` (``DESYNC_HASH_KERNEL``)."""
    name = os.environ.get("DESYNC_HASH_KERNEL", "native").strip().lower() or "native"
    if name not in ("native", "hashlib"):
        raise UsageError(f"DESYNC_HASH_KERNEL must be 'native' or 'hashlib', not {name!r}")
    return name


def native_kernel() -> KernelFn | None:
    """The compiled kernel, or None if unavailable.

    Built and cached on first use, except in the ``desync`` command with no large input
    to chunk, which goes on with hashlib and builds it in the background for later runs
    (and except as ``DESYNC_KERNEL_BUILD`` says, see :mod:`desync_core.kernelcache`).
    """
    if kernel_name() != "native":
        return None
    with _lock:
        return _load()


@cache
def _load() -> KernelFn | None:
    cached = _load_cached()
    if cached is not None:
        return cached
    mode = build_mode()
    if mode == "never":
        return None
    if mode == "auto" and in_cli() and not large_input_noted():
        # Compiling takes seconds, hashlib hashes a few hundred MB in that time: the
        # command goes on with hashlib and the kernel is built for next time (unless
        # the chunker is being compiled for a large input anyway).
        start_background_build(_HERE)
        return None
    directory = writable_dir(_cache_dirs())
    if directory is None:
        return None
    with build_lock(directory, "sha512x8"):
        return _load_cached() or _build(directory)


def _name() -> str:
    return f"sha512x8-{cache_key()}.so"


def _load_cached() -> KernelFn | None:
    name = _name()
    for directory in _cache_dirs():
        path = directory / name
        if path.is_file():
            try:
                return _open(path)
            except (OSError, ValueError, AttributeError) as exc:
                _log.debug("cached hash kernel %s unusable: %s", path, exc)
    return None


def _build(directory: Path) -> KernelFn | None:
    try:
        from desync_core.batchhash._kernel import build_shared_library

        if build_shared_library(directory / _name()):
            return _open(directory / _name())
    except Exception as exc:  # no numba or llvmlite, no linker, a failed self-test...
        _log.debug("hash kernel unavailable (%s); using hashlib", exc)
    return None


def build_if_missing() -> None:
    """Build and cache the kernel unless it is cached, being built by another process,
    or no cache directory is writable (for the background builder)."""
    if kernel_name() != "native":
        return
    directory = writable_dir(_cache_dirs())
    with build_lock(directory, "sha512x8", wait=False) as held:
        if held and directory is not None and _load_cached() is None:
            _build(directory)


def _open(path: Path) -> KernelFn:
    """``dlopen`` the library; its kernel must pass the self-test."""
    fn = load_function(path, _SYMBOL, ctypes.c_int64, _ARGTYPES)
    _self_test(fn)
    return fn


def _self_test(fn: KernelFn) -> None:
    """Raise ValueError unless ``fn`` matches hashlib on lengths around the padding
    boundaries (111/112 bytes left in the last block) and lanes being reused."""
    lengths = [0, 1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 241, 255, 256, 257,
               1000, 3000, 20, 7, 5000, 128 * 9, 128 * 9 + 112]
    pattern = hashlib.sha512(b"desync batchhash self-test").digest() * 200
    buf = bytearray()
    offsets = []
    for i, n in enumerate(lengths):
        offsets.append(len(buf))
        buf += pattern[i : i + n]
    hasher = BatchHasher(fn)
    got = hasher.sums(np.frombuffer(bytes(buf), dtype=np.uint8),
                      np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64))
    want = b"".join(hashlib.new("sha512_256", buf[o : o + n]).digest()
                    for o, n in zip(offsets, lengths))
    if got != want:
        raise ValueError("hash kernel failed its self-test")


class BatchHasher:
    """SHA-512/256 digests of many messages of one buffer, with the kernel if there is
    one (hashlib otherwise). One per thread.

    Args:
        kernel: the kernel (default: :func:`native_kernel`; None forces hashlib).
    """

    def __init__(self, kernel: KernelFn | bool | None = True) -> None:
        self.kernel: KernelFn | None = native_kernel() if kernel is True else (kernel or None)
        self._vectors = np.zeros(_VECTOR_WORDS, dtype=np.uint64)
        self._lanes = np.zeros(_LANE_WORDS, dtype=np.int64)
        self._tail = np.zeros(_TAIL_BYTES, dtype=np.uint8)
        self._out = np.zeros(32 * 64, dtype=np.uint8)

    def sums(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> bytes:
        """The 32-byte digests of ``buf[offsets[i] : offsets[i] + lengths[i]]``,
        concatenated in order.

        Args:
            buf: contiguous uint8 array holding the messages.
            offsets, lengths: int64 arrays (contiguous), within ``buf``.
        """
        count = len(offsets)
        if self.kernel is None or count < MIN_MESSAGES:
            view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
            new = hashlib.new
            return b"".join(new("sha512_256", view[o : o + n]).digest()
                            for o, n in zip(offsets.tolist(), lengths.tolist()))
        if len(self._out) < 32 * count:
            self._out = np.zeros(32 * count, dtype=np.uint8)
        order = np.argsort(-lengths, kind="stable")  # longest first: lanes finish together
        _addr = _address
        self.kernel(_addr(buf), buf.nbytes, _addr(offsets), _addr(lengths), _addr(order),
                    count, _addr(self._out), _addr(self._vectors), _addr(self._lanes),
                    _addr(self._tail))
        return self._out[: 32 * count].tobytes()


_hashers = threading.local()


def chunk_digests(buf: bytes | bytearray | memoryview | np.ndarray, starts: np.ndarray,
                  lengths: np.ndarray, digest: Digest) -> bytes:
    """The digests of ``buf[starts[i] : starts[i] + lengths[i]]``, concatenated.

    SHA-512/256 goes through the 8-lane kernel, with one :class:`BatchHasher` per
    calling thread; other digests (and a missing kernel) through hashlib.
    """
    if digest.hashlib_name == "sha512_256":
        hasher = getattr(_hashers, "hasher", None)
        if hasher is None:
            hasher = _hashers.hasher = BatchHasher()
        return hasher.sums(np.frombuffer(buf, dtype=np.uint8), starts, lengths)
    view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
    return b"".join(digest.sum(view[a : a + n])
                    for a, n in zip(starts.tolist(), lengths.tolist()))


def _address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def cache_key() -> str:
    """Hex digest of the kernel source, the platform and the CPU (code is CPU-specific).

    numba's and llvmlite's versions are left out: a library built by another version is
    still correct code for this CPU, and the self-test checks it on every load.
    """
    h = hashlib.sha256((_HERE / "_kernel.py").read_bytes())
    for part in (sys.platform, os.uname().machine, cpu_identity()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def _cache_dirs() -> list[Path]:
    """Where the library is looked for (see :func:`desync_core.kernelcache.cache_dirs`)."""
    return cache_dirs(_HERE)


__all__ = [
    "MIN_MESSAGES",
    "BatchHasher",
    "build_if_missing",
    "cache_key",
    "chunk_digests",
    "kernel_name",
    "native_kernel",
]
