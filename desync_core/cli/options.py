"""Shared command-line flags, with desync's (cobra/pflag) conventions.

* boolean flags accept ``--flag``, ``--flag=false`` and the other ``strconv.ParseBool``
  spellings;
* repeatable list flags (``-s``, ``--seed``…) also split their value at commas;
* durations use Go syntax (``500ms``, ``1s``, ``1m30s``).

Plugins use :func:`add_store_flags` and :func:`add_server_flags` so their commands take
the same flags as the core's.
"""

from __future__ import annotations

import argparse
from typing import Any

from desync_core.durations import format_duration, parse_duration
from desync_core.errors import UsageError

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")

class ListAction(argparse.Action):
    """Append values, splitting each at commas (pflag StringSlice)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.extend(v for v in str(values).split(",") if v != "")
        setattr(namespace, self.dest, items)


class ArrayAction(argparse.Action):
    """Append values without splitting (pflag StringArray)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)


def add_bool(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str,
             default: bool | None = False,
             help: str = "", dest: str | None = None) -> None:
    """A boolean flag that also takes ``--name=false`` (and the other ParseBool forms)."""
    longs = [n for n in names if n.startswith("--")]
    kwargs: dict[str, Any] = {"dest": dest} if dest else {}
    action = parser.add_argument(*names, action="store_const", const=True, default=default,
                                 help=help, **kwargs)
    for long in longs:
        parser.add_argument(*(f"{long}={v}" for v in _TRUE), action="store_const", const=True,
                            dest=action.dest, help=argparse.SUPPRESS)
        parser.add_argument(*(f"{long}={v}" for v in _FALSE), action="store_const",
                            const=False, dest=action.dest, help=argparse.SUPPRESS)


def int_arg(text: str) -> int:
    """An integer argument (decimal)."""
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid integer "{text}"') from None


def uint_arg(text: str) -> int:
    """A non-negative integer argument."""
    value = int_arg(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'invalid value "{text}": must not be negative')
    return value


def duration_arg(text: str) -> float:
    """A Go duration argument, in seconds."""
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_store_list(parser: argparse.ArgumentParser, help: str = "source store(s)") -> None:
    """``-s/--store``, repeatable (and comma-separated)."""
    parser.add_argument("-s", "--store", action=ListAction, default=[], metavar="LOCATION",
                        help=help)


def add_store_single(parser: argparse.ArgumentParser, help: str = "target store") -> None:
    """``-s/--store`` taking one location."""
    parser.add_argument("-s", "--store", default="", metavar="LOCATION", help=help)


def add_cache(parser: argparse.ArgumentParser, help: str = "store to be used as cache") -> None:
    """``-c/--cache``."""
    parser.add_argument("-c", "--cache", default="", metavar="LOCATION", help=help)


def add_store_flags(parser: argparse.ArgumentParser, *, concurrency: int = 10) -> None:
    """The store option flags every store-using command takes (``cli.md`` "S")."""
    g = parser.add_argument_group("store options")
    g.add_argument("-n", "--concurrency", type=int_arg, default=concurrency,
                   help=f"number of concurrent goroutines/workers (default {concurrency})")
    g.add_argument("--client-cert", default=None, metavar="PATH",
                   help="path to client certificate for TLS authentication")
    g.add_argument("--client-key", default=None, metavar="PATH",
                   help="path to client key for TLS authentication")
    g.add_argument("--ca-cert", default=None, metavar="PATH",
                   help="trust authorities in this file, instead of OS trust store")
    add_bool(g, "-t", "--trust-insecure", default=None,
             help="trust invalid certificates")
    add_bool(g, "-r", "--cache-repair", default=True,
             help="replace invalid chunks in the cache from source (default true)")
    g.add_argument("-e", "--error-retry", type=int_arg, default=None, metavar="N",
                   help="number of times to retry in case of network error (default 3)")
    g.add_argument("-b", "--error-retry-base-interval", type=duration_arg, default=None,
                   metavar="DURATION",
                   help="initial retry delay, increases linearly with each retry (default 500ms)")


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The HTTP(S) server flags of ``chunk-server`` and ``index-server`` (``cli.md`` "V")."""
    g = parser.add_argument_group("server options")
    g.add_argument("--cert", default="", metavar="PATH",
                   help="cert file in PEM format, requires --key")
    g.add_argument("--key", default="", metavar="PATH",
                   help="key file in PEM format, requires --cert")
    add_bool(g, "--mutual-tls", help="require valid client certificates")
    g.add_argument("--client-ca", default="", metavar="PATH",
                   help="acceptable client certificate or CA")
    g.add_argument("--authorization", default=None, metavar="VALUE",
                   help="expected value of the authorization header in requests "
                        "(default $DESYNC_HTTP_AUTH)")


def validate_server_flags(args: argparse.Namespace) -> None:
    """desync's TLS flag rules for servers."""
    if bool(args.cert) != bool(args.key):
        raise UsageError("--key and --cert options need to be provided together")
    tls = bool(args.cert)
    if args.mutual_tls and not tls:
        raise UsageError("--mutual-tls requires --cert and --key (TLS must be enabled)")
    if args.client_ca and not tls:
        raise UsageError("--client-ca requires --cert and --key (TLS must be enabled)")
    if args.mutual_tls and not args.client_ca:
        raise UsageError("--mutual-tls requires --client-ca (a CA to verify clients against)")
    if args.client_ca and not args.mutual_tls:
        raise UsageError("--client-ca requires --mutual-tls")


def store_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Store options given explicitly on the command line (they beat the config file)."""
    out: dict[str, Any] = {}
    cert, key = getattr(args, "client_cert", None), getattr(args, "client_key", None)
    if cert is not None or key is not None:
        if not (args.client_cert and args.client_key):
            raise UsageError("--client-key and --client-cert options need to be provided together")
        out["client_cert"] = args.client_cert
        out["client_key"] = args.client_key
    if getattr(args, "ca_cert", None) is not None:
        out["ca_cert"] = args.ca_cert
    if getattr(args, "trust_insecure", None) is not None:
        out["trust_insecure"] = bool(args.trust_insecure)
    if getattr(args, "error_retry", None) is not None:
        out["error_retry"] = args.error_retry
    if getattr(args, "error_retry_base_interval", None) is not None:
        out["error_retry_base_interval"] = args.error_retry_base_interval
    return out


__all__ = [
    "ArrayAction",
    "ListAction",
    "add_bool",
    "add_cache",
    "add_server_flags",
    "add_store_flags",
    "add_store_list",
    "add_store_single",
    "duration_arg",
    "format_duration",
    "int_arg",
    "parse_duration",
    "store_overrides",
    "uint_arg",
    "validate_server_flags",
]
