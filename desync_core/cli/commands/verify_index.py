"""``desync verify-index``: check that a file matches an index."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_store_flags
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``verify-index``."""
    p.add_argument("index", help="index ('-' for stdin)")
    p.add_argument("file", help="file or block device to check")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``verify-index``."""
    from desync_core.ops.read import verify_index
    from desync_core.progress import new_progress

    index = ctx.read_index(args.index)
    with new_progress("", len(index)) as bar:
        verify_index(index, args.file, workers=ctx.concurrency, progress=bar)
    return 0


COMMAND = Command(
    name="verify-index",
    help="Verify that an index file matches a given blob",
    usage="<index> <file>",
    add_arguments=add_arguments,
    run=run,
)
