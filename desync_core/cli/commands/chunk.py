"""``desync chunk``: print the chunk boundaries of a file."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from desync_core.cli.options import uint_arg
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``chunk``."""
    p.add_argument("-S", "--start", type=uint_arg, default=0,
                   help="starting position (chunking starts here as at a stream start)")
    p.add_argument("-m", "--chunk-size", default="16:64:256", metavar="MIN:AVG:MAX",
                   help="min:avg:max chunk size in KiB (default 16:64:256)")
    p.add_argument("file", help="file to chunk ('-' for stdin)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``chunk``: print ``<start>\\t<size>\\t<id>`` per chunk."""
    from desync_core.chunker import ChunkerParams, iter_chunks
    from desync_core.errors import UsageError

    params = ChunkerParams.from_kib(args.chunk_size)
    sha = ctx.digest.sum
    if args.file == "-":
        f = sys.stdin.buffer
        if args.start:
            remaining = args.start
            while remaining:
                got = f.read(min(remaining, 1 << 20))
                if not got:
                    break
                remaining -= len(got)
    else:
        try:
            f = open(args.file, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{args.file}: {exc.strerror}") from None
        f.seek(args.start)
    out = sys.stdout
    try:
        # (typeshed's BinaryIO, the type of stdin, omits the readinto it has)
        for offset, data in iter_chunks(f.readinto, params, offset=args.start):  # type: ignore[union-attr]
            out.write(f"{offset}\t{len(data)}\t{sha(data).hex()}\n")
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    return 0


COMMAND = Command(
    name="chunk",
    help="Chunk input file and print chunk points plus chunk ID",
    usage="<file>",
    add_arguments=add_arguments,
    run=run,
)
