"""Entry point of desync-store-ssh: registrations and the ``pull`` command definition.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
store is registered as a ``"module:Class"`` string and ``pull`` imports its server
inside ``run``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.plugin_api import Command, CommandRegistry, Registry, hookimpl

if TYPE_CHECKING:
    from desync_core.plugin_api import Context

#: desync's message for index locations over ssh (``remote.md`` §9).
INDEX_REFUSAL = "Index storage is not supported by ssh remote stores"


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``ssh://[user@]host[:port]/path``: read-only, casync protocol (``remote.md`` §4)."""
    registry.add("ssh", "desync_store_ssh.client:SSHChunkStore",
                 "casync protocol over ssh (read-only)")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """The casync protocol carries no indexes for desync: refused with desync's words."""
    registry.refuse("ssh", INDEX_REFUSAL)


def pull_arguments(p: argparse.ArgumentParser) -> None:
    """``pull - - - <store>``: exactly four operands, no flags."""
    p.add_argument("base", metavar="-", help="ignored (casync passes '-')")
    p.add_argument("archive", metavar="-", help="ignored (casync passes '-')")
    p.add_argument("index", metavar="-", help="ignored (casync passes '-')")
    p.add_argument("store", help="the chunk store to serve (any store location)")


def run_pull(args: argparse.Namespace, ctx: Context) -> int:
    """Serve the store on stdin/stdout until the client says GOODBYE."""
    from desync_store_ssh.server import main

    return main(args, ctx)


PULL = Command(
    name="pull",
    help="Serve chunks via casync protocol over SSH",
    usage="- - - <store>",
    add_arguments=pull_arguments,
    run=run_pull,
    description=(
        "Serves chunks (read-only) from a store using the casync protocol on stdin and "
        "stdout. Functions as a drop-in replacement for casync on remote stores accessed "
        "with ssh: set CASYNC_REMOTE_PATH=desync on the client (desync or casync). Every "
        "chunk id of a request is answered, in order; chunks are sent compressed and not "
        "verified here (the client verifies them)."
    ),
)


@hookimpl
def desync_add_commands(commands: CommandRegistry) -> None:
    """``pull``."""
    commands.add(PULL)
