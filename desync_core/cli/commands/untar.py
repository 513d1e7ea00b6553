"""``desync untar``: extract a catar or caidx to a directory (or another format)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool, add_cache, add_store_flags, add_store_list
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``untar`` (``cli.md``)."""
    add_store_list(p, "source store(s), used with -i")
    add_cache(p)
    add_bool(p, "-i", "--index", help="read index file (caidx), not catar")
    add_bool(p, "--no-same-owner",
             help="extract files as the current user (don't restore owners or xattrs)")
    add_bool(p, "--no-same-permissions",
             help="don't restore permissions and ACLs; use the umask defaults")
    p.add_argument("--output-format", default="disk", metavar="FORMAT",
                   help="output format, 'disk' or 'gnu-tar' (default disk)")
    p.add_argument("input", metavar="catar|index",
                   help="archive (.catar) or, with -i, index (.caidx; '-' for stdin)")
    p.add_argument("target", help="target directory, or for gnu-tar a file or '-' (stdout)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``untar``."""
    from desync_core.ops.tree import untar

    untar(ctx, args.input, args.target, index=args.index, stores=args.store,
          cache=args.cache, output_format=args.output_format,
          no_same_owner=args.no_same_owner, no_same_permissions=args.no_same_permissions)
    return 0


COMMAND = Command(
    name="untar",
    help="Extract a directory tree from a catar file or index",
    usage="<catar|index> <target>",
    description="Extracts a directory tree from a catar file or, with -i, from an index "
    "file (caidx) whose chunks come from the given stores. With --output-format=gnu-tar "
    "the tree is written as a GNU tar file ('-' for stdout; needs the desync-format-tar "
    "plugin).",
    add_arguments=add_arguments,
    run=run,
)
