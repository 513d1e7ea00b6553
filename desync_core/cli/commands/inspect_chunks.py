"""``desync inspect-chunks``: per-chunk JSON (sizes, compressed sizes in a local store)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``inspect-chunks``."""
    add_store_single(p, "local store to take compressed chunk sizes from")
    p.add_argument("index", help="index ('-' for stdin)")
    p.add_argument("output", nargs="?", default=None, help="output file (default stdout)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``inspect-chunks``."""
    from desync_core.errors import UsageError
    from desync_core.location import parse_location
    from desync_core.ops.read import inspect_chunks
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(args.output, [args.index])
    ext = None
    if args.store:
        if not parse_location(args.store).is_local:
            raise UsageError(f"'{args.store}' is not a local store")
        opts = ctx.store_options(args.store)
        from desync_core.stores.chunk import ChunkCodec

        # Stored sizes only when they differ from the plain ones (compressed and/or
        # encrypted), read from the files of the store's own format.
        ext = ChunkCodec.for_options(opts).extension or None
    index = ctx.read_index(args.index)
    text = inspect_chunks(index, args.store or None, ext)
    if args.output and args.output != "-":
        import os

        from desync_core.errors import StoreError
        from desync_core.stores.local import atomic_write

        directory = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(directory):
            raise UsageError(f"output directory {directory} does not exist")
        try:
            atomic_write(args.output, text.encode())
        except OSError as exc:
            raise StoreError(f"writing {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return 0


COMMAND = Command(
    name="inspect-chunks",
    help="Show detailed information about chunks stored in an index",
    usage="<index> [<output>]",
    add_arguments=add_arguments,
    run=run,
)
