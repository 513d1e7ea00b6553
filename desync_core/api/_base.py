"""The first calls of the API: settings, indexes, stores, ``make``, ``extract``, ``cat``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

from desync_core.chunker import ChunkerParams
from desync_core.config import load_config
from desync_core.context import Context
from desync_core.digest import get_digest
from desync_core.index import Index
from desync_core.ops.extract import ExtractStats
from desync_core.stores.wrappers import ChunkReader


def context(*, config: str | None = None, digest: str = "sha512-256",
            concurrency: int = 10) -> Context:
    """A context reading ``config`` (default: ``~/.config/desync/config.json``)."""
    return Context(config=load_config(config), digest=get_digest(digest),
                   digest_explicit=digest != "sha512-256", concurrency=concurrency)


def read_index(location: str, *, ctx: Context | None = None) -> Index:
    """Read and validate an index (``.caibx``/``.caidx``) from any index location."""
    return (ctx or context()).read_index(location)


def write_index(location: str, index: Index, *, ctx: Context | None = None) -> None:
    """Write an index atomically to any (writable) index location."""
    (ctx or context()).write_index(location, index)


def open_store(stores: str | Sequence[str], *, cache: str | None = None,
               ctx: Context | None = None, digest: str | None = None) -> ChunkReader:
    """Open a verified store chain: one or more ``-s`` locations and an optional cache.

    The result has ``get_chunk(id) -> Chunk`` (``.data()`` gives the bytes),
    ``has_chunk(id)`` and ``close()``.
    """
    ctx = ctx or context()
    spec = [stores] if isinstance(stores, str) else list(stores)
    return ctx.open_source(spec, cache, get_digest(digest) if digest else ctx.digest)


def make(source: str, index: str | None = None, *, store: str | None = None,
         chunk_size: str | ChunkerParams = "16:64:256", workers: int | None = None,
         ctx: Context | None = None) -> Index:
    """Chunk ``source`` (file, block device or ``-``), optionally store the chunks.

    Args:
        source: what to chunk.
        index: where to write the index (None: only return it).
        store: a writable store location for the chunks.
        chunk_size: ``"MIN:AVG:MAX"`` in KiB, or ChunkerParams in bytes.
        workers: worker processes (default: number of CPUs).
        ctx: settings (config file, digest); default :func:`context`.
    """
    from desync_core.ops.make import make_index
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(index, [source])
    ctx = ctx or context()
    params = chunk_size if isinstance(chunk_size, ChunkerParams) else \
        ChunkerParams.from_kib(chunk_size)
    target = ctx.open_writable(store) if store else None
    result = make_index(source, params, ctx.digest, store=target, workers=workers,
                        store_is_local=getattr(getattr(target, "inner", None), "is_local", True))
    if index is not None:
        ctx.write_index(index, result)
    return result


def extract(index: str | Index, output: str, *, stores: Sequence[str],
            cache: str | None = None, in_place: bool = False, seeds: Sequence[str] = (),
            seed_dirs: Sequence[str] = (), invalid_seeds: str = "fail",
            ctx: Context | None = None) -> ExtractStats:
    """Assemble the blob of ``index`` into ``output`` from ``stores`` (and seeds).

    Without ``in_place`` the output is replaced only once it is complete and verified.

    Args:
        index: index location or Index.
        output: file or (with ``in_place``) block device.
        stores: source store locations, asked in order.
        cache: cache store location.
        in_place: write into ``output`` directly and keep it on failure (``-k``).
        seeds: ``--seed`` values (``X.caibx`` with its blob ``X`` beside it, or
            ``INDEX:DATA``).
        seed_dirs: ``--seed-dir`` directories.
        invalid_seeds: ``fail``, ``skip`` or ``regenerate`` a seed whose data does not
            match its index.
        ctx: settings; default :func:`context`.
    """
    from desync_core.ops.extract import extract as run_extract
    from desync_core.outputs import refuse_output_over_inputs
    from desync_core.seeds import open_seeds

    refuse_output_over_inputs(output, [index if isinstance(index, str) else None])
    ctx = ctx or context()
    idx = index if isinstance(index, Index) else ctx.read_index(index)
    opened = open_seeds(ctx, idx, seeds, seed_dirs,
                        index_location=index if isinstance(index, str) else None,
                        warn=lambda _msg: None)
    try:
        source = ctx.open_source(list(stores), cache, idx.digest,
                                 max_chunk_size=idx.chunk_size_max)
        try:
            return run_extract(idx, output, source, in_place=in_place,
                               workers=ctx.concurrency, seeds=opened,
                               invalid_seeds=invalid_seeds)
        finally:
            source.close()
    finally:
        for seed in opened:
            seed.close()


def cat(index: str | Index, out: BinaryIO, *, stores: Sequence[str], offset: int = 0,
        length: int = 0, cache: str | None = None, ctx: Context | None = None) -> int:
    """Write the blob (or a slice) to a binary file object; returns bytes written."""
    from desync_core.ops.read import cat as run_cat

    ctx = ctx or context()
    idx = index if isinstance(index, Index) else ctx.read_index(index)
    source = ctx.open_source(list(stores), cache, idx.digest, max_chunk_size=idx.chunk_size_max)
    try:
        return run_cat(idx, source, out, offset=offset, length=length)
    finally:
        source.close()


def chunk_boundaries(data: Any, chunk_size: str | ChunkerParams = "16:64:256") -> list[int]:
    """End offsets of the chunks of an in-memory buffer (casync's chunking)."""
    from desync_core.chunker import find_cuts

    params = chunk_size if isinstance(chunk_size, ChunkerParams) else \
        ChunkerParams.from_kib(chunk_size)
    return [int(x) for x in find_cuts(data, params)]


__all__ = [
    "cat",
    "chunk_boundaries",
    "context",
    "extract",
    "make",
    "open_store",
    "read_index",
    "write_index",
]
