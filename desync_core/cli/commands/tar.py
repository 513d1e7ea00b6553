"""``desync tar``: placeholder until the archive work lands."""

from __future__ import annotations

import argparse

from desync_core.registry import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No flags yet."""
    p.add_argument("args", nargs="*")


def run(args: argparse.Namespace, ctx) -> int:  # type: ignore[no-untyped-def]
    """Not implemented yet."""
    from desync_core.errors import UsageError

    raise UsageError("tar is not implemented yet")


COMMAND = Command(name="tar", help="(not implemented yet)", add_arguments=add_arguments, run=run)
