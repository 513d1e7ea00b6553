"""Store-side operations: ``chop``, ``cache``, ``verify`` and ``prune``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from desync_core.digest import Digest, parse_chunk_id
from desync_core.engine.threads import Threads
from desync_core.errors import ChunkInvalidError, ChunkMissingError, StoreError, UsageError
from desync_core.index import Index
from desync_core.progress import Progress
from desync_core.stores.base import PrunableChunkStore

if TYPE_CHECKING:
    from desync_core.context import Context


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
    from desync_core.engine.forkpool import ForkExecutor
    from desync_core.ops import chunkfile
    from desync_core.workers import default_workers

    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    progress = progress or Progress()
    skip = frozenset(ignore) if ignore else None
    threads = 1 if store_is_local else max(1, workers)
    procs = min(workers, default_workers())
    kwargs: dict[str, Any] = {"expected": index.ids, "skip": skip,
                              "on_done": lambda n, _b: progress.update(n)}
    if procs <= 1 or index.length < 32 * 1024 * 1024:
        chunkfile.init_worker(store, index.digest.name, threads, len(index))
        results = chunkfile.run_tasks(path, index.starts(), index.ends, executor=None, **kwargs)
    else:
        def init() -> None:  # in each worker process
            chunkfile.init_worker(store, index.digest.name, max(1, threads // procs),
                                  len(index) // procs + 1)

        with ForkExecutor(procs, init) as pool:
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

    with Threads(workers) as pool:
        return sum(pool.map(one, todo))


@dataclass(frozen=True)
class StoreProblem:
    """One bad entry ``verify`` found in a store.

    Attributes:
        chunk_id: the id the entry is stored under.
        message: the line ``verify`` prints for it.
        removed: it was deleted (``repair``).
    """

    chunk_id: bytes
    message: str
    removed: bool


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` did: chunks read, and every problem found."""

    checked: int
    problems: tuple[StoreProblem, ...]


def check_store(store: PrunableChunkStore, digest: Digest, *, workers: int = 10,
                repair: bool = False,
                on_problem: Callable[[StoreProblem], object] | None = None,
                collect: bool = True) -> StoreCheck:
    """Verify every chunk of a listable store; with ``repair`` delete invalid ones.

    ``on_problem`` is called for each problem as it is found (the CLI prints it then,
    not at the end of a long walk); with ``collect`` false the result's ``problems``
    stay empty, so memory does not grow with the number of bad chunks.
    """

    def check(chunk_id: bytes) -> StoreProblem | None:
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
                    return StoreProblem(chunk_id, msg + ": removed", True)
                except Exception as rm_exc:  # report and go on, like desync
                    msg += f":{rm_exc}"
            return StoreProblem(chunk_id, msg, False)
        except Exception as exc:  # an unreadable file: report it, keep walking
            return StoreProblem(chunk_id, f"chunk {chunk_id.hex()}: {exc}", False)
        return None

    checked = 0
    problems: list[StoreProblem] = []

    def found(problem: StoreProblem) -> None:
        if collect:
            problems.append(problem)
        if on_problem is not None:
            on_problem(problem)

    with Threads(workers) as pool:
        for result in pool.map(check, store.iter_chunk_ids()):
            checked += 1
            if result:
                found(result)
    for problem in _not_chunk_files(store, repair):
        found(problem)
    return StoreCheck(checked, tuple(problems))


def verify_store(store: PrunableChunkStore, digest: Digest, *, workers: int = 10,
                 repair: bool = False, err: TextIO | None = None) -> int:
    """Verify every chunk of a local store; report invalid ones on ``err``.

    With ``repair`` invalid chunks are deleted. Returns how many invalid chunks are
    still in the store (reported but not removed).
    """
    out = err or sys.stderr
    remaining = 0

    def report(problem: StoreProblem) -> None:
        nonlocal remaining
        remaining += not problem.removed
        out.write(problem.message + "\n")

    check_store(store, digest, workers=workers, repair=repair, on_problem=report,
                collect=False)
    return remaining


