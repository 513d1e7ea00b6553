"""Entry point of desync-mount-fuse: the ``mount-index`` command's definition only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): the
command imports mfusepy and the mount code inside ``run`` (a test checks
``sys.modules``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.plugin_api import (
    Command,
    CommandRegistry,
    add_cache,
    add_store_flags,
    add_store_list,
    hookimpl,
)

if TYPE_CHECKING:
    from desync_core.plugin_api import Context


def mount_index_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``mount-index`` (``cli.md``)."""
    p.add_argument("index",
                   help="index file, '-' for stdin, or an index-store URL (.caibx or .caidx)")
    p.add_argument("mountpoint", help="directory to mount on")
    add_store_list(p, "source store(s), queried in order; A|B is a failover group")
    add_cache(p)
    p.add_argument("--store-file", default="", metavar="FILE",
                   help="read stores and cache from a JSON file; SIGHUP reloads it")
    p.add_argument("--cor-file", default="", metavar="FILE",
                   help="use a copy-on-read sparse file as cache")
    p.add_argument("--cor-state-save", default="", metavar="FILE",
                   help="file to store the copy-on-read state in on exit or SIGHUP")
    p.add_argument("--cor-state-init", default="", metavar="FILE",
                   help="state file to initialize the copy-on-read cache from")
    p.add_argument("--cor-init-n", type=int, default=10, metavar="N",
                   help="number of workers for initialization (with --cor-state-init) "
                        "(default 10)")
    add_store_flags(p)


def run_mount_index(args: argparse.Namespace, ctx: Context) -> int:
    """Mount until unmounted, SIGINT or SIGTERM."""
    from desync_mount_fuse.mount import main

    return main(args, ctx)


MOUNT_INDEX = Command(
    name="mount-index",
    help="FUSE mount an index file",
    add_arguments=mount_index_arguments,
    run=run_mount_index,
    usage="<index> <mountpoint>",
    description=(
        "FUSE mount of the blob in the index file: a read-only directory with one file "
        "named after the index without its extension. Reads fetch only the chunks they "
        "touch (verified, in parallel, cached in memory, with readahead). A .caidx "
        "archive index mounts as the archive's directory tree, like 'casync mount'. "
        "With --cor-file the chunks read are also written to a sparse copy-on-read "
        "file. --store-file defines the stores in a JSON file that SIGHUP reloads. "
        "SIGINT, SIGTERM or 'fusermount3 -u MOUNTPOINT' unmount. Use '-' to read the "
        "index from stdin."
    ),
)


@hookimpl
def desync_add_commands(commands: CommandRegistry) -> None:
    """``mount-index``."""
    commands.add(MOUNT_INDEX)
