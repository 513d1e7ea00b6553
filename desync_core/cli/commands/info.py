"""``desync info``: statistics about an index."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import ListAction, add_cache, add_store_flags, add_store_list
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``info``."""
    add_store_list(p, "count the chunks present in these stores")
    p.add_argument("--seed", action=ListAction, default=[], metavar="INDEX",
                   help="count the chunks available from these seed indexes (extract's "
                        "INDEX:DATA form is accepted; only the index is read)")
    p.add_argument("--seed-dir", action=ListAction, default=[], metavar="DIR",
                   help="also count every *.caibx below DIR that has its blob next to it, as "
                        "extract --seed-dir would use it")
    add_cache(p, "count the chunks present in this cache")
    p.add_argument("-f", "--format", default="json", help="output format: json or plain")
    p.add_argument("--chunks-info", default="", metavar="FILE",
                   help="JSON from inspect-chunks, for compressed-size estimates")
    p.add_argument("index", help="index ('-' for stdin)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``info``."""
    from desync_core.errors import UsageError
    from desync_core.ops.info import index_info
    from desync_core.ops.read import format_info

    if args.format not in ("json", "plain"):
        raise UsageError(f'unsupported output format "{args.format}"')
    result = index_info(ctx, args.index, stores=args.store, seeds=args.seed,
                        seed_dirs=args.seed_dir, cache=args.cache or None,
                        chunks_info=args.chunks_info or None)
    sys.stdout.write(format_info(result, args.format))
    return 0


COMMAND = Command(
    name="info",
    help="Show information about an index",
    usage="<index>",
    add_arguments=add_arguments,
    run=run,
)
