"""``desync info``: statistics about an index."""

from __future__ import annotations

import argparse
import json
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
    from desync_core.ops.read import format_info, info

    if args.format not in ("json", "plain"):
        raise UsageError(f'unsupported output format "{args.format}"')
    index = ctx.read_index(args.index)
    seed_ids: set[bytes] = set()
    for location in _seed_indexes(args):
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


def _seed_indexes(args: argparse.Namespace) -> list[str]:
    """Seed index locations of ``--seed`` values and ``--seed-dir`` directories."""
    from desync_core.seeds.file import INDEX_EXTENSION, find_dir_seeds

    locations = []
    for value in args.seed:
        # desync's info takes index locations; extract's INDEX:DATA also works here.
        whole = value.endswith(INDEX_EXTENSION) or "://" in value or ":" not in value
        locations.append(value if whole else value.split(":", 1)[0])
    exclude = args.index if args.index != "-" else None
    for directory in args.seed_dir:
        locations.extend(index for index, _data in find_dir_seeds(directory, exclude))
    return locations


COMMAND = Command(
    name="info",
    help="Show information about an index",
    usage="<index>",
    add_arguments=add_arguments,
    run=run,
)
