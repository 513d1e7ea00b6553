"""zstd for chunk files, through the system libzstd when it is installed.

Why the system library (through ctypes) and not only python-zstandard:

* **Byte-identical chunk files.** casync compresses with the system libzstd's
  streaming API (level 3, no content size, no checksum). The block encoder differs
  between zstd releases (python-zstandard bundles 1.5.7, Debian's casync uses 1.5.4),
  so only the same library used the same way produces casync's exact ``.cacnk`` bytes.
* **Bounded, fast decompression.** casync's frames carry no content size, so a few KB
  of hostile data could inflate to gigabytes. The streaming decoder here works through
  a reused scratch buffer, stops at a limit, and notices truncated frames; one ctypes
  call per 1 MiB of output, with the GIL released during the call.

Without a system libzstd, python-zstandard is used the same way (then chunk files are
byte-identical only if its bundled zstd is the same release as casync's).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from typing import Any

from desync_core.inflate import inflate_bounded

# python-zstandard is imported only where it is used (no system libzstd): it costs
# ~4 ms of start-up otherwise.

#: zstd level casync uses.
LEVEL = 3
#: Output produced per decoder call (bounds the work done past a size limit).
_STEP = 1024 * 1024


class ZstdDecodeError(ValueError):
    """The data is not a complete, valid zstd stream (or exceeds the size limit)."""


class _Buffer(ctypes.Structure):
    """``ZSTD_inBuffer`` / ``ZSTD_outBuffer`` (same layout)."""

    _fields_ = [("dst", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


def _load() -> Any:
    """The system libzstd with the functions used here declared, or None."""
    for name in _library_names():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        sz, ptr, buf = ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(_Buffer)
        try:
            for fn, restype, argtypes in (
                ("ZSTD_versionNumber", ctypes.c_uint, []),
                ("ZSTD_createCStream", ptr, []),
                ("ZSTD_freeCStream", sz, [ptr]),
                ("ZSTD_initCStream", sz, [ptr, ctypes.c_int]),
                ("ZSTD_compressStream", sz, [ptr, buf, buf]),
                ("ZSTD_endStream", sz, [ptr, buf]),
                ("ZSTD_compressBound", sz, [sz]),
                ("ZSTD_createDCtx", ptr, []),
                ("ZSTD_freeDCtx", sz, [ptr]),
                ("ZSTD_DCtx_reset", sz, [ptr, ctypes.c_int]),
                ("ZSTD_decompressStream", sz, [ptr, buf, buf]),
                ("ZSTD_decompressDCtx", sz, [ptr, ptr, sz, ptr, sz]),
                ("ZSTD_isError", ctypes.c_uint, [sz]),
                ("ZSTD_getErrorName", ctypes.c_char_p, [sz]),
            ):
                f = getattr(lib, fn)
                f.restype, f.argtypes = restype, argtypes
        except AttributeError:
            continue
        return lib
    return None


def _library_names() -> Any:
    """The usual soname, then what ``find_library`` finds. Only asked if the soname
    fails: it runs ``ldconfig -p`` in a subprocess (measured ~20 ms of start-up)."""
    yield "libzstd.so.1"
    import ctypes.util

    found = ctypes.util.find_library("zstd")
    if found:
        yield found


_LIB = _load()
_SESSION_AND_PARAMETERS = 3  # ZSTD_reset_session_and_parameters

#: Which library compresses chunks: ``"system <version>"`` or ``"bundled <version>"``.
BACKEND = (
    f"system {_LIB.ZSTD_versionNumber()}" if _LIB is not None
    else "bundled " + ".".join(map(str, __import__("zstandard").ZSTD_VERSION))
)

_local = threading.local()


def _check(code: int) -> int:
    if _LIB.ZSTD_isError(code):
        raise ZstdDecodeError(f"zstd: {_LIB.ZSTD_getErrorName(code).decode()}")
    return code


def _input(data: bytes | bytearray | memoryview) -> tuple[Any, int, int]:
    """(keep-alive object, address, size) of a buffer, without copying if possible.

    Addresses come from ``c_char.from_buffer`` (one small object), never from
    ``(c_char * n).from_buffer``: ctypes caches an array *type* per length forever, so
    per-chunk sizes would leak types and keep the cyclic garbage collector busy.
    """
    view = memoryview(data).cast("B")
    n = view.nbytes
    if isinstance(data, bytes):
        return data, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0, n
    if n and not view.readonly:
        holder = ctypes.c_char.from_buffer(view)
        return holder, ctypes.addressof(holder), n
    copy = view.tobytes()
    return copy, ctypes.cast(ctypes.c_char_p(copy), ctypes.c_void_p).value or 0, n


class _Scratch:
    """A per-thread output buffer and libzstd contexts."""

    # Defaults for __del__ when __init__ was interrupted (e.g. by a signal handler).
    cstream: Any = None
    dctx: Any = None

    def __init__(self) -> None:
        self.buf = bytearray(_STEP)
        self.cbuf = (ctypes.c_char * _STEP).from_buffer(self.buf)
        self.cstream = _LIB.ZSTD_createCStream()
        self.dctx = _LIB.ZSTD_createDCtx()
        if not self.cstream or not self.dctx:
            raise MemoryError("libzstd could not allocate a context")

    def __del__(self) -> None:
        if _LIB is not None:
            if self.cstream:
                _LIB.ZSTD_freeCStream(self.cstream)
            if self.dctx:
                _LIB.ZSTD_freeDCtx(self.dctx)


def _scratch() -> _Scratch:
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = _Scratch()
    return s


def compress(data: bytes | bytearray | memoryview) -> bytes:
    """Compress like casync: level 3, streamed without content size, no checksum."""
    if _LIB is None:
        import zstandard

        obj = zstandard.ZstdCompressor(
            level=LEVEL, write_checksum=False, write_content_size=False).compressobj()
        return obj.compress(data) + obj.flush()
    s = _scratch()
    keep, addr, n = _input(data)
    inb = _Buffer(addr, n, 0)
    outb = _Buffer(ctypes.addressof(s.cbuf), _STEP, 0)
    parts: list[bytes] = []
    _check(_LIB.ZSTD_initCStream(s.cstream, LEVEL))
    while inb.pos < inb.size:
        _check(_LIB.ZSTD_compressStream(s.cstream, ctypes.byref(outb), ctypes.byref(inb)))
        if outb.pos == outb.size:
            parts.append(bytes(s.buf))
            outb.pos = 0
    while _check(_LIB.ZSTD_endStream(s.cstream, ctypes.byref(outb))):
        parts.append(bytes(s.buf[: outb.pos]))
        outb.pos = 0
    parts.append(bytes(s.buf[: outb.pos]))
    del keep
    return parts[0] if len(parts) == 1 else b"".join(parts)


def decompress(stored: bytes | bytearray | memoryview, limit: int) -> bytes:
    """Decode every frame of ``stored``; at most ``limit`` bytes of output.

    Raises:
        ZstdDecodeError: invalid or truncated data, or more than ``limit`` bytes.
    """
    parts = [bytes(piece) for piece in iter_decompress(stored, limit)]
    return parts[0] if len(parts) == 1 else b"".join(parts)


def iter_decompress(stored: bytes | bytearray | memoryview,
                    limit: int) -> Iterator[bytes | memoryview]:
    """:func:`decompress`'s output in pieces of at most 1 MiB, as they are decoded.

    A piece is a view of this thread's scratch buffer: valid until the next piece is
    asked for (``verify`` hashes them, so a chunk of any size needs 1 MiB).

    Raises:
        ZstdDecodeError: as :func:`decompress` (possibly after some pieces).
    """
    if _LIB is None:
        yield _fallback_decompress(stored, limit)
        return
    s = _scratch()
    keep, addr, n = _input(stored)
    inb = _Buffer(addr, n, 0)
    total = 0
    pending = 0  # >0 while a frame is incomplete
    produced = False
    try:
        while True:
            outb = _Buffer(ctypes.addressof(s.cbuf), _STEP, 0)
            pending = _check(_LIB.ZSTD_decompressStream(s.dctx, ctypes.byref(outb),
                                                        ctypes.byref(inb)))
            if outb.pos:
                total += outb.pos
                if total > limit:
                    raise ZstdDecodeError(f"decompresses to more than {limit} bytes")
                produced = True
                yield memoryview(s.buf)[: outb.pos]
            if inb.pos == inb.size and (pending == 0 or outb.pos < outb.size):
                # All input consumed, and either the last frame is complete and flushed
                # (0) or the decoder has nothing more to give. Calling again after a
                # complete frame would not do: with no input, libzstd answers the size
                # of the next frame's header, which looks like a truncated frame when
                # the output happened to fill the scratch buffer exactly.
                break
        if pending:
            raise ZstdDecodeError("zstd: truncated frame")
        if not produced:
            yield b""
    except BaseException:
        # The context is mid-frame (an error, or a consumer that stopped early); a
        # clean one is needed for the next chunk.
        _LIB.ZSTD_DCtx_reset(s.dctx, _SESSION_AND_PARAMETERS)
        raise
    finally:
        del keep


def decompress_into(stored: bytes | bytearray | memoryview, out: bytearray,
                    capacity: int) -> int:
    """Decode ``stored`` (one or more frames) into ``out[:capacity]``; returns the size.

    Output that would not fit raises, so ``capacity = expected_size + 1`` both bounds
    the work and reveals data that is too long.
    """
    if _LIB is None:
        data = _fallback_decompress(stored, capacity)
        out[: len(data)] = data
        return len(data)
    if len(out) < capacity:
        raise ValueError("output buffer smaller than the capacity")
    keep, addr, n = _input(stored)
    dst = ctypes.c_char.from_buffer(out)
    written = _LIB.ZSTD_decompressDCtx(_scratch().dctx, ctypes.addressof(dst), capacity,
                                       addr, n)
    del keep, dst
    return _check(written)


class RawDecoder:
    """A libzstd decompression context for one thread, decoding between raw addresses.

    For ``extract``'s batches: no Python object per chunk, one ctypes call (which
    releases the GIL). Callers keep the buffers alive and treat -1 as "decode it the
    careful way" (:func:`decompress` reports what is wrong).
    """

    _dctx: Any = None  # (for __del__ if __init__ did not finish)

    def __init__(self) -> None:
        if _LIB is None:
            raise RuntimeError("no system libzstd")
        self._dctx = _LIB.ZSTD_createDCtx()
        if not self._dctx:
            raise MemoryError("libzstd could not allocate a context")
        self._decode = _LIB.ZSTD_decompressDCtx

    def decode(self, src: int, src_len: int, dst: int, capacity: int) -> int:
        """Decode every frame at ``src`` into at most ``capacity`` bytes at ``dst``.

        Returns the decoded size, or -1 if the data is invalid, truncated or longer
        than ``capacity``.
        """
        size: int = self._decode(self._dctx, dst, capacity, src, src_len)
        # A success is at most ``capacity``; error codes are near 2**64.
        return size if size <= capacity else -1

    def raw_function(self) -> tuple[Any, int]:
        """``(fn, dctx)``: ``fn(dctx, dst, capacity, src, src_len)`` is libzstd's
        ``ZSTD_decompressDCtx``, for loops that cannot afford a method call per chunk.
        It returns the size, or an error code (greater than any ``capacity``)."""
        return self._decode, self._dctx

    def __del__(self) -> None:
        if _LIB is not None and self._dctx:
            _LIB.ZSTD_freeDCtx(self._dctx)


def available() -> bool:
    """Whether the system libzstd is loaded (:class:`RawDecoder` needs it)."""
    return _LIB is not None


def _fallback_decompress(stored: bytes | bytearray | memoryview, limit: int) -> bytes:
    """python-zstandard, fed a little at a time so the output bound holds."""
    import zstandard

    try:
        return inflate_bounded(stored, zstandard.ZstdDecompressor().decompressobj, limit)
    except (zstandard.ZstdError, ValueError, EOFError) as exc:
        raise ZstdDecodeError(f"zstd: {exc}") from exc


__all__ = ["BACKEND", "LEVEL", "RawDecoder", "ZstdDecodeError", "available", "compress",
           "decompress", "decompress_into", "iter_decompress"]
