"""``desync cache``: copy the chunks of indexes from stores into a cache store."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.commands._common import add_ignore_flags, ignored_ids
from desync_core.cli.options import add_cache, add_store_flags, add_store_list
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``cache``."""
    add_store_list(p, "source store(s)")
    add_cache(p, "target store")
    add_ignore_flags(p)
    p.add_argument("index", nargs="+", help="index file(s) ('-' for stdin)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``cache``."""
    from desync_core.ops.storeops import cache_indexes
    from desync_core.progress import new_progress

    with new_progress("", 0) as bar:
        cache_indexes(ctx, args.index, args.store, args.cache, skip=ignored_ids(ctx, args),
                      progress=bar)
    return 0


COMMAND = Command(
    name="cache",
    help="Read indexes and copy the referenced chunks into a store",
    usage="<index> [<index>...]",
    add_arguments=add_arguments,
    run=run,
)
