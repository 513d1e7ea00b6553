"""``desync prune``: delete every chunk not referenced by the given indexes."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.commands._common import add_ignore_chunks_flag, ignored_ids
from desync_core.cli.options import add_bool, add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``prune``."""
    add_store_single(p, "store to prune")
    add_bool(p, "-y", "--yes", help="do not ask for confirmation")
    add_ignore_chunks_flag(p, help="also keep the chunk ids listed in this text file, one per "
                                   "line (repeatable)")
    add_bool(p, "--dry-run", help="print the ids of the chunks that would be deleted, one per "
                                  "line, and delete nothing")
    p.add_argument("index", nargs="*", help="index file(s) whose chunks are kept")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``prune``."""
    from desync_core.errors import UsageError
    from desync_core.ops.storeops import confirm_prune, open_prune_target, prune_candidates

    if not args.index and not args.ignore_chunks:
        # desync requires an index; a keep list alone is enough here
        raise UsageError("the following arguments are required: index (or --ignore-chunks)")
    if not args.store:
        raise UsageError("no store provided")
    keep = ignored_ids(ctx, args)
    for location in args.index:
        keep.update(ctx.read_index(location).chunk_ids())
    store = open_prune_target(ctx, args.store)  # fails before asking, not after
    if args.dry_run:
        out = sys.stdout
        for chunk_id in prune_candidates(store, keep):
            out.write(chunk_id.hex() + "\n")
        return 0
    if not args.yes and not confirm_prune(len(keep), args.store, sys.stdin, sys.stdout):
        return 0
    store.prune(keep)
    return 0


COMMAND = Command(
    name="prune",
    help="Remove all chunks from a store that are not used in an index",
    usage="[<index>...]",
    add_arguments=add_arguments,
    run=run,
)
