"""``desync inspect-chunks``: per-chunk JSON (sizes, compressed sizes in a local store)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import add_store_flags, add_store_single
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``inspect-chunks``."""
    add_store_single(p, "local store to take compressed chunk sizes from")
    p.add_argument("index", help="index ('-' for stdin)")
    p.add_argument("output", nargs="?", default=None, help="output file (default stdout)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``inspect-chunks``."""
    from desync_core.ops.info import inspect_index, write_text_output
    from desync_core.outputs import refuse_output_over_inputs

    refuse_output_over_inputs(args.output, [args.index])
    text = inspect_index(ctx, args.index, args.store or None)
    if args.output and args.output != "-":
        write_text_output(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


COMMAND = Command(
    name="inspect-chunks",
    help="Show detailed information about chunks stored in an index",
    usage="<index> [<output>]",
    add_arguments=add_arguments,
    run=run,
)
