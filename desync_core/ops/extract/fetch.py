"""Fetching verified chunks for ``extract``: the direct (one-shot decode into a reused
buffer) and batched (runs of chunks, one hash-kernel call, one write) fast paths."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from desync_core import zstd
from desync_core.errors import ChunkInvalidError, ChunkMissingError, DesyncError, StoreError
from desync_core.index import Index
from desync_core.ops.extract.target import ExtractStats, Target
from desync_core.seeds.extents import pwrite_all
from desync_core.stores.chunk import ZSTD_MAGIC, ChunkCodec, decompress
from desync_core.stores.wrappers import (
    RetryingStore,
    VerifyingStore,
    unexpected_size,
)


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
        # The core's codecs: plain or compressed, possibly encrypted (the encryption
        # layer is removed with codec.unseal before the zstd layer is decoded here).
        if type(codec) is not ChunkCodec:
            return None
        return cls(source, codec, index.chunk_size_max)

    def fetch(self, chunk_id: bytes, size: int) -> bytes | bytearray | memoryview:
        """The verified plain data of a chunk of ``size`` bytes (valid until the next
        fetch on this thread)."""
        stored = self.raw.get_chunk(chunk_id).encoded(self.codec)
        try:
            layer = self.codec.unseal(stored, chunk_id)  # (stored itself when plain)
            if self.codec.compressed and bytes(layer[:4]) == ZSTD_MAGIC and size <= self.max_size:
                data: bytes | bytearray | memoryview = self._zstd_into(layer, size)
            elif self.codec.compressed:
                data = decompress(layer, chunk_id, size)  # xz, gzip
            else:
                data = layer
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
        if store.local_chunk_file("0" * 64) is not None and not direct.codec.encrypted:
            self.chunk_file = store.local_chunk_file  # (encrypted files: transport path)
        self.verify = not direct.skip_verify
        self.sum = direct.sum
        #: Remote stores: runs are fetched by all ``-n`` workers at once (requests in
        #: flight), but decoded, hashed and written by at most one per CPU plus one at a
        #: time. More runnable threads only fight over the interpreter lock: measured,
        #: 10 of them cost ~0.3 s more CPU per 400 MB than 3, for no gain in speed.
        self.cpu_gate: threading.Semaphore | None = None
        if self.chunk_file is None:
            from desync_core.workers import default_workers

            self.cpu_gate = threading.Semaphore(default_workers() + 1)
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
        run_starts, run_stops = starts, stops
        if skip is not None and skip[lo:hi].any():
            keep = ~skip[lo:hi]
            picked = np.flatnonzero(keep)
            if not len(picked):
                return True
            starts, stops = starts[picked], stops[picked]
            ids = np.frombuffer(ids, dtype=np.uint8).reshape(-1, 32)[picked].tobytes()
        total = int(stops[-1])
        if self.cpu_gate is None:
            return self._finish(lo, starts, stops, ids, total, keep, run_starts, run_stops,
                                None, state, counters)
        stored = self._fetch_stored(ids, len(starts))  # (network: not gated)
        if stored is None:
            return False
        with self.cpu_gate:
            return self._finish(lo, starts, stops, ids, total, keep, run_starts, run_stops,
                                stored, state, counters)

    def _finish(self, lo: int, starts: np.ndarray, stops: np.ndarray, ids: bytes,
                total: int, keep: np.ndarray | None, run_starts: np.ndarray,
                run_stops: np.ndarray, stored: list[Any] | None, state: BatchState,
                counters: ExtractStats) -> bool:
        """Decode (from the chunk files, or the ``stored`` bytes fetched), verify and
        write a run; False (nothing written) if any chunk needs the careful path."""
        start = int(self.ends[lo - 1]) if lo else 0
        hi = lo + len(run_stops)
        buf = state.buffer(total + 1)  # +1: decoding one byte too many reveals long data
        if stored is None:
            if not self._fetch(ids.hex(), starts.tolist(), stops.tolist(), buf, state):
                return False
        elif not self._decode(ids, stored, starts.tolist(), stops.tolist(), buf, state):
            return False
        if self.verify:
            lengths = stops - starts
            if state.hasher is not None:
                sums = state.hasher.sums(buf, starts, lengths)
            else:
                view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
                sums = b"".join(self.sum(view[a:b]) for a, b in zip(starts.tolist(),
                                                                      stops.tolist()))
            if sums != ids:
                return False
        view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
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
            out = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
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
        return False  # (only stores with chunk files come here)

    def _fetch_stored(self, ids: bytes, count: int) -> list[Any] | None:
        """The stored bytes of ``count`` chunks (ids concatenated in ``ids``) through the
        transport (and its retrying layer); None if one needs the careful path."""
        raw = self.direct.raw
        codec = self.codec
        stored: list[Any] = []
        for k in range(count):
            chunk_id = ids[32 * k : 32 * k + 32]
            try:
                stored.append(raw.get_chunk(chunk_id).encoded(codec))
            except StoreError as exc:
                if isinstance(exc, ChunkMissingError):
                    return None  # the careful path reports it (or finds it elsewhere)
                # The retrying layer has already retried it: fetching it again on the
                # careful path would double the store's error-retry attempts.
                raise
            except (DesyncError, OSError):
                return None
        return stored

    def _decode(self, ids: bytes, stored: list[Any], starts: list[int], stops: list[int],
                buf: np.ndarray, state: BatchState) -> bool:
        """Decode ``stored[k]`` into ``buf[starts[k] : stops[k]]``, for each; False at
        the first problem."""
        codec = self.codec
        compressed = codec.compressed
        base = state.address(buf)
        zstd_decode, dctx = state.decoder.raw_function()
        view = memoryview(buf)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
        for k, (a, b) in enumerate(zip(starts, stops)):
            data = stored[k]
            if codec.encrypted:
                try:
                    data = codec.unseal(data, ids[32 * k : 32 * k + 32])
                except ChunkInvalidError:
                    return False  # the careful path names the chunk
            if compressed:
                if data[:4] != ZSTD_MAGIC:
                    return False
                if type(data) is not bytes:  # (ctypes passes bytes without a copy)
                    data = np.frombuffer(data, dtype=np.uint8)
                    src: Any = state.address(data)
                else:
                    src = data
                # Success returns the size, errors are huge numbers.
                if zstd_decode(dctx, base + a, b - a + 1, src, len(data)) != b - a:
                    return False
            else:
                if len(data) != b - a:
                    return False
                view[a:b] = data
        return True


class BatchState:
    """One worker's buffers for :class:`StoreBatches` (not shared between threads)."""

    def __init__(self, batches: StoreBatches) -> None:
        from desync_core.batchhash import BatchHasher

        self._buf = np.empty(0, dtype=np.uint8)
        # A stored chunk is at most a few bytes longer than the largest chunk (zstd's
        # worst case); a file that fills this buffer is left to the careful path.
        raw = np.empty(zstd_bound(batches.index.chunk_size_max) + 4096, dtype=np.uint8)
        self.raw_view = memoryview(raw)  # type: ignore[arg-type]  # numpy: __buffer__ typed for 3.12+
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
        return arr.__array_interface__["data"][0]


def zstd_bound(size: int) -> int:
    """Upper bound of zstd's output for ``size`` input bytes (``ZSTD_COMPRESSBOUND``)."""
    return size + (size >> 8) + ((128 * 1024 - size) >> 11 if size < 128 * 1024 else 0)


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


