"""Questions about an index: ``info``, ``inspect-chunks`` and ``verify-index``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from desync_core.api._base import context
from desync_core.api.results import ChunkInfo, InfoResult, InspectChunksResult, VerifyIndexResult
from desync_core.context import Context
from desync_core.index import Index


def info(index: str | Index, *, stores: Sequence[str] = (), seeds: Sequence[str] = (),
         seed_dirs: Sequence[str] = (), cache: str | None = None,
         chunks_info: str | InspectChunksResult | list[dict[str, Any]] | None = None,
         ctx: Context | None = None) -> InfoResult:
    """``desync info``: chunk counts and sizes, and what stores, seeds and a cache hold.

    Args:
        index: index location or Index.
        stores: count the chunks present in these stores (``-s``).
        seeds: seed index locations (``--seed``; ``INDEX:DATA`` accepted).
        seed_dirs: directories of seeds (``--seed-dir``).
        cache: count the chunks present in this cache (``-c``).
        chunks_info: stored sizes for the compressed estimate: an
            :func:`inspect_chunks` result, its JSON file, or its parsed JSON.
        ctx: settings; default :func:`~desync_core.api.context`.
    """
    from desync_core.ops.info import index_info

    table = chunks_info.as_json() if isinstance(chunks_info, InspectChunksResult) \
        else chunks_info
    result = index_info(ctx or context(), index, stores=stores, seeds=seeds,
                        seed_dirs=seed_dirs, cache=cache, chunks_info=table)
    return InfoResult.from_dict(result)


def inspect_chunks(index: str | Index, *, store: str | None = None,
                   output: str | None = None,
                   ctx: Context | None = None) -> InspectChunksResult:
    """``desync inspect-chunks``: every chunk's id and size, and its stored size in a
    local store.

    Args:
        index: index location or Index.
        store: a local store to read stored (compressed/encrypted) sizes from.
        output: also write the JSON to this file (atomically).
        ctx: settings; default :func:`~desync_core.api.context`.
    """
    import json

    from desync_core.ops.info import inspect_index, write_text_output
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(output, [index if isinstance(index, str) else None])
    text = inspect_index(ctx or context(), index, store)
    if output:
        write_text_output(output, text)
    chunks = tuple(ChunkInfo(bytes.fromhex(e["id"]), e["uncompressed_size"],
                             e.get("compressed_size")) for e in json.loads(text))
    return InspectChunksResult(chunks=chunks, text=text)


def verify_index(index: str | Index, file: str, *, workers: int | None = None,
                 ctx: Context | None = None) -> VerifyIndexResult:
    """``desync verify-index``: check that ``file`` holds exactly the blob of ``index``.

    Raises:
        SeedInvalidError: it does not (an :class:`~desync_core.errors.IntegrityError`).
        UsageError: ``file`` does not exist or is a directory.
    """
    from desync_core.ops.read import verify_index as run_verify

    ctx = ctx or context()
    idx = index if isinstance(index, Index) else ctx.read_index(index)
    run_verify(idx, file, workers=workers if workers is not None else ctx.concurrency)
    return VerifyIndexResult(chunks=len(idx), size=idx.length)


__all__ = ["info", "inspect_chunks", "verify_index"]
