"""Built-in plugin: the core's subcommands, one module each.

Command modules import only argparse helpers at module level; the operations they run
(numpy, numba, zstandard…) are imported inside ``run`` so ``desync --help`` stays fast.
"""

from __future__ import annotations

import importlib

from desync_core.markers import hookimpl
from desync_core.registry import CommandRegistry

#: Module names under this package; each defines ``COMMAND`` (or ``COMMANDS``).
MODULES = (
    "make",
    "extract",
    "cat",
    "chunk",
    "list_chunks",
    "info",
    "inspect_chunks",
    "verify_index",
    "verify",
    "chop",
    "cache",
    "prune",
    "tar",
    "untar",
    "mtree",
    "config",
    "plugins",
    "manpage",
    "completion",
)


@hookimpl
def desync_add_commands(commands: CommandRegistry) -> None:
    """Register every core command."""
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for command in getattr(module, "COMMANDS", None) or [module.COMMAND]:
            commands.add(command)
