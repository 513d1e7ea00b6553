"""``desync chop``: store a file's chunks, cut where an existing index says."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.commands._common import add_ignore_flags, ignored_ids
from desync_core.cli.options import add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``chop``."""
    add_store_single(p, "target store")
    add_ignore_flags(p)
    p.add_argument("index", help="index of the file ('-' for stdin)")
    p.add_argument("file", help="the file the index describes")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``chop``."""
    from desync_core.errors import UsageError
    from desync_core.ops.storeops import chop_index
    from desync_core.progress import new_progress

    if not args.store:
        raise UsageError("no target store provided")
    index = ctx.read_index(args.index)
    ignore = ignored_ids(ctx, args)
    with new_progress("", len(index)) as bar:
        chop_index(ctx, index, args.file, args.store, ignore=ignore, progress=bar)
    return 0


COMMAND = Command(
    name="chop",
    help="Reads chunks from a file according to an index and stores them in a store",
    usage="<index> <file>",
    add_arguments=add_arguments,
    run=run,
)
