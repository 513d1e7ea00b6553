"""``desync verify``: check every chunk of a store that can be listed (local, gs://…)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool, add_store_single, int_arg
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``verify``."""
    add_store_single(p, "store to verify (a local directory or a store that can be listed)")
    p.add_argument("-n", "--concurrency", type=int_arg, default=10,
                   help="number of concurrent workers (default 10)")
    add_bool(p, "-r", "--repair", help="remove invalid chunks from the store")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``verify``: invalid chunks are reported on stderr (and removed with -r).

    Unlike desync, which always exits 0, invalid chunks left in the store end the run
    with a one-line summary and the integrity exit status, so scripts notice.
    """
    from desync_core.errors import IntegrityError
    from desync_core.ops.storeops import open_listable, verify_store

    store = open_listable(ctx, args.store)
    remaining = verify_store(store, ctx.digest, workers=args.concurrency, repair=args.repair)
    if remaining:
        noun = "chunk" if remaining == 1 else "chunks"
        raise IntegrityError(f"{remaining} invalid {noun} in store {args.store} "
                             "(use -r to remove them)")
    return 0


COMMAND = Command(
    name="verify",
    help="Read chunks in a store and verify their integrity",
    add_arguments=add_arguments,
    run=run,
)
