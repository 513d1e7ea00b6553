"""``desync manpage``: write man pages for desync and every subcommand.

The pages are generated from the same argparse definitions the CLI parses with, so they
list exactly the flags that exist, including those of installed plugins.
"""

from __future__ import annotations

import argparse
import datetime
import os
from typing import TYPE_CHECKING

from desync_core.registry import Command

if TYPE_CHECKING:
    from desync_core.context import Context


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``manpage``."""
    p.add_argument("--title", default="desync", help="title of the pages (default desync)")
    p.add_argument("--section", default="3", help="man section (default 3)")
    p.add_argument("--source", default="", help="source shown in the page footer")
    p.add_argument("--manual", default="", help="manual name shown in the page header")
    p.add_argument("directory", help="output directory (created if missing)")


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and leading dots/quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line.startswith((".", "'")) else line
             for line in text.splitlines()]
    return "\n".join(lines)


def _page(prog: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
          commands: list[str] | None = None) -> str:
    date = datetime.date.today().strftime("%b %Y")
    out = [f'.TH "{_roff(args.title.upper())}" "{args.section}" "{date}" '
           f'"{_roff(args.source)}" "{_roff(args.manual)}"',
           ".SH NAME", f"{_roff(prog)} \\- {_roff(parser.description or '')}",
           ".SH SYNOPSIS", _roff(parser.format_usage().partition("usage: ")[2].strip())]
    if commands:
        out += [".SH COMMANDS"]
        for name in commands:
            out += [".TP", f"\\fB{_roff(name)}\\fP"]
    out.append(".SH OPTIONS")
    for action in parser._actions:  # argparse has no public iterator over actions
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        flags = ", ".join(action.option_strings)
        metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
        out += [".TP", f"\\fB{_roff(flags)}\\fP{_roff(metavar)}", _roff(action.help or "")]
    positionals = [a for a in parser._actions if not a.option_strings and a.help]
    if positionals:
        out.append(".SH ARGUMENTS")
        for action in positionals:
            out += [".TP", f"\\fI{_roff(str(action.metavar or action.dest))}\\fP",
                    _roff(action.help or "")]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Write ``desync.<section>`` and ``desync-<command>.<section>`` into the directory."""
    from desync_core.cli import build_parser
    from desync_core.errors import StoreError
    from desync_core.plugins import get_registries
    from desync_core.stores.local import atomic_write

    parser = build_parser(get_registries().commands)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    try:
        os.makedirs(args.directory, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"creating {args.directory}: {exc.strerror}") from None
    pages = {"desync": _page("desync", parser, args, sorted(sub.choices))}
    for name, subparser in sorted(sub.choices.items()):
        pages[f"desync-{name}"] = _page(f"desync {name}", subparser, args)
    for name, text in pages.items():
        try:
            atomic_write(os.path.join(args.directory, f"{name}.{args.section}"), text.encode())
        except OSError as exc:
            raise StoreError(f"writing {name}.{args.section}: {exc.strerror}") from None
    return 0


COMMAND = Command(
    name="manpage",
    help="Generate man pages",
    usage="<output-directory>",
    add_arguments=add_arguments,
    run=run,
)
