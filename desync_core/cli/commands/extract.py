"""``desync extract``: assemble a blob from an index."""

from __future__ import annotations

import argparse
import json
import os

from desync_core.cli.options import (
    ArrayAction,
    add_bool,
    add_cache,
    add_store_flags,
    add_store_list,
)
from desync_core.registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``extract``."""
    add_store_list(p, "source store(s), queried in order")
    add_cache(p)
    p.add_argument("--seed", action=ArrayAction, default=[], metavar="INDEX[:DATA]",
                   help="seed index (the blob sits next to it without .caibx), or INDEX:DATA")
    p.add_argument("--seed-dir", action=ArrayAction, default=[], metavar="DIR",
                   help="use every *.caibx with its blob in this directory as a seed")
    add_bool(p, "--skip-invalid-seeds", help="drop seeds whose data does not match their index")
    add_bool(p, "--regenerate-invalid-seeds",
             help="re-chunk seeds whose data does not match their index (in memory)")
    add_bool(p, "-k", "--in-place",
             help="write directly to the output and keep it on failure; reuse valid data")
    add_bool(p, "--print-stats", help="print extraction statistics (JSON) to stdout")
    p.add_argument("index", help="index (.caibx; '-' for stdin)")
    p.add_argument("output", help="output file or block device")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx) -> int:  # type: ignore[no-untyped-def]
    """Run ``extract``."""
    from desync_core.errors import UsageError
    from desync_core.ops.extract import check_output, extract
    from desync_core.progress import new_progress

    if args.index != "-" and os.path.abspath(args.index) == os.path.abspath(args.output):
        raise UsageError("input and output filenames match")
    if not args.store:
        raise UsageError("no store provided")
    if args.skip_invalid_seeds and args.regenerate_invalid_seeds:
        raise UsageError(
            "--skip-invalid-seeds and --regenerate-invalid-seeds are mutually exclusive"
        )
    check_output(args.output)
    index = ctx.read_index(args.index)
    source = ctx.open_source(args.store, args.cache or None, index.digest)
    planner = None
    if args.seed or args.seed_dir:
        from desync_core.seeds import build_planner

        planner = build_planner(ctx, index, args)
    try:
        with new_progress("Attempt 1: Assembling ", len(index)) as bar:
            stats = extract(index, args.output, source, in_place=args.in_place,
                            workers=ctx.concurrency, progress=bar, plan=planner)
    finally:
        source.close()
    if args.print_stats:
        print(json.dumps(stats.as_json(), indent=2))
    return 0


COMMAND = Command(
    name="extract",
    help="Read an index and build a blob from it",
    usage="<index> <output>",
    description="Reads an index and builds a blob, fetching chunks from the stores. Without "
    "-k the blob is assembled in a temporary file and renamed when complete.",
    add_arguments=add_arguments,
    run=run,
)