def open_listable(ctx: Context, location: str) -> PrunableChunkStore:
    """The store ``verify`` walks: one that lists and deletes chunks (local, or a
    plugin's bucket store); HTTP and ssh stores cannot be walked.

    Raises:
        UsageError: no location, or a store that cannot be listed.
    """
    if not location:
        raise UsageError("no store provided")
    store = ctx.open_chunk_store(location)
    if not isinstance(store, PrunableChunkStore):
        raise UsageError(f"'{location}' is not a local store and cannot be listed; "
                         "verify needs a store it can list")
    return store


def _not_chunk_files(store: Any, repair: bool) -> Iterable[StoreProblem]:
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
                    yield StoreProblem(chunk_id, f"{msg}: {exc.strerror}", False)
                    continue
                yield StoreProblem(chunk_id, msg + ": removed", True)
                continue
            yield StoreProblem(chunk_id, msg, False)


def collect_ids(ctx: Context, indexes: Iterable[str] = (),
                chunk_lists: Iterable[str] = ()) -> set[bytes]:
    """Chunk ids of index locations and of chunk-id list files (``--ignore``,
    ``--ignore-chunks``, prune's keep set)."""
    ids: set[bytes] = set()
    for location in indexes:
        ids.update(ctx.read_index(location).chunk_ids())
    for path in chunk_lists:
        ids.update(read_chunk_list(path))
    return ids


def cache_indexes(ctx: Context, indexes: Sequence[str], stores: Sequence[str], cache: str,
                  *, skip: set[bytes] | None = None,
                  progress: Progress | None = None) -> tuple[int, int]:
    """``cache``: copy the chunks of ``indexes`` (less ``skip``) from ``stores`` into
    ``cache``; returns (distinct chunks wanted, chunks copied).

    Raises:
        UsageError: no source store or no cache.
    """
    if not stores:
        raise UsageError("no source store provided")
    if not cache:
        raise UsageError("no target cache store provided")
    if not indexes:
        raise UsageError("no index provided")
    read = [ctx.read_index(loc) for loc in indexes]
    skip = skip or set()
    ids = [cid for index in read for cid in index.chunk_ids() if cid not in skip]
    source = ctx.open_source(list(stores), None, read[0].digest,
                             max_chunk_size=max(i.chunk_size_max for i in read))
    try:
        target = ctx.open_writable(cache)
        try:
            copied = cache_chunks(ids, source, target, workers=ctx.concurrency,
                                  progress=progress)
        finally:
            target.close()
    finally:
        source.close()
    return len(set(ids)), copied


def chop_index(ctx: Context, index: str | Index, path: str, store: str, *,
               ignore: set[bytes] | None = None,
               progress: Progress | None = None) -> tuple[Index, int]:
    """``chop``: store the chunks of ``path`` cut where ``index`` says; returns the
    index and the number of chunks stored.

    Raises:
        UsageError: no store.
    """
    if not store:
        raise UsageError("no target store provided")
    idx = index if isinstance(index, Index) else ctx.read_index(index)
    target = ctx.open_writable(store)
    try:
        stored = chop(idx, path, target, workers=ctx.concurrency, ignore=ignore,
                      store_is_local=getattr(getattr(target, "inner", None), "is_local", True),
                      progress=progress)
    finally:
        target.close()
    return idx, stored


def open_prune_target(ctx: Context, location: str) -> PrunableChunkStore:
    """The store ``prune`` deletes from, checked before anything is asked or deleted.

    Raises:
        UsageError: no location.
        StoreError: the store cannot prune, or a local store is not a directory.
    """
    from desync_core.stores.local import LocalChunkStore

    if not location:
        raise UsageError("no store provided")
    store = ctx.open_prunable(location)
    if isinstance(store, LocalChunkStore) and not os.path.isdir(store.base):
        raise StoreError(f"store {store.base} does not exist or is not a directory")
    return store


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


__all__ = ["StoreCheck", "StoreProblem", "cache_chunks", "cache_indexes", "check_store", "chop",
           "chop_index", "collect_ids", "confirm_prune", "open_listable", "open_prune_target",
           "prune_candidates", "read_chunk_list", "verify_store"]
