"""What ``tar``, ``untar`` and ``mtree`` do with their arguments, for the CLI and the API.

The engines are in :mod:`desync_core.ops.archive` (encoding, chunking, decoding,
extracting); this module checks the argument combinations the commands accept and
builds the archive options from them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from desync_core.errors import UsageError

if TYPE_CHECKING:
    from desync_core.archive.base import NodeStream
    from desync_core.context import Context
    from desync_core.index import Index


def tar(ctx: Context, output: str, source: str, *, index: bool = False,
        store: str | None = None, chunk_size: str = "16:64:256", input_format: str = "disk",
        no_time: bool = False, tar_add_root: bool = False, one_file_system: bool = False,
        workers: int | None = None) -> Index | None:
    """``tar``: encode ``source`` into the catar ``output``, or with ``index`` chunk the
    archive into ``store`` and write the ``.caidx`` ``output``; returns that index."""
    from desync_core import flags as ff
    from desync_core.archive.base import ArchiveOptions
    from desync_core.ops.archive import archive_flags, get_format, tar_to_index
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(output, [source])
    if index and not store:
        raise UsageError("-i requires a store (-s <location>)")
    if tar_add_root and input_format != "tar":
        raise UsageError("--tar-add-root works only with --input-format tar")
    fmt = get_format(input_format, direction="input")
    flags = archive_flags(ctx.digest)
    if one_file_system and input_format == "disk":
        flags |= ff.EXCLUDE_SUBMOUNTS
    options = ArchiveOptions(feature_flags=flags, no_time=no_time,
                             one_file_system=one_file_system, tar_add_root=tar_add_root)
    nodes = fmt.read(source, options)
    if not index:
        get_format("catar", direction="output").write(nodes, output, options)
        return None

    from desync_core.chunker import ChunkerParams
    from desync_core.workers import default_workers

    params = ChunkerParams.from_kib(chunk_size)
    target = ctx.open_writable(cast(str, store))
    try:
        result = tar_to_index(
            nodes, flags, params, ctx.digest, target, workers=workers or default_workers(),
            io_threads=max(ctx.concurrency, 1),
            store_is_local=getattr(getattr(target, "inner", None), "is_local", True))
    finally:
        target.close()
    ctx.write_index(output, result)
    return result


def untar(ctx: Context, source: str, target: str, *, index: bool = False,
          stores: Sequence[str] = (), cache: str | None = None, output_format: str = "disk",
          no_same_owner: bool = False, no_same_permissions: bool = False) -> None:
    """``untar``: extract the catar (or with ``index`` the ``.caidx`` whose chunks are in
    ``stores``) ``source`` into ``target`` with ``output_format``."""
    from desync_core.archive.base import ArchiveOptions
    from desync_core.ops.archive import archive_flags, get_format
    from desync_core.ops.archive import untar as run_untar
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(target, [source])
    if index and not stores:
        raise UsageError("-i requires at least one store (-s <location>)")
    fmt = get_format(output_format, direction="output")
    options = ArchiveOptions(feature_flags=archive_flags(ctx.digest),
                             no_same_owner=no_same_owner,
                             no_same_permissions=no_same_permissions)
    run_untar(ctx, source, target, fmt, options, index=index, stores=list(stores),
              cache=cache)


@contextmanager
def tree_nodes(ctx: Context, source: str, *, index: bool = False, stores: Sequence[str] = (),
               cache: str | None = None) -> Iterator[NodeStream]:
    """``mtree``'s input as a node stream: a local directory, a catar, or (``index``) a
    ``.caidx`` whose chunks are in ``stores``; closed when the block exits."""
    from desync_core.archive.base import ArchiveOptions
    from desync_core.archive.disk import DiskReader
    from desync_core.ops.archive import archive_flags, open_archive

    if index and not stores:
        raise UsageError("-i requires at least one store (-s <location>)")
    if os.path.isdir(source):
        if index:
            raise UsageError("-i can't be used with input directory")
        options = ArchiveOptions(feature_flags=archive_flags(ctx.digest))
        yield DiskReader(source, options).nodes()
        return
    with open_archive(ctx, source, index=index, stores=list(stores), cache=cache) as nodes:
        yield cast("NodeStream", nodes)  # (no plain_files asked for)


__all__ = ["tar", "tree_nodes", "untar"]
