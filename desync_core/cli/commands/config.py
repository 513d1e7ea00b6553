"""``desync config``: show or write the effective configuration."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.cli.options import add_bool
from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``config``."""
    add_bool(p, "-w", "--write", help="write the configuration to the config file")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Print the configuration as JSON, or write it (``-w``)."""
    import os
    import sys

    from desync_core.config import default_config_path
    from desync_core.errors import ConfigError
    from desync_core.plugins import get_registries

    text = ctx.config.to_json(tuple(get_registries().config_sections.names()))
    if not args.write:
        sys.stdout.write(text)
        return 0
    path = args.config or default_config_path()
    print(f"Writing config to {path}")
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise ConfigError(f"writing {path}: {exc.strerror}") from None
    return 0


COMMAND = Command(
    name="config",
    help="Show or write current configuration",
    add_arguments=add_arguments,
    run=run,
)
