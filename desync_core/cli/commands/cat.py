"""``desync cat``: stream a blob (or a slice of it) to stdout or a file."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import add_cache, add_store_flags, add_store_list, uint_arg
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``cat``."""
    add_store_list(p)
    add_cache(p)
    p.add_argument("-o", "--offset", type=uint_arg, default=0, help="offset in bytes to seek to")
    p.add_argument("-l", "--length", type=uint_arg, default=0,
                   help="number of bytes to copy (0: to the end)")
    p.add_argument("index", help="index (.caibx; '-' for stdin)")
    p.add_argument("output", nargs="?", default=None, help="output file (default stdout)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``cat``."""
    from desync_core.errors import UsageError
    from desync_core.ops.read import cat, cat_to_path
    from desync_core.outputs import refuse_output_over_inputs

    if not args.store:
        raise UsageError("no store provided")
    refuse_output_over_inputs(args.output, [args.index])
    index = ctx.read_index(args.index)
    source = ctx.open_source(args.store, args.cache or None, index.digest,
                             max_chunk_size=index.chunk_size_max)
    try:
        if args.output and args.output != "-":
            # Written to a temporary file and renamed: no partial output on errors.
            cat_to_path(index, source, args.output, offset=args.offset, length=args.length)
        else:
            cat(index, source, sys.stdout.buffer, offset=args.offset, length=args.length)
    finally:
        source.close()
    return 0


COMMAND = Command(
    name="cat",
    help="Stream a blob to stdout or a file",
    usage="<index> [<output>]",
    add_arguments=add_arguments,
    run=run,
)
