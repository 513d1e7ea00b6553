"""``desync list-chunks``: print the chunk ids of an index."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import add_store_flags
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``list-chunks``."""
    p.add_argument("index", help="index ('-' for stdin)")
    add_store_flags(p)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Print every chunk id, in order, duplicates included."""
    index = ctx.read_index(args.index)
    ids = index.ids
    sys.stdout.write("".join(ids[i : i + 32].hex() + "\n" for i in range(0, len(ids), 32)))
    return 0


COMMAND = Command(
    name="list-chunks",
    help="List all chunk IDs contained in an index file",
    usage="<index>",
    add_arguments=add_arguments,
    run=run,
)
