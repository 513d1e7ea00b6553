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
    import os
    import sys
    from typing import cast

    from desync_core.archive.base import ArchiveOptions, NodeStream
    from desync_core.archive.disk import DiskReader
    from desync_core.errors import UsageError
    from desync_core.ops.archive import archive_flags, mtree, open_archive

    if args.index and not args.store:
        raise UsageError("-i requires at least one store (-s <location>)")
    if os.path.isdir(args.input):
        if args.index:
            raise UsageError("-i can't be used with input directory")
        options = ArchiveOptions(feature_flags=archive_flags(ctx.digest))
        mtree(DiskReader(args.input, options).nodes(), ctx.digest, sys.stdout)
        return 0
    with open_archive(ctx, args.input, index=args.index, stores=args.store,
                      cache=args.cache) as nodes:
        mtree(cast(NodeStream, nodes), ctx.digest, sys.stdout)  # (no plain_files asked for)
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
