"""``desync info``: statistics about an index."""

from __future__ import annotations

import argparse
import json
import sys

from desync_core.cli.options import ArrayAction, add_cache, add_store_flags, add_store_list
from desync_core.registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``info``."""
    add_store_list(p, "count the chunks present in these stores")
    p.add_argument("--seed", action=ArrayAction, default=[], metavar="INDEX",
                   help="count the chunks available from these seed indexes")
    add_cache(p, "count the chunks present in this cache")
    p.add_argument("-f", "--format", default="json", help="output format: json or plain")
    p.add_argument("--chunks-info", default="", metavar="FILE",
                   help="JSON from inspect-chunks, for compressed-size estimates")
    p.add_argument("index", help="index ('-' for stdin)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx) -> int:  # type: ignore[no-untyped-def]
    """Run ``info``."""
    from desync_core.errors import UsageError
    from desync_core.ops.read import format_info, info

    if args.format not in ("json", "plain"):
        raise UsageError(f'unsupported output format "{args.format}"')
    index = ctx.read_index(args.index)
    seed_ids: set[bytes] = set()
    for location in args.seed:
        seed_ids.update(ctx.read_index(location).chunk_ids())
    chunks_info = None
    if args.chunks_info:
        try:
            with open(args.chunks_info, encoding="utf-8") as f:
                chunks_info = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"reading {args.chunks_info}: {exc}") from None
    store = ctx.open_source(args.store, None, index.digest) if args.store else None
    cache = ctx.open_reader(args.cache, index.digest) if args.cache else None
    result = info(index, store=store, seed_ids=seed_ids, cache=cache,
                  chunks_info=chunks_info, workers=ctx.concurrency)
    sys.stdout.write(format_info(result, args.format))
    return 0


COMMAND = Command(
    name="info",
    help="Show information about an index",
    usage="<index>",
    add_arguments=add_arguments,
    run=run,
)
