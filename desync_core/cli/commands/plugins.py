"""``desync plugins``: list installed plugins, what they provide, and load errors."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``plugins``."""
    add_bool(p, "--json", help="print as JSON")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Print every plugin: name, distribution and version, registrations, errors."""
    import json
    import sys
    from dataclasses import asdict

    from desync_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.registries()
    infos = sorted(pm.infos.values(), key=lambda i: (not i.builtin, i.name))
    if args.json:
        sys.stdout.write(json.dumps([asdict(i) for i in infos], indent=2) + "\n")
        return 0
    for info in infos:
        dist = f"{info.distribution} {info.version}".strip() or "?"
        state = " (built in)" if info.builtin else ""
        if info.blocked:
            state += " (disabled)"
        print(f"{info.name}: {dist}{state}")
        for kind, names in info.provides.items():
            if names:
                shown = ", ".join(n or "(local path)" for n in names)
                print(f"    {kind}: {shown}")
        if info.error:
            print(f"    error: {info.error}")
    return 0


COMMAND = Command(
    name="plugins",
    help="List installed plugins and what they provide",
    add_arguments=add_arguments,
    run=run,
)
