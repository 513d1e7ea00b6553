"""``desync make``: chunk a blob into a store and write its index."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool, add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``make``."""
    add_store_single(p, "target store (optional; without it only the index is written)")
    p.add_argument("-m", "--chunk-size", default="16:64:256", metavar="MIN:AVG:MAX",
                   help="min:avg:max chunk size in KiB (default 16:64:256)")
    add_bool(p, "--print-stats", help="print chunking statistics (JSON) to stderr")
    p.add_argument("index", help="index to write (.caibx; '-' for stdout)")
    p.add_argument("file", help="blob to chunk (file, block device or '-' for stdin)")
    add_store_flags(p, concurrency=0)
    for action in p._actions:  # say what -n means for make (shared flag, own meaning)
        if action.dest == "concurrency":
            action.help = ("threads chunking, hashing and compressing in parallel "
                           "(default 0: one per CPU)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``make``."""
    from desync_core.chunker import ChunkerParams
    from desync_core.errors import UsageError
    from desync_core.ops.make import MakeStats, make_index
    from desync_core.outputs import refuse_output_over_inputs
    from desync_core.progress import new_progress
    from desync_core.workers import default_workers

    refuse_output_over_inputs(args.index, [args.file])
    params = ChunkerParams.from_kib(args.chunk_size)
    store = ctx.open_writable(args.store) if args.store else None
    workers = args.concurrency or default_workers()
    if workers < 0:
        raise UsageError("-n must be at least 1 (or 0 for one per CPU)")
    stats = MakeStats()
    total = _input_size(args.file)
    with new_progress("Chunking ", total) as bar:
        index = make_index(
            args.file, params, ctx.digest, store=store,
            store_is_local=getattr(getattr(store, "inner", None), "is_local", True),
            workers=workers, io_threads=max(ctx.concurrency, 10),
            progress=bar, stats=stats,
        )
    ctx.write_index(args.index, index)
    if args.print_stats:
        sys.stderr.write(json.dumps(stats.as_json(), indent=2) + "\n")
    return 0


def _input_size(path: str) -> int:
    """Bytes the progress bar expects: a regular file's or block device's size, else 0.

    Never opens anything but a block device: opening a FIFO here (to seek it) paired
    with the writer, and closing it again left that writer without a reader, so its
    next write failed with EPIPE and make's own open then waited forever for a writer
    that had gone (#19.8; about 1 run in 40 under load).
    """
    import os
    import stat

    if path == "-":
        return 0
    try:
        st = os.stat(path)
    except OSError:
        return 0
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISBLK(st.st_mode):
        return 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return 0
    finally:
        os.close(fd)


COMMAND = Command(
    name="make",
    help="Chunk input file and create index",
    usage="<index> <file>",
    description="Creates chunks from the input file or block device and builds an index. "
    "With -s the chunks are stored in that store; '-' as index writes it to stdout.",
    add_arguments=add_arguments,
    run=run,
)
