"""Store maintenance: ``verify``, ``prune``, ``cache`` and ``chop``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from desync_core.api._base import context
from desync_core.api.results import CacheResult, ChopResult, PruneResult, VerifyResult
from desync_core.context import Context
from desync_core.errors import UsageError
from desync_core.index import Index


def _ignored(ctx: Context, indexes: Sequence[str], chunk_lists: Sequence[str],
             ids: Iterable[bytes]) -> set[bytes]:
    from desync_core.ops.storeops import collect_ids

    return collect_ids(ctx, indexes, chunk_lists) | set(ids)


def verify(store: str, *, repair: bool = False, workers: int = 10,
           ctx: Context | None = None) -> VerifyResult:
    """Check every chunk of a store that can be listed (``desync verify``).

    Invalid chunks are reported in the result, not raised: the result's ``ok`` is
    False where ``desync verify`` would exit 5.

    Args:
        store: a local store directory (or a plugin's listable bucket store).
        repair: delete invalid chunks (``-r``).
        workers: chunks checked at once (``-n``).
        ctx: settings; default :func:`~desync_core.api.context`.

    Raises:
        UsageError: the store cannot be listed (HTTP, ssh).
    """
    from desync_core.ops.storeops import check_store, open_listable

    ctx = ctx or context()
    opened = open_listable(ctx, store)
    try:
        found = check_store(opened, ctx.digest, workers=workers, repair=repair)
    finally:
        opened.close()
    return VerifyResult(
        checked=found.checked,
        invalid=tuple(p.chunk_id for p in found.problems),
        removed=tuple(p.chunk_id for p in found.problems if p.removed),
        messages=tuple(p.message for p in found.problems),
    )


def prune(store: str, indexes: Sequence[str] = (), *, keep_lists: Sequence[str] = (),
          keep: Iterable[bytes] = (), dry_run: bool = False,
          ctx: Context | None = None) -> PruneResult:
    """Delete every chunk of ``store`` that no index (or keep list) references.

    This is ``desync prune -y``: nothing asks for confirmation. With ``dry_run``
    nothing is deleted and the result lists the ids that would be.

    Args:
        store: a store that can delete chunks (local directory, bucket stores).
        indexes: index locations whose chunks are kept.
        keep_lists: text files of chunk ids to keep, one per line
            (``--ignore-chunks``).
        keep: more chunk ids to keep.
        dry_run: only list what would be deleted (``--dry-run``).
        ctx: settings; default :func:`~desync_core.api.context`.

    Raises:
        UsageError: nothing to keep was given (that would delete every chunk).
        StoreError: the store cannot prune, or does not exist.
    """
    from desync_core.ops.storeops import open_prune_target, prune_candidates

    keep = list(keep)
    if not indexes and not keep_lists and not keep:
        raise UsageError("prune needs indexes, keep lists or ids of chunks to keep")
    ctx = ctx or context()
    wanted = _ignored(ctx, indexes, keep_lists, keep)
    target = open_prune_target(ctx, store)
    try:
        if dry_run:
            return PruneResult(deleted=0, kept=len(wanted), dry_run=True,
                               candidates=tuple(prune_candidates(target, wanted)))
        deleted = target.prune(wanted)
    finally:
        target.close()
    return PruneResult(deleted=deleted, kept=len(wanted), dry_run=False)


def cache(indexes: str | Sequence[str], *, stores: Sequence[str], cache: str,
          ignore: Sequence[str] = (), ignore_lists: Sequence[str] = (),
          ctx: Context | None = None) -> CacheResult:
    """Copy the chunks of ``indexes`` that ``cache`` lacks from ``stores`` into it.

    Args:
        indexes: one or more index locations.
        stores: source store locations (``-s``).
        cache: the target store (``-c``).
        ignore: index locations whose chunks are skipped (``--ignore``).
        ignore_lists: chunk-id text files to skip (``--ignore-chunks``).
        ctx: settings; default :func:`~desync_core.api.context`.
    """
    from desync_core.ops.storeops import cache_indexes

    ctx = ctx or context()
    locations = [indexes] if isinstance(indexes, str) else list(indexes)
    wanted, copied = cache_indexes(ctx, locations, list(stores), cache,
                                   skip=_ignored(ctx, ignore, ignore_lists, ()))
    return CacheResult(wanted=wanted, copied=copied)


def chop(index: str | Index, file: str, *, store: str, ignore: Sequence[str] = (),
         ignore_lists: Sequence[str] = (), ctx: Context | None = None) -> ChopResult:
    """Store the chunks of ``file``, cut where ``index`` says (``desync chop``).

    Every chunk is hashed and must match the index.

    Args:
        index: index location or Index describing ``file``.
        file: the file (or block device).
        store: writable target store.
        ignore: index locations whose chunks are not stored (``--ignore``).
        ignore_lists: chunk-id text files not to store (``--ignore-chunks``).
        ctx: settings; default :func:`~desync_core.api.context`.

    Raises:
        ChunkInvalidError: the file does not match the index.
    """
    from desync_core.ops.storeops import chop_index

    ctx = ctx or context()
    idx, stored = chop_index(ctx, index, file, store,
                             ignore=_ignored(ctx, ignore, ignore_lists, ()))
    return ChopResult(chunks=len(idx), stored=stored)


__all__ = ["cache", "chop", "prune", "verify"]
