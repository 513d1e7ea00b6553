"""``desync mtree``: list a catar, caidx or directory in mtree format."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool, add_cache, add_store_flags, add_store_list
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``mtree`` (``cli.md``)."""
    add_store_list(p, "source store(s), used with -i")
    add_cache(p)
    add_bool(p, "-i", "--index", help="read index file (caidx), not catar")
    p.add_argument("input", metavar="catar|index|dir",
                   help="archive (.catar), index (.caidx, with -i) or local directory")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``mtree``."""
    import sys

    from desync_core.ops.archive import mtree
    from desync_core.ops.tree import tree_nodes

    with tree_nodes(ctx, args.input, index=args.index, stores=args.store,
                    cache=args.cache) as nodes:
        mtree(nodes, ctx.digest, sys.stdout)
    return 0


COMMAND = Command(
    name="mtree",
    help="Print the content of a catar, caidx or local directory in mtree format",
    usage="<catar|index|dir>",
    description="Reads an archive (catar), index (caidx, with -i and -s) or local "
    "directory and prints its content in mtree format.",
    add_arguments=add_arguments,
    run=run,
)
