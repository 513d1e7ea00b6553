"""``desync extract``: assemble a blob from an index, reusing seeds."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import TYPE_CHECKING

from desync_core.cli import exit_fast
from desync_core.cli.options import (
    ListAction,
    add_bool,
    add_cache,
    add_store_flags,
    add_store_list,
)
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``extract``."""
    add_store_list(p, "source store(s), queried in order")
    add_cache(p)
    p.add_argument("--seed", action=ListAction, default=[], metavar="INDEX[:DATA]",
                   help="seed index (its blob sits next to it without .caibx), or "
                        "INDEX:DATA (repeatable)")
    p.add_argument("--seed-dir", action=ListAction, default=[], metavar="DIR",
                   help="use every *.caibx below DIR that has its blob next to it as a seed "
                        "(repeatable)")
    add_bool(p, "--skip-invalid-seeds", help="leave out seeds whose data does not match their "
                                             "index, and continue")
    add_bool(p, "--regenerate-invalid-seeds",
             help="re-chunk seeds whose data does not match their index (in memory) and use "
                  "them")
    add_bool(p, "-k", "--in-place",
             help="write directly to the output and keep it on failure; reuse data already "
                  "correct (needed for block devices)")
    add_bool(p, "--print-stats", help="print extraction statistics (JSON) to stdout")
    p.add_argument("index", help="index (.caibx; '-' for stdin)")
    p.add_argument("output", help="output file or block device")
    add_store_flags(p)


def _warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``extract``."""
    # numpy's OpenBLAS starts a thread per CPU when numpy is imported, and they spin
    # for a while: measured ~50 ms of CPU, taken from the workers. extract does no
    # linear algebra. (Only effective if numpy is not loaded yet; the user's setting
    # wins.)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # A short run that makes little cyclic garbage: collections during the imports
    # below alone cost ~10 ms.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _run(args, ctx)
    finally:
        if collecting:
            gc.enable()
        # Everything is closed and joined: skip the interpreter's teardown (~40 ms).
        exit_fast()


def _run(args: argparse.Namespace, ctx: Context) -> int:
    from desync_core.errors import UsageError
    from desync_core.ops.extract import check_output, extract
    from desync_core.outputs import refuse_output_over_inputs
    from desync_core.progress import new_progress
    from desync_core.seeds import open_seeds

    refuse_output_over_inputs(args.output, [args.index])
    if not args.store:
        raise UsageError("no store provided")
    if args.skip_invalid_seeds and args.regenerate_invalid_seeds:
        raise UsageError(
            "--skip-invalid-seeds and --regenerate-invalid-seeds are mutually exclusive"
        )
    check_output(args.output)
    index = ctx.read_index(args.index)
    seeds = open_seeds(ctx, index, args.seed, args.seed_dir, index_location=args.index,
                       warn=_warn)
    action = "skip" if args.skip_invalid_seeds else (
        "regenerate" if args.regenerate_invalid_seeds else "fail")
    try:
        source = ctx.open_source(args.store, args.cache or None, index.digest,
                                 max_chunk_size=index.chunk_size_max)
        try:
            stats = extract(index, args.output, source, in_place=args.in_place,
                            workers=ctx.concurrency, seeds=seeds, invalid_seeds=action,
                            progress_factory=new_progress, warn=_warn)
        finally:
            source.close()
    finally:
        for seed in seeds:
            seed.close()
    if args.print_stats:
        print(json.dumps(stats.as_json(), indent=2))
    return 0


COMMAND = Command(
    name="extract",
    help="Read an index and build a blob from it, reusing seeds",
    usage="<index> <output>",
    description="Reads an index and builds a blob from it. Chunks come from seeds where "
    "possible (runs of zero chunks become holes; --seed/--seed-dir blobs are cloned or "
    "copied; repeated chunks are copied from the output) and from the stores otherwise. "
    "Without -k the blob is assembled in a temporary file and renamed onto the output when "
    "complete; with -k it is written in place (files or block devices) and a rerun reuses "
    "what is already correct.",
    add_arguments=add_arguments,
    run=run,
)
