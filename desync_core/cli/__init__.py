"""The ``desync`` command line: a thin layer over :mod:`desync_core.ops`.

Subcommands come from plugins (the core's own commands are a built-in plugin) through
the ``desync_add_commands`` hook. User errors print ``Error: <message>`` on stderr and
exit non-zero (see :mod:`desync_core.errors` for the codes); anything else is a bug and
prints a traceback (exit 70).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from desync_core.errors import (
    BUG_EXIT_CODE,
    DesyncError,
    OperationCancelledError,
    UnknownSchemeError,
    UsageError,
)
from desync_core.registry import KNOWN_PLUGINS, CommandRegistry, missing_plugin_message


class Parser(argparse.ArgumentParser):
    """argparse with errors raised as UsageError (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", default=default, metavar="FILE",
                        help="config file (default $HOME/.config/desync/config.json)")
    parser.add_argument("--digest", default=default if suppress else "sha512-256",
                        help="digest algorithm, sha512-256 or sha256 (default sha512-256)")
    parser.add_argument("--verbose", action="store_const", const=True,
                        default=default if suppress else False, help="verbose mode")


def version_text() -> str:
    """``desync --version``: the core's version, then each installed plugin
    distribution's (``<distribution> <version>``), one per line."""
    import desync_core
    from desync_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.registries()
    lines = [f"desync {desync_core.__version__}"]
    seen = {"desync-core"}
    for info in sorted(pm.infos.values(), key=lambda i: i.distribution or i.name):
        dist = info.distribution or info.name
        if info.builtin or dist in seen:
            continue
        seen.add(dist)
        lines.append(f"{dist} {info.version or '?'}")
    return "\n".join(lines) + "\n"


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit 0 (computed only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        sys.stdout.write(version_text())
        sys.stdout.flush()
        parser.exit(0)


def build_parser(commands: CommandRegistry, only: str | None = None) -> Parser:
    """The argument parser: global flags and every registered subcommand.

    With ``only`` (the command about to run), the other subcommands are listed without
    their flags: argparse parses just the chosen one, and setting up all of them costs
    more start-up time (~10 ms) than some commands' own work.
    """
    parser = Parser(
        prog="desync",
        description="Content-defined chunking and delta distribution, compatible with "
                    "casync and desync.",
        allow_abbrev=False,
    )
    _global_flags(parser, suppress=False)
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version of desync and its plugins, and exit")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    for name in sorted(commands.commands):
        cmd = commands.commands[name]
        p = sub.add_parser(
            name, help=cmd.help, description=cmd.description or cmd.help, allow_abbrev=False,
            usage=f"desync {name} [flags] {cmd.usage}".rstrip(),
        )
        if only is None or name == only:
            _global_flags(p, suppress=True)
            cmd.add_arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def make_context(args: argparse.Namespace) -> Any:
    """Build the run context from the global and store flags."""
    from desync_core.cli.options import store_overrides
    from desync_core.config import load_config
    from desync_core.context import Context
    from desync_core.digest import get_digest

    return Context(
        config=load_config(args.config),
        digest=get_digest(args.digest or "sha512-256"),
        digest_explicit=args.digest not in (None, "sha512-256"),
        verbose=bool(args.verbose),
        overrides=store_overrides(args),
        concurrency=getattr(args, "concurrency", None) or 10,
        cache_repair=getattr(args, "cache_repair", True),
    )


def _first_command(argv: Sequence[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--config", "--digest"):
            skip = True
            continue
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _on_sigterm(signum: int, frame: object) -> None:
    raise OperationCancelledError()


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv``; returns the exit status (exceptions are printed)."""
    import desync_core
    from desync_core.plugins import get_plugin_manager

    desync_core.running_cli = True
    argv = list(sys.argv[1:] if argv is None else argv)
    # Loading plugins and building the parser allocate many objects and no cyclic
    # garbage: the collector is paused until the command runs.
    collecting = gc.isenabled()
    gc.disable()
    try:
        registries = get_plugin_manager().registries()
        command = _first_command(argv)
        if command and command not in registries.commands.commands:
            dist = KNOWN_PLUGINS["command"].get(command)
            if dist:
                raise UnknownSchemeError(missing_plugin_message(
                    f"the {command} command", dist, registries.chunk_stores.load_errors))
        parser = build_parser(registries.commands, only=command)
        args = parser.parse_args(argv)
        cmd = getattr(args, "_command", None)
        if cmd is None:
            parser.print_help()
            return 0
        ctx = make_context(args)
        if collecting:
            gc.enable()
            collecting = False
        rc = cmd.run(args, ctx)
        return int(rc or 0)
    except DesyncError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return OperationCancelledError.exit_code
    except BrokenPipeError:
        return 1
    except Exception:  # a bug: show everything
        traceback.print_exc()
        return BUG_EXIT_CODE
    finally:
        if collecting:
            gc.enable()


def _print_error(message: str) -> None:
    first, _, rest = message.partition("\n")
    sys.stderr.write(f"Error: {first}\n" + (rest + "\n" if rest else ""))
    sys.stderr.flush()


#: Set by :func:`exit_fast`.
_exit_fast = False


def exit_fast() -> None:
    """Let :func:`main` end the process without the interpreter's teardown once the
    command returns (after flushing stdout and stderr).

    Tearing down the modules and objects of a run with numpy loaded takes ~40 ms
    (measured after ``extract``), more than some commands' own work. Only for commands
    that close their files and join their threads before returning; it has no effect
    when :func:`run` is called directly (tests, library use).
    """
    global _exit_fast
    _exit_fast = True


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    code = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 1
    if _exit_fast:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)
    sys.exit(code)


__all__ = ["Parser", "build_parser", "exit_fast", "main", "make_context", "run", "version_text"]
