"""Entry point of desync-store-http: registrations and command definitions only.

Importing this module must stay cheap (it runs for every ``desync`` invocation): stores
are registered as ``"module:Class"`` strings and the commands import their server
module inside ``run``. Neither ``requests`` nor ``ssl`` nor the server code is imported
here (a test checks ``sys.modules``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_core.plugin_api import (
    Command,
    CommandRegistry,
    ListAction,
    Registry,
    add_bool,
    add_cache,
    add_server_flags,
    add_store_flags,
    add_store_list,
    add_store_single,
    hookimpl,
)

if TYPE_CHECKING:
    from desync_core.plugin_api import Context

SCHEMES = ("http", "https")


@hookimpl
def desync_register_chunk_stores(registry: Registry) -> None:
    """``http://host[:port]/path/`` and ``https://…`` chunk stores (``remote.md`` §1)."""
    registry.add(SCHEMES, "desync_store_http.client:HTTPChunkStore", "HTTP(S) chunk store")


@hookimpl
def desync_register_index_stores(registry: Registry) -> None:
    """``http(s)://host/dir/`` index stores (``remote.md`` §3)."""
    registry.add(SCHEMES, "desync_store_http.client:HTTPIndexStore", "HTTP(S) index store")


# -- commands -----------------------------------------------------------------------------


def _add_listen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-l", "--listen", action=ListAction, default=[], metavar="ADDRESS",
                   help="listen address, host:port, :port or host:service; repeatable "
                        "(default :http)")
    add_bool(p, "-w", "--writable", help="accept PUT requests (write to the upstream store)")
    add_bool(p, "--writeable", dest="writable", help="deprecated spelling of --writable")
    p.add_argument("--log", default="", metavar="FILE",
                   help="append one line per request to FILE ('-' for stderr)")
    p.add_argument("--workers", type=_count, default=0, metavar="N",
                   help="serve in N processes sharing the listeners (default 0: two per "
                        "CPU; 1: a single process). SIGHUP reaches every worker; a worker "
                        "that dies is replaced; concurrent GETs of one chunk share one "
                        "upstream read per worker")
    add_bool(p, "--metrics",
             help="serve Prometheus metrics at /metrics on every listener (behind "
                  "--authorization): requests by method and status, body bytes, stored "
                  "chunks/indexes, cache hits and misses, upstream latency, requests in "
                  "flight; added up over all workers")


def _count(text: str) -> int:
    """A non-negative integer flag value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: negative")
    return value


def chunk_server_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``chunk-server``."""
    add_store_list(p, "upstream source store(s), queried in order; A|B is a failover group")
    add_cache(p)
    p.add_argument("--store-file", default="", metavar="FILE",
                   help="read stores and cache from a JSON file; SIGHUP reloads it")
    _add_listen_flags(p)
    add_bool(p, "--skip-verify-read", default=True,
             help="don't verify chunks read from upstream stores (default true; clients "
                  "verify what they receive)")
    add_bool(p, "--skip-verify-write", default=True,
             help="accepted for compatibility; uploaded chunks are always verified")
    add_bool(p, "-u", "--uncompressed", help="serve and accept uncompressed chunks")
    add_bool(p, "--encryption",
             help="serve (and accept) chunks encrypted, expects the key in "
                  "$DESYNC_ENCRYPTION_KEY unless --encryption-key is given")
    p.add_argument("--encryption-key", default="", metavar="HEX",
                   help="serve chunks encrypted with this hex-encoded 256-bit key, implies "
                        "--encryption")
    p.add_argument("--encryption-algorithm", default="", metavar="ALG",
                   help="encryption algorithm, xchacha20-poly1305 (default) or aes-256-gcm, "
                        "implies --encryption")
    add_store_flags(p)
    add_server_flags(p)


def index_server_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``index-server``."""
    add_store_single(p, "upstream index store (a directory or an index-store URL)")
    _add_listen_flags(p)
    add_store_flags(p)
    add_server_flags(p)


def run_chunk_server(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``chunk-server`` until SIGINT/SIGTERM."""
    from desync_store_http.chunkserver import main

    return main(args, ctx)


def run_index_server(args: argparse.Namespace, ctx: Context) -> int:
    """Run ``index-server`` until SIGINT/SIGTERM."""
    from desync_store_http.indexserver import main

    return main(args, ctx)


CHUNK_SERVER = Command(
    name="chunk-server",
    help="Server for chunks over HTTP(S)",
    add_arguments=chunk_server_arguments,
    run=run_chunk_server,
    description=(
        "Serves chunks from one or more stores (local or remote, optionally behind a cache) "
        "over HTTP, or HTTPS with --cert/--key. Paths are /<4hex>/<id>.cacnk (no extension "
        "with -u). With --encryption (or --encryption-key/--encryption-algorithm) chunks are "
        "served and accepted encrypted, whatever their format upstream, at "
        "/<4hex>/<id>.cacnk.<algorithm>-<key id>; $DESYNC_ENCRYPTION_KEY alone does not "
        "enable encryption. With -w the server accepts PUT requests for a single upstream store; "
        "every uploaded chunk is checked against its id before it is stored. "
        "--store-file defines the stores in a JSON file that SIGHUP reloads (in every worker). "
        "The server runs in --workers processes (default two per CPU) sharing the listeners; "
        "chunk files of a local store are sent as they are (sendfile) when the wire format "
        "equals the stored one. --metrics adds Prometheus metrics at /metrics."
    ),
)

INDEX_SERVER = Command(
    name="index-server",
    help="Server for indexes over HTTP(S)",
    add_arguments=index_server_arguments,
    run=run_index_server,
    description=(
        "Serves the index files of an index store (a local directory or any index-store URL) "
        "over HTTP, or HTTPS with --cert/--key. GET /<name>.caibx returns the index; with -w "
        "PUT stores a new one (it must parse as an index). The server runs in --workers "
        "processes (default two per CPU); --metrics adds Prometheus metrics at /metrics."
    ),
)


@hookimpl
def desync_add_commands(commands: CommandRegistry) -> None:
    """``chunk-server`` and ``index-server``."""
    commands.add(CHUNK_SERVER)
    commands.add(INDEX_SERVER)
