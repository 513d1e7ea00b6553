"""``desync verify``: check every chunk of a local store."""

from __future__ import annotations

import argparse

from desync_core.cli.options import add_bool, add_store_single, int_arg
from desync_core.registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``verify``."""
    add_store_single(p, "local store to verify")
    p.add_argument("-n", "--concurrency", type=int_arg, default=10,
                   help="number of concurrent workers (default 10)")
    add_bool(p, "-r", "--repair", help="remove invalid chunks from the store")


def run(args: argparse.Namespace, ctx) -> int:  # type: ignore[no-untyped-def]
    """Run ``verify``: invalid chunks are reported on stderr (and removed with -r).

    Unlike desync, which always exits 0, invalid chunks left in the store end the run
    with a one-line summary and the integrity exit status, so scripts notice.
    """
    from desync_core.errors import IntegrityError, UsageError
    from desync_core.ops.storeops import verify_store
    from desync_core.stores.local import LocalChunkStore

    if not args.store:
        raise UsageError("no store provided")
    store = ctx.open_chunk_store(args.store)
    if not isinstance(store, LocalChunkStore):
        raise UsageError(f"'{args.store}' is not a local store; verify needs a local store")
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
