"""``desync tar``: store a directory tree (or a tar stream) in a catar or caidx."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool, add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``tar`` (``cli.md``)."""
    add_store_single(p, "target store (used with -i)")
    p.add_argument("-m", "--chunk-size", default="16:64:256", metavar="MIN:AVG:MAX",
                   help="min:avg:max chunk size in KiB, used with -i (default 16:64:256)")
    add_bool(p, "-i", "--index", help="create index file (caidx), not catar")
    p.add_argument("--input-format", default="disk", metavar="FORMAT",
                   help="input format, 'disk' or 'tar' (default disk)")
    add_bool(p, "--no-time", help="set file timestamps to zero in the archive")
    add_bool(p, "--tar-add-root",
             help="pretend that all tar elements have a common root directory")
    add_bool(p, "-x", "--one-file-system", help="don't cross filesystem boundaries")
    p.add_argument("output", metavar="catar|index",
                   help="archive (.catar) or, with -i, index (.caidx) to write; '-' for stdout")
    p.add_argument("source", help="directory, or with --input-format=tar a tar file or '-'")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``tar``."""
    from desync_core.ops.tree import tar

    tar(ctx, args.output, args.source, index=args.index, store=args.store,
        chunk_size=args.chunk_size, input_format=args.input_format, no_time=args.no_time,
        tar_add_root=args.tar_add_root, one_file_system=args.one_file_system)
    return 0


COMMAND = Command(
    name="tar",
    help="Store a directory tree in a catar archive or index",
    usage="<catar|index> <source>",
    description="Encodes a directory tree into a catar archive or, with -i, an index file "
    "(caidx) with the archive chunked into a store. Use '-' to write the catar or index to "
    "stdout. With --input-format=tar the input is a tar file, or '-' for stdin "
    "(needs the desync-format-tar plugin).",
    add_arguments=add_arguments,
    run=run,
)
