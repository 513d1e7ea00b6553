"""Store-side operations: ``chop``, ``cache``, ``verify`` and ``prune``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from desync_core.digest import Digest, parse_chunk_id
from desync_core.errors import ChunkInvalidError, ChunkMissingError, UsageError
from desync_core.index import Index
from desync_core.progress import Progress
from desync_core.stores.base import PrunableChunkStore


def read_chunk_list(path: str) -> set[bytes]:
    """Chunk ids from a text file: one hex id per line, blank lines skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    ids = set()
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                ids.add(parse_chunk_id(line))
            except UsageError as exc:
                raise UsageError(f"{path}:{n}: {exc}") from None
    return ids


def chop(index: Index, path: str, store: Any, *, workers: int = 10,
         ignore: set[bytes] | None = None, store_is_local: bool = True,
         progress: Progress | None = None) -> int:
    """Store the chunks of ``path`` (cut at ``index``'s boundaries) into ``store``.

    Every chunk is hashed and must match the index; chunks already in the store (or in
    ``ignore``) are not stored. Returns the number of chunks stored.
    """
    from desync_core.ops import chunkfile
    from desync_core.workers import process_pool

    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    progress = progress or Progress()
    skip = frozenset(ignore) if ignore else None
    threads = 1 if store_is_local else max(1, workers)
    procs = min(workers, os.cpu_count() or 1)
    kwargs: dict[str, Any] = {"expected": index.ids, "skip": skip,
                              "on_done": lambda n, _b: progress.update(n)}
    if procs <= 1 or index.length < 32 * 1024 * 1024:
        chunkfile.init_worker(store, index.digest.name, threads)
        results = chunkfile.run_tasks(path, index.starts(), index.ends, executor=None, **kwargs)
    else:
        with process_pool(procs, chunkfile.init_worker,
                          (store, index.digest.name, max(1, threads // procs))) as pool:
            results = chunkfile.run_tasks(path, index.starts(), index.ends, executor=pool,
                                          **kwargs)
    return sum(r.stored for r in results)


def cache_chunks(ids: Iterable[bytes], source: Any, target: Any, *, workers: int = 10,
                 progress: Progress | None = None) -> int:
    """Copy the chunks the target store lacks from ``source``; returns how many."""
    progress = progress or Progress()
    todo = list(dict.fromkeys(ids))
    progress.set_total(len(todo))

    def one(chunk_id: bytes) -> int:
        try:
            if target.has_chunk(chunk_id):
                return 0
            target.store_chunk(source.get_chunk(chunk_id))
            return 1
        finally:
            progress.update(1)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return sum(pool.map(one, todo))


def verify_store(store: PrunableChunkStore, digest: Digest, *, workers: int = 10,
                 repair: bool = False, err: TextIO | None = None) -> int:
    """Verify every chunk of a local store; report invalid ones on ``err``.

    With ``repair`` invalid chunks are deleted. Returns how many invalid chunks are
    still in the store (reported but not removed).
    """
    err = err or sys.stderr

    def check(chunk_id: bytes) -> tuple[str, bool] | None:
        try:
            chunk = store.get_chunk(chunk_id)
            chunk.verify(digest)
        except ChunkMissingError:
            return None  # deleted meanwhile
        except ChunkInvalidError as exc:
            msg = str(exc)
            if repair:
                try:
                    store.remove_chunk(chunk_id)
                    return msg + ": removed", True
                except Exception as rm_exc:  # report and go on, like desync
                    msg += f":{rm_exc}"
            return msg, False
        except Exception as exc:  # an unreadable file: report it, keep walking
            return f"chunk {chunk_id.hex()}: {exc}", False
        return None

    remaining = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for result in pool.map(check, store.iter_chunk_ids()):
            if result:
                msg, removed = result
                remaining += not removed
                err.write(msg + "\n")
    for msg, removed in _not_chunk_files(store, repair):
        remaining += not removed
        err.write(msg + "\n")
    return remaining


def _not_chunk_files(store: Any, repair: bool) -> Iterable[tuple[str, bool]]:
    """Entries of a local store named like chunks that are not regular files.

    The store's listing skips them, so the chunk walk never sees them; yet a reader
    asking for that chunk finds a directory, or follows a symlink out of the store.
    Each is reported; with ``repair`` a symlink, FIFO or socket is removed (unlinking
    never touches what a link points to), a directory never is.
    """
    base = getattr(store, "base", None)
    codec = getattr(store, "codec", None)
    if not isinstance(base, str) or codec is None:
        return
    from desync_core.stores.base import parse_chunk_key

    try:
        prefixes = [e for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return  # the chunk walk has reported an unreadable store already
    for prefix in sorted(prefixes, key=lambda e: e.name):
        try:
            entries = sorted(os.scandir(prefix.path), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            chunk_id = parse_chunk_key(f"{prefix.name}/{entry.name}", codec.extension)
            if chunk_id is None or entry.is_file(follow_symlinks=False):
                continue
            kind = ("a directory" if entry.is_dir(follow_symlinks=False)
                    else "a symbolic link" if entry.is_symlink() else "not a regular file")
            msg = f"chunk {chunk_id.hex()}: {entry.path} is {kind}, not a chunk file"
            if repair and kind != "a directory":
                try:
                    os.unlink(entry.path)
                except OSError as exc:
                    yield f"{msg}: {exc.strerror}", False
                    continue
                yield msg + ": removed", True
                continue
            yield msg, False


def prune_candidates(store: PrunableChunkStore, keep: set[bytes]) -> list[bytes]:
    """The chunks ``store.prune(keep)`` would delete, sorted by id (``prune --dry-run``)."""
    return sorted(cid for cid in store.iter_chunk_ids() if cid not in keep)


def confirm_prune(count: int, store: str, stdin: TextIO, stdout: TextIO) -> bool:
    """desync's prune prompt; True to go ahead."""
    stdout.write(
        f"Warning: The provided index files reference {count} unique chunks. Are you sure\n"
        f"you want to delete all other chunks from '{store}'?\n"
    )
    while True:
        stdout.write("[y/N]: ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return False
        word = line.strip()
        if word in ("y", "Y"):
            return True
        if word in ("", "n", "N"):
            return False


__all__ = ["cache_chunks", "chop", "confirm_prune", "prune_candidates", "read_chunk_list",
           "verify_store"]
