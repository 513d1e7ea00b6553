"""Helpers shared by several command modules."""

from __future__ import annotations

import argparse

from desync_core.cli.options import ArrayAction


def add_ignore_chunks_flag(p: argparse.ArgumentParser,
                           help: str = "skip chunk ids listed in this text file (repeatable)",
                           ) -> None:
    """``--ignore-chunks FILE`` (repeatable): a text file of chunk ids, one per line."""
    p.add_argument("--ignore-chunks", action=ArrayAction, default=[], metavar="FILE", help=help)


def add_ignore_flags(p: argparse.ArgumentParser) -> None:
    """``--ignore INDEX`` and ``--ignore-chunks FILE`` (both repeatable)."""
    p.add_argument("--ignore", action=ArrayAction, default=[], metavar="INDEX",
                   help="skip chunks referenced by this index (repeatable)")
    add_ignore_chunks_flag(p)


def ignored_ids(ctx, args: argparse.Namespace) -> set[bytes]:  # type: ignore[no-untyped-def]
    """Chunk ids named by ``--ignore`` indexes and ``--ignore-chunks`` files."""
    from desync_core.ops.storeops import collect_ids

    return collect_ids(ctx, getattr(args, "ignore", []), args.ignore_chunks)
