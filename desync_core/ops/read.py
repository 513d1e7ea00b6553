"""Read-side operations (``extract.md`` §6): cat, info, inspect-chunks, verify-index."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterable
from typing import Any, BinaryIO

from desync_core.engine.interrupts import hold_interrupts, release_interrupts
from desync_core.engine.threads import Threads
from desync_core.errors import (
    ChunkInvalidError,
    ConfigError,
    SeedInvalidError,
    StoreError,
    UsageError,
)
from desync_core.index import Index
from desync_core.progress import Progress
from desync_core.stores.wrappers import read_sized


def cat(index: Index, source: Any, out: BinaryIO, *, offset: int = 0, length: int = 0) -> int:
    """Write the blob (or ``length`` bytes from ``offset``) to ``out``; returns bytes written.

    Chunks are fetched one at a time in order; null chunks come from memory.
    """
    total = index.length
    if offset < 0 or length < 0:
        raise UsageError("offset and length must not be negative")
    if offset > total or (offset == total and total > 0 and length):
        raise UsageError(f"offset {offset} is beyond the end of the blob ({total} bytes)")
    end = total if length == 0 else offset + length
    if end > total:
        raise UsageError(f"cannot read {length} bytes at offset {offset}: blob is {total} bytes")
    null_id = index.digest.null_chunk_id(index.chunk_size_max)
    written = 0
    i = index.find(offset) if offset < total else len(index)
    while i < len(index) and written < end - offset:
        chunk = index.chunk(i)
        if chunk.id == null_id:
            data: Any = bytes(chunk.size)
        else:
            data = read_sized(source, chunk.id, chunk.size)
        lo = max(offset - chunk.start, 0)
        hi = min(end - chunk.start, chunk.size)
        out.write(memoryview(data)[lo:hi])
        written += hi - lo
        i += 1
    out.flush()
    return written


def cat_to_path(index: Index, source: Any, path: str, *, offset: int = 0,
                length: int = 0) -> int:
    """:func:`cat` into the file ``path``; returns bytes written.

    A regular file (or a new one) is written to a temporary file next to it and
    renamed onto ``path`` only on success, so a failed ``cat`` never leaves a partial
    file behind (an existing file is left untouched). FIFOs and devices are written
    directly.
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {path} is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            out = open(path, "wb")  # noqa: SIM115 - FIFO or device: no temp file
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from None
        with out:
            return cat(index, source, out, offset=offset, length=length)
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory} does not exist")
    tmp = os.path.join(directory, f".{base}.{secrets.randbits(32)}")
    # SIGINT/SIGTERM wait until the file's removal is armed: raised between the open
    # and the ``try``, the interrupt would leave the temporary file behind.
    held = hold_interrupts()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        release_interrupts(held)
        raise StoreError(f"creating {tmp}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            release_interrupts(held)  # (an interrupt that came meanwhile is raised here)
            written = cat(index, source, out, offset=offset, length=length)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        release_interrupts(held)  # (again, harmless, if released already)
        raise
    return written


def info(
    index: Index,
    *,
    store: Any = None,
    seed_ids: set[bytes] | None = None,
    cache: Any = None,
    chunks_info: list[dict[str, Any]] | None = None,
    workers: int = 10,
) -> dict[str, int]:
    """Index statistics as desync's ``info`` reports them (``extract.md`` §6.6)."""
    sizes: dict[bytes, int] = {}
    for c in index:
        sizes.setdefault(c.id, c.size)
    unique = list(sizes)
    seed_ids = seed_ids or set()

    def count_present(reader: Any) -> set[bytes]:
        with Threads(workers) as pool:
            flags = list(pool.map(reader.has_chunk, unique))
        return {cid for cid, ok in zip(unique, flags) if ok}

    in_store = count_present(store) if store is not None else set()
    in_cache = count_present(cache) if cache is not None else set()
    not_in_seed = [cid for cid in unique if cid not in seed_ids]
    neither = [cid for cid in not_in_seed if cid not in in_cache]
    compressed = 0
    if chunks_info is not None:
        compressed = _compressed_estimate(neither, sizes, chunks_info)
    return {
        "total": len(index),
        "unique": len(unique),
        "in-store": len(in_store),
        "in-seed": len(unique) - len(not_in_seed),
        "in-cache": len(in_cache),
        "not-in-seed-nor-cache": len(neither),
        "size": index.length,
        "dedup-size-not-in-seed": sum(sizes[c] for c in not_in_seed),
        "dedup-size-not-in-seed-nor-cache": sum(sizes[c] for c in neither),
        "dedup-size-not-in-seed-nor-cache-compressed": compressed,
        "chunk-size-min": index.chunk_size_min,
        "chunk-size-avg": index.chunk_size_avg,
        "chunk-size-max": index.chunk_size_max,
    }


def _compressed_estimate(ids: Iterable[bytes], sizes: dict[bytes, int],
                         chunks_info: list[dict[str, Any]]) -> int:
    known: dict[bytes, dict[str, Any]] = {}
    for entry in chunks_info:
        try:
            known[bytes.fromhex(entry["id"])] = entry
        except (KeyError, ValueError, TypeError):
            raise ConfigError(f"invalid chunks-info entry: {entry!r}") from None
    total = 0
    for cid in ids:
        found = known.get(cid)
        if found is None or not found.get("compressed_size"):
            return 0
        if found.get("uncompressed_size", sizes[cid]) != sizes[cid]:
            raise UsageError(f"chunks-info size of {cid.hex()} does not match the index")
        total += int(found["compressed_size"])
    return total


PLAIN_INFO_LABELS = (
    ("Blob size:", "size"),
    ("Size of deduplicated chunks not in seed:", "dedup-size-not-in-seed"),
    ("Size of deduplicated chunks not in seed nor cache:", "dedup-size-not-in-seed-nor-cache"),
    ("Total chunks:", "total"),
    ("Unique chunks:", "unique"),
    ("Chunks in store:", "in-store"),
    ("Chunks in seed:", "in-seed"),
    ("Chunks in cache:", "in-cache"),
    ("Chunks not in seed nor cache:", "not-in-seed-nor-cache"),
    ("Compressed chunks not in seed nor cache:", "dedup-size-not-in-seed-nor-cache-compressed"),
    ("Chunk size min:", "chunk-size-min"),
    ("Chunk size avg:", "chunk-size-avg"),
    ("Chunk size max:", "chunk-size-max"),
)


def format_info(result: dict[str, int], fmt: str) -> str:
    """``json`` (default, 2-space indent) or ``plain`` text."""
    if fmt == "json":
        return json.dumps(result, indent=2) + "\n"
    if fmt == "plain":
        return "".join(f"{label} {result[key]}\n" for label, key in PLAIN_INFO_LABELS)
    raise UsageError(f'unsupported output format "{fmt}"')


def inspect_chunks(index: Index, store_dir: str | None, codec_ext: str | None) -> str:
    """JSON array of ``{id, uncompressed_size[, compressed_size]}`` per index chunk."""
    out = []
    for c in index:
        entry: dict[str, Any] = {"id": c.id.hex(), "uncompressed_size": c.size}
        if store_dir and codec_ext:
            h = c.id.hex()
            try:
                size = os.stat(os.path.join(store_dir, h[:4], h + codec_ext)).st_size
            except OSError:
                size = 0
            if size:
                entry["compressed_size"] = size
        out.append(entry)
    return json.dumps(out, indent=2) + "\n"


def verify_index(index: Index, path: str, *, workers: int = 10,
                 progress: Progress | None = None) -> None:
    """Check that ``path`` holds exactly the blob of ``index``.

    Raises:
        SeedInvalidError: ``seed index for <file> doesn't match its data``.
    """
    from desync_core.engine.forkpool import ForkExecutor
    from desync_core.ops import chunkfile

    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory")
    if stat.S_ISREG(st.st_mode) and st.st_size != index.length:
        raise SeedInvalidError(
            f"index size ({index.length}) does not match file size ({st.st_size})"
        )
    progress = progress or Progress()
    starts, ends = index.starts(), index.ends
    try:
        if workers <= 1 or index.length < 64 * 1024 * 1024:
            chunkfile.init_worker(None, index.digest.name, 1)
            chunkfile.run_tasks(path, starts, ends, executor=None, expected=index.ids,
                                store_enabled=False, on_done=lambda n, _b: progress.update(n))
        else:
            with ForkExecutor(workers,
                              lambda: chunkfile.init_worker(None, index.digest.name, 1)) as pool:
                chunkfile.run_tasks(path, starts, ends, executor=pool, expected=index.ids,
                                    store_enabled=False, on_done=lambda n, _b: progress.update(n))
    except (ChunkInvalidError, SeedInvalidError):
        raise SeedInvalidError(f"seed index for {path} doesn't match its data") from None


__all__ = ["cat", "cat_to_path", "format_info", "info", "inspect_chunks", "verify_index"]
